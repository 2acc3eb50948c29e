"""Tiny runs on one device and on a 4-device CPU mesh, for tests/test_parallel.py.

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

import jaxmnist  # noqa: F401  (tunes XLA before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist import data, inference, loop, recipes, step


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
                            kernels="plain", devices=devices, steps_per_call=steps_per_call,
                            workdir=workdir)
    lines = []
    history = loop.run(config, ds, log=lines.append, on_chunk=on_chunk)
    variables = [jax.tree_util.tree_map(np.asarray, inference.load(workdir, model=m).variables)
                 for m in range(len(seeds))]
    return variables, history, lines


def scanned_calls_against_single_calls(ds) -> dict:
    """Each scanned call of 2 steps against the 2 single calls it replaces, from the same
    state, over one epoch's full batches. Reports the largest relative difference of the
    steps' losses, and the largest weight difference after a call next to the largest
    weight change the call itself made.

    Whole runs are not compared, nor weights to rounding level: the step is discontinuous
    (max-pooling picks, ReLU boundaries), and on this synthetic data a 2e-6 change of the
    weights grows to 1e-3 in four steps (one device), whatever causes it. In a process
    with 4 CPU devices XLA rounds the scanned program differently, and a call's second
    step then lands up to 1.6e-4 away with every loss equal to 1e-7."""
    recipe = recipes.variant("gap8k", "tuned").replace(epochs=1, batch_size=32)
    n = len(ds.train.labels)
    steps_per_epoch = -(-n // recipe.batch_size)
    config = loop.RunConfig(recipe=recipe, seeds=(0,), kernels="plain")
    state, run_keys = loop.init_models(config, steps_per_epoch, "plain")
    full_idx, full_keys, _, _ = loop.epoch_plan(run_keys, 0, n, recipe.batch_size, 1)
    images, labels = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    one = step.make_train_fn(recipe, 1, "plain", steps_per_epoch=steps_per_epoch)
    scan = step.make_train_fn(recipe, 1, "plain", 2, steps_per_epoch=steps_per_epoch)
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


def diff(a, b) -> dict:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return {"max_abs_diff": float(max(np.max(np.abs(x - y)) for x, y in zip(la, lb))),
            "max_abs": float(max(np.max(np.abs(x)) for x in la))}


def main(out: str, root: str) -> None:
    assert jax.device_count() == 4, jax.devices()
    ds = dataset()
    alone = {s: final_variables(ds, [s], 1, f"{root}/alone{s}")[0][0] for s in range(4)}
    report = {"devices": jax.device_count()}

    (dp,), history, lines = final_variables(ds, [0], 4, f"{root}/dp")
    report["data_parallel"] = {**diff(alone[0], dp), "mesh": history[-1]["mesh"],
                               "log": [ln for ln in lines if ln.startswith(("mesh", "kernels"))]}
    # scanned steps: the mesh run against the one-device run of the same steps per call, and
    # each scanned call against the single calls it replaces (in this 4-device process)
    (alone_scan,), _, _ = final_variables(ds, [0], 1, f"{root}/alone-scan", steps_per_call=2)
    (dp_scan,), history, _ = final_variables(ds, [0], 4, f"{root}/dp-scan", steps_per_call=2)
    report["data_parallel_scan"] = {**diff(alone_scan, dp_scan), "mesh": history[-1]["mesh"]}
    report["scan_on_one_of_four_devices"] = scanned_calls_against_single_calls(ds)
    for k in (4, 2):
        each, history, _ = final_variables(ds, list(range(k)), 4, f"{root}/sweep{k}")
        report[f"sweep_k{k}"] = {"per_model": [diff(alone[m], each[m]) for m in range(k)],
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
