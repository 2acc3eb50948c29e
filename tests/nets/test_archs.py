"""The five networks: parameter counts, shapes, receptive fields and the summary table."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import slow
from jaxmnist import nets
from jaxmnist.nets import layers, summary

pytestmark = pytest.mark.lowering

ARCHS = list(nets.ARCHS)


@pytest.fixture(scope="module")
def variables():
    class Lazy(dict):  # each arch initialised when a test first asks for it
        def __missing__(self, arch):
            self[arch] = nets.init_variables(nets.build(arch), jax.random.PRNGKey(0))
            return self[arch]

    return Lazy()


@pytest.fixture(scope="module")
def shapes():
    """Each arch's variables as shapes only (jax.eval_shape: nothing compiled)."""
    return {a: jax.eval_shape(lambda a=a: nets.Net(nets.spec_of(a)).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))) for a in ARCHS}


@pytest.mark.parametrize("arch,expected", sorted(nets.EXPECTED_PARAMS.items()))
def test_exact_parameter_counts(arch, expected, shapes):
    assert nets.count_params(shapes[arch]["params"]) == expected


def test_expected_counts_are_the_seed_numbers():
    # Typed in from the seed documents, independently of EXPECTED_PARAMS.
    assert nets.EXPECTED_PARAMS == {
        "fc19k": 18970, "gap7k": 7416, "fc16k": 16146, "gap8k": 7776, "gap9k": 8932,
    }


def test_summary_totals_match_flax(shapes):
    for arch in ARCHS:
        rows = summary.layer_rows(arch)
        assert sum(r.params for r in rows) == nets.count_params(shapes[arch]["params"])


@pytest.mark.parametrize("arch", [a if a in ("gap8k", "fc16k") else slow(a) for a in ARCHS])
def test_modes(arch, variables):
    model = nets.build(arch)
    v = variables[arch]
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))
    # jitted, as every caller runs them (eagerly each op compiles on its own: 3x the time)
    out = jax.jit(functools.partial(model.apply, train=False))(v, x)
    assert out.shape == (4, 10)
    np.testing.assert_allclose(np.exp(np.asarray(out)).sum(-1), 1.0, rtol=1e-5)
    # eval: deterministic, batch_stats untouched
    out2, upd = jax.jit(functools.partial(model.apply, train=False, mutable=["batch_stats"]))(v, x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(out2))
    for a, b in zip(jax.tree_util.tree_leaves(upd), jax.tree_util.tree_leaves(v["batch_stats"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # train: statistics move, dropout makes outputs depend on the dropout key
    train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key},
                                                  mutable=["batch_stats"]))
    t1, upd1 = train(v, x, jax.random.PRNGKey(2))
    t2, _ = train(v, x, jax.random.PRNGKey(3))
    assert any(
        not np.allclose(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(upd1), jax.tree_util.tree_leaves(v["batch_stats"]))
    )
    assert not np.allclose(np.asarray(t1), np.asarray(t2))


def test_train_mode_without_dropout_rng_fails(variables):
    model = nets.build("gap8k")
    with pytest.raises(Exception):
        model.apply(variables["gap8k"], jnp.zeros((2, 28, 28, 1)), train=True, mutable=["batch_stats"])


def test_torch_style_init_bounds(variables):
    p = variables["fc19k"]["params"]
    # conv2: fan_in = 10 * 3 * 3 -> U(+-1/sqrt(90)); dense: fan_in 120
    for name, fan_in in (("conv2", 90), ("dense1", 120)):
        bound = 1 / np.sqrt(fan_in)
        for leaf in ("kernel", "bias"):
            w = np.asarray(p[name][leaf])
            assert np.abs(w).max() <= bound
            assert np.abs(w).max() > 0.8 * bound  # actually uses the range
    assert np.all(np.asarray(p["bn1"]["scale"]) == 1) and np.all(np.asarray(p["bn1"]["bias"]) == 0)


def test_batchnorm_matches_torch_semantics():
    bn = layers.BatchNormLayer()
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2)) * 3 + 1
    v = bn.init(jax.random.PRNGKey(1), x, train=False)
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    xn = np.asarray(x).reshape(-1, 2)
    mean, var = xn.mean(0), xn.var(0)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 2), (xn - mean) / np.sqrt(var + 1e-5), atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * xn.var(0, ddof=1), rtol=1e-5)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(nets.UnknownArch, match="gap8k"):
        nets.build("resnet50")


# Seed 002's "Layerwise Details" table: (layer, receptive field, jump in, jump out).
SEED_002_TABLE = [
    ("Conv0", 3, 1, 1), ("Conv1", 5, 1, 1), ("MaxPool1", 5, 1, 2), ("Conv2", 11, 2, 2),
    ("Conv3", 15, 2, 2), ("MaxPool2", 19, 2, 4), ("Conv4", 27, 4, 4), ("Transition", 27, 4, 4),
]


def test_fc16k_receptive_fields_against_seed_table():
    rows = [r for r in summary.layer_rows("fc16k") if r.name.startswith(("Conv2d", "MaxPool2d"))]
    assert len(rows) == len(SEED_002_TABLE)
    # Jumps agree with the seed row by row.
    assert [(r.jump_in, r.jump_out) for r in rows] == [(t[2], t[3]) for t in SEED_002_TABLE]
    # Receptive fields by the standard recurrence r += (k-1) * j_in.
    assert [r.rf for r in rows] == [3, 5, 6, 10, 14, 16, 24, 24]
    # The seed used r += (k-1) * j_out; with our layer geometry that convention reproduces
    # its column everywhere except MaxPool1, where the seed printed 5 for 7 (a typo:
    # its next row, 11 = 7 + 2*2, was computed from 7).
    rf, seed_style = 1, []
    for r in rows:
        rf += (r.kernel - 1) * r.jump_out
        seed_style.append(rf)
    seed_rf = [t[1] for t in SEED_002_TABLE]
    assert [a for i, a in enumerate(seed_style) if i != 2] == [b for i, b in enumerate(seed_rf) if i != 2]
    assert seed_style[2] == 7 and seed_rf[2] == 5


def test_summary_cli(capsys):
    summary.main(["--all"])
    out = capsys.readouterr().out
    for arch, n in nets.EXPECTED_PARAMS.items():
        assert arch in out and f"{n:,}" in out
    with pytest.raises(SystemExit) as exc:
        summary.main(["--arch", "nope"])
    assert exc.value.code == 2
    assert "fc19k" in capsys.readouterr().err
