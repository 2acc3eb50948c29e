"""Orbax checkpoints of a run: one per epoch, the last few plus the best by validation.

Each checkpoint holds two items: `state` (params, batch_stats, optimiser state, step and
the per-model PRNG keys) and `meta` (arch, recipe, seeds, epoch, that epoch's metrics).
Saves are synchronous and orbax finalises a step by renaming its temporary directory,
so a run killed mid-save leaves only a temporary directory that the next start removes.
Restores name the target shapes and the *current* device explicitly, so a checkpoint
written on a GPU restores on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    # orbax warns that a read-only manager does not save, and that the directory is
    # read-only: both are what was asked for.
    with _Quiet() if read_only else contextlib.nullcontext():
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


def _abstract(tree, shardings: dict | None = None):
    """Restore targets: this process's first device, or per item of the state tree the
    sharding a mesh run places it with (`shardings`, e.g. {"params": NamedSharding})."""
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return {
        name: jax.tree_util.tree_map(
            lambda x, s=(shardings or {}).get(name, one): jax.ShapeDtypeStruct(
                np.shape(x), x.dtype, sharding=s), item)
        for name, item in tree.items()
    }


def read_meta(manager: ocp.CheckpointManager, epoch: int) -> dict:
    restored = manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])


def restore(manager: ocp.CheckpointManager, epoch: int, template: dict,
            shardings: dict | None = None) -> tuple[dict, dict]:
    restored = manager.restore(
        epoch,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(template, shardings)),
            meta=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], dict(restored["meta"])


class _Quiet:
    """absl/orbax logging above CRITICAL while a restore that may fail runs: the failure
    is reported once, by the caller, in one line."""

    def __enter__(self):
        import logging

        self._loggers = [logging.getLogger(name) for name in ("absl", "orbax")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.CRITICAL + 1)
        return self

    def __exit__(self, *exc):
        for lg, level in zip(self._loggers, self._levels):
            lg.setLevel(level)
        return False


_TENSORSTORE_STATUS = re.compile(
    r"\b(OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|INVALID_ARGUMENT|FAILED_PRECONDITION|UNKNOWN|INTERNAL):"
)


def unreadable_reason(exc: BaseException) -> str:
    """One short line saying why a checkpoint did not restore.

    orbax wraps tensorstore's status (e.g. `OUT_OF_RANGE: Error reading "params.x/0.0"
    ...`) in exceptions whose own message is a page of TensorStore spec; the status line,
    found along the exception's cause chain, is the informative part.
    """
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    lines = [line.strip() for e in chain for line in str(e).splitlines() if line.strip()]
    status = next((line for line in lines if _TENSORSTORE_STATUS.search(line)), None)
    if status is not None:
        line = status[_TENSORSTORE_STATUS.search(status).start():]
        line = re.sub(r' in OCDBT database at local file "[^"]*"', "", line)
    elif any(isinstance(e, json.JSONDecodeError) for e in chain):
        bad = next(e for e in chain if isinstance(e, json.JSONDecodeError))
        line = f"a metadata file is truncated or not JSON: {bad}"
    elif lines:
        line = lines[0].split(" See full TensorStore details")[0]
    else:
        line = type(chain[0]).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def restore_newest_readable(
    manager: ocp.CheckpointManager,
    template: dict,
    epochs=None,
    on_unreadable: Callable[[int, str], Any] | None = None,
    shardings: dict | None = None,
):
    """(epoch, tree, meta) of the newest of `epochs` (default: all kept) that restores,
    or None. For each one that does not, on_unreadable(epoch, reason) runs first."""
    for epoch in sorted(manager.all_steps() if epochs is None else epochs, reverse=True):
        try:
            with _Quiet():
                tree, meta = restore(manager, epoch, template, shardings)
            return epoch, tree, meta
        except Exception as exc:  # orbax raises many types for damaged files
            if on_unreadable is not None:
                on_unreadable(epoch, unreadable_reason(exc))
    return None


def restore_latest_good(
    manager: ocp.CheckpointManager, workdir: str, template: dict, log: Callable[[str], Any] = print,
    shardings: dict | None = None,
):
    """Newest readable checkpoint as (epoch, tree, meta), or None if there is none.

    An unreadable checkpoint (truncated file, deleted item) is moved to
    workdir/corrupt/ rather than deleted, and the previous one is used instead; each is
    reported in one warning line.
    """

    def set_aside(epoch: int, reason: str) -> None:
        dest = os.path.join(workdir, "corrupt", f"{epoch}-{int(time.time())}")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(os.path.join(manager.directory, str(epoch)), dest)
        manager.reload()
        log(f"warning: checkpoint for epoch {epoch} is unreadable ({reason}); "
            f"moved it to {dest} and falling back to the previous one")

    return restore_newest_readable(manager, template, on_unreadable=set_aside, shardings=shardings)


def best_epoch(manager: ocp.CheckpointManager) -> int:
    """Epoch with the highest validation accuracy among kept checkpoints (never test)."""
    scored = []
    for epoch in manager.all_steps():
        try:
            with _Quiet():
                val = read_meta(manager, epoch).get("val_accuracy")
        except Exception:  # an unreadable checkpoint is no candidate
            continue
        if val is not None:
            scored.append((float(np.mean(val)), -epoch, epoch))
    if not scored:
        raise CheckpointError(
            "this run has no validation split, so there is no best checkpoint "
            "(model selection never uses the test set); use --step N or the latest"
        )
    return max(scored)[2]
