"""Orbax checkpoints of a run: one per epoch, the last few plus the best by validation.

Each checkpoint holds two items: `state` (params, batch_stats, optimiser state, step and
the per-model PRNG keys) and `meta` (arch, recipe, seeds, epoch, that epoch's metrics).
Saves are synchronous and orbax finalises a step by renaming its temporary directory,
so a run killed mid-save leaves only a temporary directory that the next start removes.
Restores name the target shapes and the *current* device explicitly, so a checkpoint
written on a GPU restores on a CPU-only machine.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

KEEP_LAST = 3


class CheckpointError(RuntimeError):
    pass


def _val_metric(metrics: dict | None):
    return None if not metrics else metrics.get("val_accuracy")


def open_manager(directory: str, read_only: bool = False) -> ocp.CheckpointManager:
    policy = policies.AnyPreservationPolicy(
        [
            policies.LatestN(n=KEEP_LAST),
            policies.BestN(
                get_metric_fn=lambda m: m["val_accuracy"],
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=not read_only,
        create=not read_only,
        read_only=read_only,
    )
    return ocp.CheckpointManager(
        os.path.abspath(directory), item_names=("state", "meta"), options=options
    )


def state_tree(state, keys) -> dict[str, Any]:
    """What gets saved: everything a TrainState carries except its static functions."""
    return {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "step": jnp.asarray(state.step),
        "rng": keys,
    }


def save(manager: ocp.CheckpointManager, epoch: int, tree: dict, meta: dict) -> None:
    val = meta.get("val_accuracy")
    metrics = None if val is None else {"val_accuracy": float(np.mean(val))}
    manager.save(
        epoch,
        args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
        metrics=metrics,
    )
    manager.wait_until_finished()


def _abstract(tree):
    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree
    )


def read_meta(manager: ocp.CheckpointManager, epoch: int) -> dict:
    restored = manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])


def restore(manager: ocp.CheckpointManager, epoch: int, template: dict) -> tuple[dict, dict]:
    restored = manager.restore(
        epoch,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(template)), meta=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], dict(restored["meta"])


def restore_latest_good(
    manager: ocp.CheckpointManager, workdir: str, template: dict, log: Callable[[str], Any] = print
):
    """Newest readable checkpoint as (epoch, tree, meta), or None if there is none.

    An unreadable checkpoint (truncated file, deleted item) is moved to
    workdir/corrupt/ rather than deleted, and the previous one is used instead.
    """
    for epoch in sorted(manager.all_steps(), reverse=True):
        try:
            tree, meta = restore(manager, epoch, template)
            return epoch, tree, meta
        except Exception as exc:  # orbax raises many types for damaged files
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            dest = os.path.join(workdir, "corrupt", f"{epoch}-{int(time.time())}")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.move(os.path.join(manager.directory, str(epoch)), dest)
            manager.reload()
            log(
                f"warning: checkpoint for epoch {epoch} is unreadable ({reason}); "
                f"moved it to {dest} and falling back to the previous one"
            )
    return None


def best_epoch(manager: ocp.CheckpointManager) -> int:
    """Epoch with the highest validation accuracy among kept checkpoints (never test)."""
    scored = []
    for epoch in manager.all_steps():
        val = read_meta(manager, epoch).get("val_accuracy")
        if val is not None:
            scored.append((float(np.mean(val)), -epoch, epoch))
    if not scored:
        raise CheckpointError(
            "this run has no validation split, so there is no best checkpoint "
            "(model selection never uses the test set); use --step N or the latest"
        )
    return max(scored)[2]
