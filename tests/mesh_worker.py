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
import numpy as np

from jaxmnist import data, inference, loop, recipes


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
    # that one against single calls (in this 4-device process; see test_parallel.py)
    (alone_scan,), _, _ = final_variables(ds, [0], 1, f"{root}/alone-scan", steps_per_call=2)
    (dp_scan,), history, _ = final_variables(ds, [0], 4, f"{root}/dp-scan", steps_per_call=2)
    report["data_parallel_scan"] = {**diff(alone_scan, dp_scan), "mesh": history[-1]["mesh"]}
    report["scan_on_one_of_four_devices"] = diff(alone[0], alone_scan)
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
