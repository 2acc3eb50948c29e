"""The two lowerings of each network compute the same thing.

`nets.Net` (plain) is the definition; `jaxmnist.nets.cpu.CpuNet` must agree with it for
every arch in train and eval mode (outputs, BatchNorm statistics, every gradient), for one
model and for K models in one step, and read the same checkpoints. Dropout is left out
where values are compared: the plain lowering draws its masks with jax.random, the CPU
lowering with a hash (tests/nets/test_cpu_ops.py checks the hash's statistics).
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist.rundir import RunDir


def read_metrics(workdir):
    return RunDir(workdir).metrics()

import pytest

from jaxmnist.data import augment
from jaxmnist.nets import layers
from jaxmnist.train import loop
from jaxmnist.train import state as state_lib
from jaxmnist import nets
from jaxmnist.train import recipes
from jaxmnist.train import step
from cases import slow
from jaxmnist.nets.cpu import CpuNet, ops

pytestmark = pytest.mark.xdist_group("lowerings")  # its module fixtures once, in one process

ARCHS = list(nets.ARCHS)


def without_dropout(arch):
    return tuple(l for l in nets.ARCHS[arch]() if not isinstance(l, layers.Dropout))


@pytest.fixture(scope="module")
def variables():
    """Initial parameters with randomised BatchNorm statistics and affine parameters (so
    eval mode is not the identity) and conv biases (so the deferred bias matters)."""
    def jittered(v, seed):  # numpy's generator: jax.random here compiles for ~25 s
        rng = np.random.default_rng(seed)
        return jax.tree_util.tree_map(
            lambda x: np.asarray(x) + 0.1 * rng.uniform(size=x.shape).astype(x.dtype), v)

    class Lazy(dict):  # each arch initialised when a test first asks for it
        def __missing__(self, arch):
            i = ARCHS.index(arch)
            self[arch] = jittered(nets.init_variables(nets.build(arch, lowering="plain"),
                                                      jax.random.PRNGKey(i)), 100 + i)
            return self[arch]

    return Lazy()


def _images(n=8, seed=5):
    x = jax.random.randint(jax.random.PRNGKey(seed), (n, 28, 28, 1), 0, 256).astype(jnp.uint8)
    return augment.normalize(x, 0.1307, 0.3081)


def _loss_grads(model, v, x, labels):
    def loss(params):
        lp, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                              mutable=["batch_stats"])
        return jnp.mean(step.nll(lp, labels)), (lp, upd["batch_stats"])

    (_, (out, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"])
    return out, stats, grads


def assert_trees_close(a, b, rtol, atol):
    pa, pb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in pa] == [p for p, _ in pb]
    for (path, x), (_, y) in zip(pa, pb):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("arch", [a if a == "gap8k" else slow(a) for a in ARCHS])
def test_lowerings_agree_in_train_and_eval_mode(arch, variables):
    """Outputs, updated BatchNorm statistics and every parameter's gradient (train mode,
    blocks, fused stages, deferred biases and custom VJPs all in play), and eval outputs."""
    v, spec = variables[arch], without_dropout(arch)
    x, labels = _images(), jnp.arange(8) % 10
    out_p, stats_p, grads_p = _loss_grads(nets.Net(spec), v, x, labels)
    out_c, stats_c, grads_c = _loss_grads(CpuNet(spec), v, x, labels)
    np.testing.assert_allclose(out_c, out_p, rtol=1e-4, atol=1e-4)
    assert_trees_close(stats_c, stats_p, rtol=1e-4, atol=1e-5)
    # a bias feeding a BatchNorm has an exactly-zero gradient on the CPU lowering (it is
    # deferred) and float noise on the plain one: compare against the largest gradient
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads_p))
    assert_trees_close(grads_c, grads_p, rtol=2e-3, atol=2e-5 * scale)

    eval_p = jax.jit(functools.partial(nets.Net(spec).apply, train=False))(v, x)
    eval_c = jax.jit(functools.partial(CpuNet(spec).apply, train=False))(v, x)
    # log-probabilities reach -3000 on these random images; 1e-4 relative as in train mode
    # (an AMD EPYC 7xx3 without AVX-512 measured 1.3e-5 on gap7k, its AVX-512 successor less)
    np.testing.assert_allclose(eval_c, eval_p, rtol=1e-4, atol=1e-5)


def _stacked(tree, k):
    return jax.tree_util.tree_map(lambda x: jnp.stack([x] * k), tree)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_lowerings_agree_for_three_models_in_one_step(arch):
    """K=3 seeds in one jitted step (plain: jax.vmap; CPU: the models side by side) and
    the K-model evaluation: the same parameters, statistics and predictions."""
    recipe = recipes.recipe_for(arch).replace(rotation=0.0, dropout=0.0, batch_size=16)
    states = {}
    for lowering in ("plain", "cpu"):
        config = loop.RunConfig(recipe=recipe, seeds=(0, 1, 2), lowering=lowering)
        state, keys = state_lib.init_models(config.recipe, config.seeds, 10, config.lowering)
        fn = step.make_train_fn(recipe, 3, lowering)
        rng = np.random.default_rng(0)
        images = jnp.asarray(rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8))
        labels = jnp.asarray(rng.integers(0, 10, 64).astype(np.int32))
        for i in range(2):
            idx = jnp.asarray(rng.integers(0, 64, (3, 16)).astype(np.int32))
            state, _ = fn(state, images, labels, idx, jax.vmap(jax.random.fold_in, (0, None))(keys, i))
        pred, loss = step.make_eval_fn(recipe, 3)(state, images, labels)
        states[lowering] = (state.params, state.batch_stats, loss)
        assert pred.shape == (3, 64)
    # Two SGD steps carry the lowerings' float-rounding differences into the weights, times
    # the learning rate and grown by the second step: up to 2.3e-4 on weights of ~0.1
    # (gap7k, gap8k on an AMD EPYC 7xx3 without AVX-512); a wrong lowering is off by the
    # size of an update (~1e-2).
    assert_trees_close(states["cpu"], states["plain"], rtol=2e-3, atol=1e-3)


def test_plain_lowering_is_standard_ops_only():
    """The definition holds no CPU formulation: no import of the CPU kernels and no
    backend- or shape-dependent branch."""
    from jaxmnist.nets import plain

    source = inspect.getsource(plain)
    assert "cpu" not in source.replace("CPU lowering", "").replace("nets.cpu.CpuNet", "")
    body = inspect.getsource(nets.Net)
    for word in ("ops.", "blocks", "backend", ".shape[1]", "custom_vjp", "custom_vmap"):
        assert word not in body, word
    assert nets.build("gap8k", lowering="plain").__class__ is nets.Net
    assert nets.build("gap8k", lowering="cpu").__class__ is CpuNet


def test_lowering_choice(monkeypatch):
    from jaxmnist.nets import lowering as lowering_lib

    assert lowering_lib.resolve("auto", backend="cpu") == "cpu"
    assert lowering_lib.resolve("auto", backend="gpu") == "plain"
    assert lowering_lib.resolve("auto", backend="tpu") == "plain"
    assert lowering_lib.resolve("plain", backend="cpu") == "plain"
    monkeypatch.setenv("JAXMNIST_LOWERING", "plain")
    assert lowering_lib.resolve(None, backend="cpu") == "plain"
    assert lowering_lib.resolve("cpu", backend="gpu") == "cpu"  # the flag wins over the environment
    monkeypatch.setenv("JAXMNIST_LOWERING", "fast")
    with pytest.raises(ValueError, match="JAXMNIST_LOWERING must be one of auto, plain, cpu"):
        lowering_lib.resolve(None)
    monkeypatch.delenv("JAXMNIST_LOWERING")
    monkeypatch.setenv("JAXMNIST_KERNELS", "plain")  # the deprecated spelling still works
    with pytest.warns(FutureWarning, match="JAXMNIST_KERNELS is deprecated"):
        assert lowering_lib.resolve(None, backend="cpu") == "plain"
    assert lowering_lib.default_steps_per_call("cpu") == 1
    assert lowering_lib.default_steps_per_call("gpu") > 1


ON_BLOCKS = {  # pools reached on 2x2 blocks in training: (fused BN-ReLU-pool, plain pool)
    "fc19k": ([(4, 14, 14, 80), (4, 7, 7, 40)], []),
    "gap7k": ([], [(4, 12, 12, 32)]),
    "fc16k": ([], []),
    "gap8k": ([], [(4, 12, 12, 40)]),
    "gap9k": ([], [(4, 11, 11, 32)]),
}


@pytest.mark.parametrize("arch", [a if a == "gap8k" else slow(a) for a in ARCHS])
def test_stages_on_blocks_where_they_apply(arch, variables, monkeypatch):
    """Training keeps activations on 2x2 blocks down to these pools (the step's speed
    relies on it) and computes what the all-pixels path computes: outputs and batch
    statistics (dropout left out: on blocks it draws other masks)."""
    seen = {"fused": [], "pool": []}

    def spy(kind, fn):
        def wrapped(x, *args):
            seen[kind].append(x.shape)
            return fn(x, *args)
        return wrapped

    monkeypatch.setattr(ops, "bn_relu_max_pool_on_blocks",
                        spy("fused", ops.bn_relu_max_pool_on_blocks))
    monkeypatch.setattr(ops, "max_pool_on_blocks", spy("pool", ops.max_pool_on_blocks))
    model = nets.build(arch, lowering="cpu")
    v = variables[arch]
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))
    # each call jits afresh (a new function), so it traces the module flags as they are then
    jax.jit(lambda v: model.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                                  mutable=["batch_stats"]))(v)
    assert (seen["fused"], seen["pool"]) == ON_BLOCKS[arch]

    no_dropout = CpuNet(without_dropout(arch))

    def run():
        return jax.jit(lambda v: no_dropout.apply(v, x, train=True, mutable=["batch_stats"]))(v)

    out, stats = run()
    no_dropout = CpuNet(without_dropout(arch), stages_on_blocks=False)
    plain_out, plain_stats = run()
    np.testing.assert_allclose(out, plain_out, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(plain_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", [slow("fc16k"), slow("fc19k")])
def test_fused_pixel_pool_stages_match_separate_layers(arch, variables, monkeypatch):
    """BatchNorm -> ReLU [-> dropout] -> pool on pixels as one op (fc16k's stages; fc19k's
    when its stages are not on blocks) gives the separate layers' outputs and batch
    statistics exactly, dropout included (the same masks), and their gradients."""
    seen = []
    fused_op = ops.bn_relu_dropout_max_pool

    def spy(y, *args):
        seen.append(y.shape)
        return fused_op(y, *args)

    monkeypatch.setattr(ops, "bn_relu_dropout_max_pool", spy)
    model = CpuNet(nets.spec_of(arch), stages_on_blocks=arch != "fc19k")
    v = variables[arch]
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))

    def run(params):
        out, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                               rngs={"dropout": jax.random.PRNGKey(2)}, mutable=["batch_stats"])
        return jnp.sum(out[:, 3]), (out, upd["batch_stats"])

    fused_grads, (fused_out, fused_stats) = jax.jit(jax.grad(run, has_aux=True))(v["params"])
    assert [shape[1:3] for shape in seen] == [(28, 28), (14, 14)], seen
    model = model.clone(fused_pixel_pool_stages=False)
    plain_grads, (plain_out, plain_stats) = jax.jit(jax.grad(run, has_aux=True))(v["params"])
    assert len(seen) == 2  # the plain run did not use it
    np.testing.assert_array_equal(fused_out, plain_out)
    for a, b in zip(jax.tree_util.tree_leaves(fused_stats), jax.tree_util.tree_leaves(plain_stats)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(fused_grads), jax.tree_util.tree_leaves(plain_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["fc16k", slow("fc19k")])
def test_deferred_conv_bias_matches_the_literal_bias(arch, variables):
    """A conv bias handed to the BatchNorm after it (training mode, where it cancels in
    x - mean) gives the outputs, batch statistics and weight gradients of adding it to
    every activation; its own gradient is exactly zero either way, up to float noise."""
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))
    v = variables[arch]
    spec = without_dropout(arch)

    def run(model):
        def loss(params):
            out, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                                   train=True, mutable=["batch_stats"])
            return jnp.sum(out[:, 3]), (out, upd["batch_stats"])

        return jax.jit(jax.grad(loss, has_aux=True))(v["params"])

    literal = dict(defer_conv_bias=False, stages_on_blocks=False)  # on blocks it is deferred
    grads, (out, stats) = run(CpuNet(spec, stages_on_blocks=False))
    lit_grads, (lit_out, lit_stats) = run(CpuNet(spec, **literal))
    np.testing.assert_allclose(out, lit_out, rtol=1e-5, atol=1e-5)
    assert_trees_close(stats, lit_stats, rtol=1e-5, atol=1e-6)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(lit_grads))
    assert_trees_close(grads, lit_grads, rtol=1e-3, atol=1e-5 * scale)


# --- runs: checkpoints across lowerings, several steps per call -----------------------


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    import dataclasses

    from jaxmnist import data

    ds = data.load("mnist", mnist_dir, val_examples=0)
    return dataclasses.replace(
        ds, train=data.Split(ds.train.images[:2000], ds.train.labels[:2000]),
        test=data.Split(ds.test.images[:2000], ds.test.labels[:2000]))


def _quiet(*_):
    pass


def _restore(workdir, lowering):
    """(state, config) of a workdir's latest checkpoint, restored under `lowering`."""
    rd = RunDir(workdir, read_only=True)
    config = loop.RunConfig(recipe=recipes.Recipe(**rd.identity()["recipe"]), lowering=lowering)
    state, keys = state_lib.init_models(config.recipe, config.seeds, 10, config.lowering)
    tree, _ = rd.restore(rd.epochs()[-1], state_lib.checkpoint_tree(state, keys))
    return state.replace(params=tree["params"], batch_stats=tree["batch_stats"]), config


