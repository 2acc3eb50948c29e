"""Training is bitwise what jaxmnist 0.2.0 computed, and its workdirs still work.

`fixtures/three_steps.npz` holds, for the five archs and both lowerings, the parameters
and batch statistics after 3 train steps (each arch's default recipe, seed 3, synthetic
data), computed by jaxmnist 0.2.0. `fixtures/workdir-0.2.0/` is a gap8k run written by
0.2.0 (2 epochs on 512 images; its epoch-2 checkpoint removed, kept in
`fixtures/workdir-0.2.0-epoch2.npz`): it must evaluate as it did and resume to the same
epoch 2. XLA:CPU compiles for the CPU it runs on, so the comparison is bitwise on a CPU
with the fixture's signature (jax version, ISA extensions) and within float tolerance
on any other.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmnist import machine, nets
from jaxmnist.rundir import RunDir
from jaxmnist.train import loop, recipes, state as state_lib, step
from jaxmnist.train.plan import epoch_plan

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LOWERINGS = ("plain", "cpu")


def cpu_signature() -> str:
    return " ".join([jax.__version__, *machine.cpu_id().get("isa", [])])


def assert_same(got: dict, want: dict, signature: str) -> None:
    assert sorted(got) == sorted(want)
    bitwise = signature == cpu_signature()
    for key in want:
        if bitwise:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        else:  # another CPU: XLA's kernels round differently
            np.testing.assert_allclose(got[key], want[key], rtol=2e-3, atol=2e-5, err_msg=key)


def flat(tree: dict, prefix: str = "") -> dict:
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def three_steps(arch: str, lowering: str) -> dict:
    """Params and batch_stats after 3 steps of the arch's default recipe, seed 3."""
    recipe = recipes.variant(arch)
    rng = np.random.default_rng(0)
    n = 2 * recipe.batch_size
    images = jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, (n,), dtype=np.int32))
    spe = math.ceil(n / recipe.batch_size)
    state, key = state_lib.init_models(recipe, (3,), spe, lowering)
    fn = step.make_train_fn(recipe, 1, lowering, steps_per_epoch=spe)
    idx, keys, _, _ = epoch_plan(key, 0, n, recipe.batch_size, 1)
    for i in range(3):
        state, _ = fn(state, images, labels, idx[i % idx.shape[0]], keys[i % keys.shape[0]])
    return {"params": state.params, "batch_stats": state.batch_stats}


def _cases():
    for arch in nets.ARCHS:
        for lowering in LOWERINGS:
            slow = arch != "gap8k"  # one arch in the default run, all five in CI's slow pass
            yield pytest.param(arch, lowering, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("arch, lowering", list(_cases()))
def test_three_steps_equal_the_reference(arch, lowering):
    with np.load(FIXTURES / "three_steps.npz") as ref:
        prefix = f"{arch}/{lowering}"
        want = {k[len(prefix):]: ref[k] for k in ref.files if k.startswith(prefix + "[")}
        signature = str(ref["cpu_signature"])
    assert_same(flat(three_steps(arch, lowering)), want, signature)


@pytest.fixture
def old_workdir(tmp_path) -> str:
    workdir = tmp_path / "gap8k"
    shutil.copytree(FIXTURES / "workdir-0.2.0", workdir)
    return str(workdir)


def test_a_workdir_of_0_2_0_evaluates_and_resumes(old_workdir, mnist_dir):
    from jaxmnist import data
    from jaxmnist.use.evaluate import evaluate_workdir

    rd = RunDir(old_workdir)
    logged = rd.metrics()[-1]
    assert logged["epoch"] == 1 and logged["lowering"] == "cpu"  # written as "kernels"
    report, _ = evaluate_workdir(old_workdir, data_dir=mnist_dir, lowering="cpu", log=print)
    assert report["epoch"] == 1
    assert report["models"][0]["test_accuracy"] == pytest.approx(logged["test_accuracy"], abs=1e-9)

    ident = rd.identity()
    ds = data.load("mnist", mnist_dir, val_examples=ident["val_examples"])
    ds = ds.__class__(ds.name, ds.train.take(slice(0, ident["train_examples"])), ds.val, ds.test)
    config = loop.RunConfig(recipe=recipes.Recipe(**ident["recipe"]), seeds=(0,),
                            workdir=old_workdir, progress=False, plots=False, lowering="cpu")
    history = loop.train_and_evaluate(config, ds, log=lambda line: None)
    assert [r["epoch"] for r in history] == [1, 2]
    state, keys = state_lib.init_models(config.recipe, (0,), 4)
    tree, _ = rd.restore(2, state_lib.checkpoint_tree(state, keys))
    with np.load(FIXTURES / "workdir-0.2.0-epoch2.npz") as ref:
        want = {k: ref[k] for k in ref.files if k != "cpu_signature"}
        signature = str(ref["cpu_signature"])
    got = flat({"params": tree["params"], "batch_stats": tree["batch_stats"]})
    assert_same(got, want, signature)
