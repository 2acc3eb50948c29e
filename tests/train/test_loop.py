"""train_and_evaluate on real data: learning, resume, checkpoints, refusals, NaN."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmnist import nets
from jaxmnist.data import augment
from jaxmnist.train import loop, recipes, state as state_lib, step
from jaxmnist.rundir import RunDir
from jaxmnist.use import evaluate, inference
from runs import SMALL, params_of, read_metrics, small_recipe, subset

pytestmark = pytest.mark.lowering


@pytest.mark.slow
def test_three_epochs_on_10k_real_examples_learn(mnist, mnist_dir, tmp_path):
    # After one epoch on 10k images the test accuracy still swings 88-97% with the seed
    # (BatchNorm running statistics lag); three epochs with one lr drop land at 98.5-98.7%
    # for seeds 0-2, so 97.5% is a margin, not a tuned pass mark.
    recipe = recipes.recipe_for("gap8k").replace(epochs=3, batch_size=64, lr=0.05, step_size=2, gamma=0.1)
    history = loop.train_and_evaluate(
        loop.RunConfig(recipe=recipe, workdir=str(tmp_path / "w"), progress=False),
        subset(mnist, 10_000),
        log=lambda s: None,
    )
    assert history[-1]["test_accuracy"] > 97.5, history
    assert (tmp_path / "w" / "curves.png").stat().st_size > 0
    assert (tmp_path / "w" / "misclassified.png").stat().st_size > 0
    # every one of the 10,000 test images was scored
    report, preds = evaluate.evaluate_workdir(str(tmp_path / "w"), data_dir=mnist_dir)
    assert preds.shape == (1, 10_000)
    assert report["models"][0]["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"], abs=1e-9)
    assert sum(map(sum, report["models"][0]["confusion_matrix"])) == 10_000




@pytest.mark.slow
def test_weight_average_and_tta_are_what_every_evaluation_reads(mnist, mnist_dir, tmp_path):
    """A run with ema and tta_rotation: training's test accuracy, `evaluate` and the
    inference model (predict, export, serve) all score the average weights with the views."""
    wd = str(tmp_path / "w")
    history = loop.train_and_evaluate(loop.RunConfig(recipe=small_recipe(epochs=1, ema=0.9, tta_rotation=5.0),
                                      workdir=wd, progress=False, plots=False),
                       subset(mnist, 1000), log=lambda s: None)
    report, preds = evaluate.evaluate_workdir(wd, data_dir=mnist_dir)
    assert report["models"][0]["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"], abs=1e-9)
    tree = params_of(wd)
    average = state_lib.weights_for_eval(tree["params"], tree["opt_state"])
    assert not np.allclose(average["conv1"]["kernel"], tree["params"]["conv1"]["kernel"])
    model = inference.load(wd)
    jax.tree_util.tree_map(np.testing.assert_array_equal, model.variables["params"], average)
    agree = np.mean(model.log_probs(mnist.test.images).argmax(-1) == preds[0])
    assert agree >= 0.9995, agree


@pytest.mark.slow
def test_kill_and_resume_is_bitwise_identical(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    full = loop.train_and_evaluate(loop.RunConfig(recipe=small_recipe(), workdir=str(tmp_path / "a"), progress=False,
                                   plots=False, chunk_steps=2), ds, log=lambda s: None)

    class Killed(Exception):
        pass

    def kill(epoch, steps):
        if epoch == 1 and steps >= 4:  # mid-way through the second epoch
            raise Killed

    cfg = loop.RunConfig(recipe=small_recipe(), workdir=str(tmp_path / "b"), progress=False,
                         plots=False, chunk_steps=2)
    with pytest.raises(Killed):
        loop.train_and_evaluate(cfg, ds, log=lambda s: None, on_chunk=kill)
    assert len(read_metrics(str(tmp_path / "b"))) == 1
    messages = []
    resumed = loop.train_and_evaluate(cfg, ds, log=messages.append)
    assert any("resumed" in m and "epoch 1" in m for m in messages)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in h]
    assert strip(resumed) == strip(full)
    a, b = params_of(str(tmp_path / "a")), params_of(str(tmp_path / "b"))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # restoring a checkpoint reproduces the accuracy training reported for that epoch
    # (this run's test set is a 500-image subset, so evaluate through the loop's scorer)
    tree = params_of(str(tmp_path / "b"), 3)
    state, _ = state_lib.init_models(small_recipe(), (0,), 8)
    state = state.replace(params=tree["params"], batch_stats=tree["batch_stats"])
    ev = step.evaluate(step.make_eval_fn(small_recipe(), 1), state, ds.test)
    assert float(ev.accuracy(ds.test.labels)) == full[-1]["test_accuracy"]


@pytest.mark.slow
def test_best_checkpoint_is_chosen_by_validation(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    wd = str(tmp_path / "w")
    hist = loop.train_and_evaluate(loop.RunConfig(recipe=small_recipe(epochs=5), workdir=wd, progress=False, plots=False),
                    ds, log=lambda s: None)
    rd = RunDir(wd, read_only=True)
    best = max(hist, key=lambda r: (r["val_accuracy"], -r["epoch"]))["epoch"]
    kept = set(rd.epochs())
    assert {3, 4, 5} <= kept and best in kept and kept <= {3, 4, 5, best}
    assert rd.best_epoch() == best


@pytest.mark.slow
def test_workdir_of_another_run_is_refused(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    wd = str(tmp_path / "w")
    loop.train_and_evaluate(loop.RunConfig(recipe=small_recipe(epochs=1), workdir=wd, progress=False, plots=False),
             ds, log=lambda s: None)
    before = sorted(os.listdir(wd))
    with pytest.raises(loop.RunError, match="lr=0.07"):
        loop.train_and_evaluate(loop.RunConfig(recipe=small_recipe(epochs=1, lr=0.07), workdir=wd, progress=False),
                 ds, log=lambda s: None)
    assert sorted(os.listdir(wd)) == before
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(loop.RunError, match="no run.json"):
        loop.train_and_evaluate(loop.RunConfig(recipe=small_recipe(epochs=1), workdir=str(foreign), progress=False),
                 ds, log=lambda s: None)
    assert os.listdir(foreign) == ["notes.txt"]


@pytest.mark.slow
def test_corrupt_checkpoint_falls_back_to_previous(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    wd = str(tmp_path / "w")
    cfg = loop.RunConfig(recipe=small_recipe(epochs=2), workdir=wd, progress=False, plots=False)
    loop.train_and_evaluate(cfg, ds, log=lambda s: None)
    # damage the newest checkpoint's array data
    state_dir = os.path.join(wd, "checkpoints", "2", "state")
    for root, _, files in os.walk(state_dir):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "r+b") as fh:
                fh.truncate(max(os.path.getsize(path) // 3, 1))
    longer = dataclasses.replace(cfg, recipe=cfg.recipe)
    messages = []
    hist = loop.train_and_evaluate(longer, ds, log=messages.append)
    assert any("unreadable" in m and "epoch 2" in m for m in messages), messages
    assert any("resumed" in m and "epoch 1" in m for m in messages), messages
    assert [r["epoch"] for r in hist] == [1, 2]
    assert os.listdir(os.path.join(wd, "corrupt"))  # moved aside, not deleted


def test_nan_loss_stops_and_keeps_last_good_checkpoint(mnist, tmp_path):
    ds = subset(mnist, **SMALL)
    wd = str(tmp_path / "w")
    # epoch 1 at lr 0.05, then x1e30: the second epoch blows up
    recipe = small_recipe(epochs=3, step_size=1, gamma=1e30)
    with pytest.raises(loop.NaNLoss, match=r"step \d+ \(epoch 2\)"):
        loop.train_and_evaluate(loop.RunConfig(recipe=recipe, workdir=wd, progress=False, plots=False), ds, log=lambda s: None)
    assert RunDir(wd, read_only=True).epochs() == [1]
    assert len(read_metrics(wd)) == 1