class _Stop(Exception):
    pass


def _stop_in_second_epoch(epoch, _):
    if epoch == 1:
        raise _Stop


@pytest.mark.slow
def test_checkpoint_of_each_lowering_evaluates_under_the_other(small_mnist, tmp_path):
    """A run trained under one lowering scores the same under the other (the trees are the
    same), and a run resumed under the other lowering says so and finishes."""
    recipe = recipes.recipe_for("gap8k").replace(epochs=2, batch_size=64)
    for trained in ("plain", "cpu"):
        workdir = str(tmp_path / trained)
        with pytest.raises(_Stop):  # the epoch-1 checkpoint is written, then the run stops
            loop.train_and_evaluate(loop.RunConfig(recipe=recipe, workdir=workdir, progress=False, plots=False,
                                    lowering=trained), small_mnist, log=_quiet,
                     on_chunk=_stop_in_second_epoch)
        history = read_metrics(workdir)
        assert [r["lowering"] for r in history] == [trained]
        accuracy = {}
        for scored in ("plain", "cpu"):
            state, config = _restore(workdir, scored)
            result = step.evaluate(step.make_eval_fn(config.recipe, 1), state, small_mnist.test)
            accuracy[scored] = float(result.accuracy(small_mnist.test.labels))
        # 2,000 test images: 0.05 points is one image whose two log-probs nearly tie
        assert accuracy["plain"] == pytest.approx(accuracy["cpu"], abs=0.051)
        assert accuracy[trained] == pytest.approx(history[-1]["test_accuracy"], abs=1e-9)
        assert accuracy["plain"] > 50  # it learned (chance is 10%): not two untrained nets compared

    logs = []
    resumed = loop.train_and_evaluate(loop.RunConfig(recipe=recipe, workdir=str(tmp_path / "plain"), progress=False,
                                      plots=False, lowering="cpu"), small_mnist, log=logs.append)
    assert [r["lowering"] for r in resumed] == ["plain", "cpu"]
    assert any("lowering changed on resume" in line for line in logs), logs


