"""Tiny runs on one device and on a 4-device CPU mesh, for tests/train/test_parallel.py.

    JAX_NUM_CPU_DEVICES=4 python tests/mesh_worker.py OUT.json WORKDIR_ROOT

Runs in its own process because the device count is fixed when JAX starts (the rest of
the suite keeps one device). Every run trains gap8k (plain lowering) on 130 synthetic
examples in batches of 32, so an epoch is 4 full batches and a last partial batch of 2,
which does not split over 4 devices and is computed whole on each. Writes, per
comparison, the largest parameter and BatchNorm-statistic difference to the reference
and the reference's largest magnitude; the test judges them.
"""

from __future__ import annotations

import json
import sys

from jaxmnist import machine

machine.tune_process()  # as the commands do, before JAX starts
import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np

from jaxmnist import data
from jaxmnist.train import loop, parallel, plan, recipes, state as state_lib, step
from jaxmnist.use import inference


def dataset() -> data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (130 + 40, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 130 + 40).astype(np.int32)
    empty = data.Split(images[:0], labels[:0])
    return data.Dataset(name="synthetic", train=data.Split(images[:130], labels[:130]), val=empty,
                        test=data.Split(images[130:], labels[130:]))


def final_variables(ds, seeds, devices, workdir, steps_per_call=1, epochs=1, on_chunk=None):
    """(variables of each model as numpy, history, log lines) of one run, read back from
    its last checkpoint (so the mesh run's checkpoint is exercised too)."""
    recipe = recipes.variant("gap8k", "tuned").replace(epochs=epochs, batch_size=32)
    config = loop.RunConfig(recipe=recipe, seeds=tuple(seeds), progress=False, plots=False,
                            lowering="plain", devices=devices, steps_per_call=steps_per_call,
                            workdir=workdir)
    lines = []
    history = loop.train_and_evaluate(config, ds, log=lines.append, on_chunk=on_chunk)
    variables = [jax.tree_util.tree_map(np.asarray, inference.load(workdir, model=m).variables)
                 for m in range(len(seeds))]
    return variables, history, lines


def scanned_calls_against_single_calls(ds, devices: int = 1) -> dict:
    """Each scanned call of 2 steps against the 2 single calls it replaces, from the same
    state, over one epoch's full batches, on `devices` devices (a data-parallel mesh when
    more than 1). Reports the largest relative difference of the steps' losses, and the
    largest weight difference after a call next to the largest weight change the call
    itself made.

    Whole runs are not compared, nor weights to rounding level: the step is discontinuous
    (max-pooling picks, ReLU boundaries), and on this synthetic data a 2e-6 change of the
    weights grows to 1e-3 in four steps (one device), whatever causes it. In a process
    with 4 CPU devices XLA rounds the scanned program differently, and a call's second
    step then lands up to 1.6e-4 away with every loss equal to 1e-7."""
    recipe = recipes.variant("gap8k", "tuned").replace(epochs=1, batch_size=32)
    n = len(ds.train.labels)
    steps_per_epoch = -(-n // recipe.batch_size)
    config = loop.RunConfig(recipe=recipe, seeds=(0,), lowering="plain")
    layout = parallel.make_layout(devices, 1, recipe.batch_size)
    state, run_keys = state_lib.init_models(config.recipe, config.seeds, steps_per_epoch, "plain")
    state = layout.put_tree(state, layout.state_sharding)
    full_idx, full_keys, _, _ = plan.epoch_plan(run_keys, 0, n, recipe.batch_size, 1)
    full_idx, full_keys = np.asarray(full_idx), np.asarray(full_keys)
    images, labels = step.on_device(ds.train, layout)
    one_step = step.make_train_fn(recipe, 1, "plain", layout=layout, steps_per_epoch=steps_per_epoch)
    scan_steps = step.make_train_fn(recipe, 1, "plain", 2, layout=layout,
                                    steps_per_epoch=steps_per_epoch)

    def one(s, images, labels, idx, keys):
        return one_step(s, images, labels, *layout.put_batch(idx, keys, scanned=False))

    def scan(s, images, labels, idx, keys):
        return scan_steps(s, images, labels, *layout.put_batch(idx, keys, scanned=True))
    copy = lambda s: jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), s)  # noqa: E731
    weights = lambda s: {"params": s.params, "batch_stats": s.batch_stats}  # noqa: E731
    report = {"loss_rel_diff": 0.0, "max_abs_diff": 0.0, "update": 0.0, "calls": 0}
    for i in range(0, full_idx.shape[0] - 1, 2):
        before = weights(copy(state))
        single, losses = copy(state), []  # the steps donate their state
        for j in (i, i + 1):
            single, (loss, _) = one(single, images, labels, full_idx[j], full_keys[j])
            losses.append(float(loss))
        state, (scan_losses, _) = scan(state, images, labels, full_idx[i:i + 2], full_keys[i:i + 2])
        rel = np.abs(np.asarray(scan_losses) - losses) / np.abs(losses)
        report["loss_rel_diff"] = max(report["loss_rel_diff"], float(rel.max()))
        report["max_abs_diff"] = max(report["max_abs_diff"],
                                     diff(weights(single), weights(state))["max_abs_diff"])
        report["update"] = max(report["update"], diff(before, weights(single))["max_abs_diff"])
        report["calls"] += 1
    return report


