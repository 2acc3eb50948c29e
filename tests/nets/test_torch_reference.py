"""The PyTorch reference nets (benchmarks/torch_reference.py) against jaxmnist.

The torch nets are written from the seed documents, independently of jaxmnist's specs;
these tests check the two agree on parameter counts, eval-mode outputs, train-mode
outputs, BatchNorm running-statistic updates and gradients (dropout switched off on both
sides, since dropout masks cannot be matched across frameworks).
"""

import copy
import functools
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cases import slow
from jaxmnist.nets import layers
from jaxmnist import nets

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import torch_reference as tr  # noqa: E402

ARCHS = list(nets.ARCHS)
SEED_PARAMS = {"fc19k": 18970, "gap7k": 7416, "fc16k": 16146, "gap8k": 7776, "gap9k": 8932}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny batches: torch's intra-op threads only fight jax's for the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.lru_cache(maxsize=None)
def _shapes(arch):
    """Variable shapes without running init (jaxmnist's RNG-heavy init is slow to compile)."""
    return jax.eval_shape(
        lambda k: nets.init_variables(nets.build(arch), k), jax.random.key(0)
    )


def _randomised_variables(arch):
    """Variables of jaxmnist's layout, filled with numpy, so that a wrong layer order shows.

    Kernels are He-uniform U(+-sqrt(6/fan_in)) rather than torch's default
    U(+-1/sqrt(fan_in)): with the default, activations shrink layer by layer and the
    bias-free nets output near-uniform log-probs (~-2.30) that hide e.g. a swapped
    ReLU/BN. BN scale/bias and running statistics are non-trivial for the same reason.
    """
    rng = np.random.default_rng(1)

    def fill(path, leaf):
        name, owner, shape = path[-1].key, path[-2].key, leaf.shape
        if name == "kernel" or (name == "bias" and not owner.startswith("bn")):
            fan_in = int(np.prod(_shapes(arch)["params"][owner]["kernel"].shape[:-1]))
            bound = np.sqrt(6.0 / fan_in)
            v = rng.uniform(-bound, bound, shape)
        elif name == "scale":
            v = rng.uniform(0.5, 1.5, shape)
        elif name == "var":
            v = rng.uniform(0.5, 2.0, shape)
        elif name in ("mean", "bias"):
            v = rng.normal(0.0, 0.3, shape)
        else:  # pragma: no cover
            raise KeyError(path)
        return jnp.asarray(v, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, _shapes(arch))


def _images(n=8):
    return np.random.default_rng(0).standard_normal((n, 28, 28, 1)).astype(np.float32)


def _to_torch(x_nhwc):
    return torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))


def test_registry_matches_jaxmnist():
    assert set(tr.TORCH_ARCHS) == set(nets.ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_param_counts(arch):
    torch_count = tr.count_params(tr.TORCH_ARCHS[arch]())
    jax_count = nets.count_params(_shapes(arch)["params"])
    assert torch_count == jax_count == SEED_PARAMS[arch]
    assert nets.EXPECTED_PARAMS[arch] == SEED_PARAMS[arch]


@pytest.mark.parametrize("arch", [a if a in ("gap8k", "fc16k") else slow(a) for a in ARCHS])
def test_eval_outputs_agree(arch):
    variables = _randomised_variables(arch)
    net = tr.load_jax_variables(tr.TORCH_ARCHS[arch](), variables).eval()
    x = _images()
    apply = jax.jit(functools.partial(nets.build(arch).apply, train=False))
    want = np.asarray(apply(variables, jnp.asarray(x)))
    with torch.no_grad():
        got = net(_to_torch(x)).numpy()
    assert got.shape == (8, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def _no_dropout(arch):
    spec = nets.ARCHS[arch]()
    return nets.network_class()(  # $JAXMNIST_LOWERING's lowering (auto: cpu on a CPU)
        tuple(layers.Dropout(0.0) if isinstance(l, layers.Dropout) else l for l in spec)
    )


@pytest.mark.parametrize("arch", [a if a in ("gap8k", "fc19k") else slow(a) for a in ARCHS])
def test_train_mode_outputs_stats_and_grads_agree(arch):
    """One train-mode pass, dropout off: log-probs, updated BN stats and NLL gradients."""
    variables = _randomised_variables(arch)
    net = tr.set_dropout(tr.load_jax_variables(tr.TORCH_ARCHS[arch](), variables), 0.0)
    net.train()
    x = _images()
    y = np.arange(8) % 10
    jnet = _no_dropout(arch)

    def loss_fn(params, batch_stats, x, y):
        out, new_state = jnet.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True,
            mutable=["batch_stats"],
        )
        loss = -jnp.mean(out[jnp.arange(x.shape[0]), y])
        return loss, (out, new_state["batch_stats"])

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (jloss, (jout, jstats)), jgrads = grad_fn(
        variables["params"], variables["batch_stats"], jnp.asarray(x), jnp.asarray(y)
    )

    out = net(_to_torch(x))
    loss = torch.nn.functional.nll_loss(out, torch.from_numpy(y))
    loss.backward()

    np.testing.assert_allclose(out.detach().numpy(), np.asarray(jout), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(loss.item(), float(jloss), atol=1e-5, rtol=1e-5)

    # Running statistics: map jax's updated stats into a copy and compare buffer by buffer.
    expect = tr.load_jax_variables(
        copy.deepcopy(net), {"params": variables["params"], "batch_stats": jstats}
    )
    for (name, got), (_, want) in zip(net.named_buffers(), expect.named_buffers()):
        if name.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=1e-4,
                                       err_msg=name)

    # Gradients: load jax's gradient tree as "parameters" of a copy, compare to .grad.
    grads = tr.load_jax_variables(
        copy.deepcopy(net), {"params": jgrads, "batch_stats": jstats}
    )
    # Biases feeding a BatchNorm get float-noise gradients (~1e-8): compare against the
    # largest gradient of the whole net, not per tensor.
    pairs = [(n, p.grad.numpy(), g.detach().numpy())
             for (n, p), (_, g) in zip(net.named_parameters(), grads.named_parameters())]
    scale = max(np.abs(g).max() for _, _, g in pairs)
    for name, got, want in pairs:
        np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=1e-3, err_msg=name)


def test_load_rejects_mismatched_arch():
    variables = _randomised_variables("gap9k")
    with pytest.raises(ValueError):
        tr.load_jax_variables(tr.Gap8k(), variables)


def test_train_step_updates_and_returns_loss():
    torch.manual_seed(0)
    net = tr.Gap9k()
    opt = tr.make_optimizer(net, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert opt.defaults["nesterov"] and opt.defaults["weight_decay"] == 1e-4
    x = _to_torch(_images(16))
    y = torch.arange(16) % 10
    before = [p.detach().clone() for p in net.parameters()]
    losses = [tr.train_step(net, opt, x, y) for _ in range(3)]
    assert all(l.ndim == 0 and not l.requires_grad for l in losses)
    assert all(np.isfinite(l.item()) for l in losses)
    assert losses[-1] < losses[0]
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