@pytest.mark.slow
def test_several_steps_per_call_equal_single_calls_bitwise_on_the_cpu_lowering(small_mnist, tmp_path):
    """The trainer with lax.scan over 4 steps per call ends where 4 calls a time end,
    bitwise. 600 images in batches of 64: two scanned calls of 4, one single step, the
    partial tail batch."""
    import dataclasses

    from jaxmnist import data

    ds = dataclasses.replace(
        small_mnist, train=data.Split(small_mnist.train.images[:600], small_mnist.train.labels[:600]),
        test=data.Split(small_mnist.test.images[:200], small_mnist.test.labels[:200]))
    recipe = recipes.recipe_for("gap9k").replace(epochs=1, batch_size=64)
    out = {}
    for per_call in (1, 4):
        workdir = str(tmp_path / f"s{per_call}")
        config = loop.RunConfig(recipe=recipe, progress=False, plots=False, lowering="cpu",
                                steps_per_call=per_call, chunk_steps=3, workdir=workdir)
        seen = []
        history = loop.train_and_evaluate(config, ds, log=_quiet, on_chunk=lambda e, s: seen.append(s))
        assert seen[-1] == 10 and history[-1]["steps_per_call"] == per_call
        state, _ = _restore(workdir, "cpu")
        out[per_call] = (history[-1]["train_loss"], history[-1]["train_accuracy"],
                         jax.tree_util.tree_map(np.asarray, (state.params, state.batch_stats)))
    assert out[4][:2] == out[1][:2]
    for a, b in zip(jax.tree_util.tree_leaves(out[4][2]), jax.tree_util.tree_leaves(out[1][2])):
        np.testing.assert_array_equal(a, b)