def first_step_against_alone(ds, seeds, devices: int) -> list[dict]:
    """One train step of the K models `seeds` on a mesh of `devices` devices against each
    model's step alone on one device, from the same initial state: per model, the
    difference of parameters and batch statistics next to the largest of them and the
    step's own update. Whole runs on a mesh whose `data` axis splits the batch are not
    compared: the all-reduced sums round differently, and the discontinuous step grows
    that to 1e-3 within an epoch on this data (seen on an AMD EPYC Zen 5 and Zen 1)."""
    recipe = recipes.variant("gap8k", "tuned").replace(epochs=1, batch_size=32)
    n, k = len(ds.train.labels), len(seeds)
    steps_per_epoch = -(-n // recipe.batch_size)
    weights = lambda s: {"params": s.params, "batch_stats": s.batch_stats}  # noqa: E731
    layout = parallel.make_layout(devices, k, recipe.batch_size)
    state, keys = state_lib.init_models(recipe, tuple(seeds), steps_per_epoch, "plain")
    before = jax.tree_util.tree_map(np.asarray, weights(state))
    idx, step_keys, _, _ = plan.epoch_plan(keys, 0, n, recipe.batch_size, k)
    idx, step_keys = np.asarray(idx)[0], np.asarray(step_keys)[0]
    fn = step.make_train_fn(recipe, k, "plain", layout=layout, steps_per_epoch=steps_per_epoch)
    images, labels = step.on_device(ds.train, layout)
    state = layout.put_tree(state, layout.state_sharding)
    state, _ = fn(state, images, labels, *layout.put_batch(idx, step_keys, scanned=False))
    on_mesh = jax.tree_util.tree_map(np.asarray, weights(state))
    alone_fn = step.make_train_fn(recipe, 1, "plain", steps_per_epoch=steps_per_epoch)
    out = []
    for m, seed in enumerate(seeds):
        one, one_keys = state_lib.init_models(recipe, (seed,), steps_per_epoch, "plain")
        plan_m = plan.epoch_plan(one_keys, 0, n, recipe.batch_size, 1)
        one, _ = alone_fn(one, jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels),
                          plan_m[0][0], plan_m[1][0])
        pick = (lambda t: jax.tree_util.tree_map(lambda x: x[m], t)) if k > 1 else (lambda t: t)
        alone = jax.tree_util.tree_map(np.asarray, weights(one))
        out.append({**diff(alone, pick(on_mesh)),
                    "update": diff(pick(before), alone)["max_abs_diff"]})
    return out


def diff(a, b) -> dict:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return {"max_abs_diff": float(max(np.max(np.abs(x - y)) for x, y in zip(la, lb))),
            "max_abs": float(max(np.max(np.abs(x)) for x in la))}


def main(out: str, root: str) -> None:
    assert jax.device_count() == 4, jax.devices()
    ds = dataset()
    alone = {s: final_variables(ds, [s], 1, f"{root}/alone{s}")[0][0] for s in range(4)}
    report = {"devices": jax.device_count()}

    _, history, lines = final_variables(ds, [0], 4, f"{root}/dp")
    report["data_parallel"] = {"first_step": first_step_against_alone(ds, [0], 4),
                               "mesh": history[-1]["mesh"],
                               "log": [ln for ln in lines if ln.startswith(("mesh", "lowering"))]}
    # scanned steps: each scanned call against the single calls it replaces, on one of the
    # four devices and on the data-parallel mesh (whole scanned runs are not compared: see
    # scanned_calls_against_single_calls)
    (_,), history, _ = final_variables(ds, [0], 4, f"{root}/dp-scan", steps_per_call=2)
    report["data_parallel_scan_mesh"] = history[-1]["mesh"]
    report["scan_on_one_of_four_devices"] = scanned_calls_against_single_calls(ds)
    report["scan_on_four_devices"] = scanned_calls_against_single_calls(ds, devices=4)
    # K=4 on 4 x 1 (models x data): no batch is split, so whole runs equal runs alone;
    # K=2 on 2 x 2: each model's batch is split, so its first step is compared
    each, history, _ = final_variables(ds, list(range(4)), 4, f"{root}/sweep4")
    report["sweep_k4"] = {"per_model": [diff(alone[m], each[m]) for m in range(4)],
                          "mesh": history[-1]["mesh"]}
    _, history, _ = final_variables(ds, [0, 1], 4, f"{root}/sweep2")
    report["sweep_k2"] = {"first_step": first_step_against_alone(ds, [0, 1], 4),
                          "mesh": history[-1]["mesh"]}

    # resume on the same topology: killed in epoch 2, rerun, ends where an uninterrupted run ends
    class Killed(Exception):
        pass

    def kill(epoch, steps):
        if epoch == 1:
            raise Killed

    (whole,), history_whole, _ = final_variables(ds, [0], 4, f"{root}/whole", epochs=2)
    try:
        final_variables(ds, [0], 4, f"{root}/killed", epochs=2, on_chunk=kill)
    except Killed:
        pass
    (resumed,), history_resumed, lines = final_variables(ds, [0], 4, f"{root}/killed", epochs=2)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in h]
    report["resume"] = {**diff(whole, resumed), "same_history": strip(history_whole) == strip(history_resumed),
                        "resumed_line": any("resumed" in ln and "epoch 1" in ln for ln in lines)}
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