def test_several_steps_per_call_equal_single_calls_on_the_plain_lowering():
    """The same under the plain lowering, within float tolerance: XLA:CPU may compile the
    scanned step's ops differently from the lone step's. gap8k's losses agree to 2e-7
    after 4 steps; like any rounding difference in training it grows with the steps (gap9k
    at OneCycle's peak: 1e-4 after 4), and the rotation's nearest-pixel choice and
    dropout's masks amplify it, so both are off here."""
    recipe = recipes.recipe_for("gap8k").replace(batch_size=32, dropout=0.0, rotation=0.0)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (128, 28, 28, 1), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, 128).astype(np.int32))
    idx = rng.integers(0, 128, (4, 32)).astype(np.int32)
    state, keys = state_lib.init_models(recipe, (0,), 10, "plain")
    keys = np.asarray(jax.random.split(keys, 4))
    scanned, metrics = step.make_train_fn(recipe, 1, "plain", 4)(state, images, labels, idx, keys)
    one = step.make_train_fn(recipe, 1, "plain")
    state, _ = state_lib.init_models(recipe, (0,), 10, "plain")
    losses = []
    for i in range(4):
        state, (loss, _) = one(state, images, labels, idx[i], keys[i])
        losses.append(float(loss))
    assert metrics[0].shape == (4,) and int(scanned.step) == 4
    np.testing.assert_allclose(metrics[0], losses, rtol=1e-6)
    assert_trees_close((scanned.params, scanned.batch_stats), (state.params, state.batch_stats),
                       rtol=1e-4, atol=2e-5)
