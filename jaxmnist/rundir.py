"""A training run's directory, and the one owner of everything in it.

    WORKDIR/run.json        the run's identity: arch, recipe, seeds, dataset, split sizes
    WORKDIR/metrics.jsonl   one record per completed epoch
    WORKDIR/checkpoints/N/  orbax, per epoch: `state` (params, batch_stats, optimiser
                            state, step, run keys) and `meta` (identity, epoch, metrics)
    WORKDIR/corrupt/        damaged checkpoints set aside, never deleted
    WORKDIR/.lock           held by the process that trains in the workdir
    WORKDIR/*.png           curves and misclassified digits (`jaxmnist.train.plots`)

A workdir holds one run: a trainer with other settings is refused, the same settings
resume. One trainer at a time: the lock is an advisory `flock`, which the kernel drops
when its process dies, so a killed run never blocks its own resume. Checkpoints keep the
last 3 epochs plus the best by validation accuracy. Saves are synchronous and orbax
finalises a step by renaming its temporary directory, so a run killed mid-save leaves
only a temporary directory that the next start removes. Restores name the target shapes
and the *current* device, so a checkpoint written on a GPU restores on a CPU-only machine.
Readers (evaluate, predict, export, serve) open it read-only and change nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import time
from typing import Any, Callable

import numpy as np

from jaxmnist.files import atomic_write
from jaxmnist.messages import quiet_logs, stderr_held

KEEP_LAST = 3
_ORBAX_LOGGERS = ("absl", "orbax", "asyncio")
RUN_FILE, METRICS_FILE, LOCK_FILE = "run.json", "metrics.jsonl", ".lock"
_OURS = {LOCK_FILE}  # files that do not make a directory "not empty"


class RunError(RuntimeError):
    """A run that cannot start or go on; the message says what to do."""


class StorageError(RunError):
    """The filesystem refused a write (full, read-only, vanished); the run can resume."""


class CheckpointError(RunError):
    """A checkpoint that is missing or unreadable; the message says what to do."""


class RunDir:
    """One workdir. `read_only` readers never create, lock, move or write anything."""

    def __init__(self, path: str, read_only: bool = False):
        self.path = os.fspath(path)
        self.read_only = read_only
        self._manager = None
        self._lock_fd: int | None = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- identity ---------------------------------------------------------------------
    def identity(self) -> dict:
        """run.json, with recipe fields added since it was written at their defaults."""
        from jaxmnist.train.recipes import with_defaults

        run_file = self.file(RUN_FILE)
        if not os.path.isfile(run_file):
            raise RunError(f"{self.path} holds no jaxmnist run (no {RUN_FILE}); "
                           "pass the --workdir of a training run")
        try:
            with open(run_file) as f:
                ident = json.load(f)
        except (OSError, ValueError) as exc:
            raise RunError(f"{run_file} is unreadable ({exc}); use a fresh --workdir") from None
        missing = [k for k in ("arch", "recipe", "seeds", "train_examples")
                   if not isinstance(ident, dict) or k not in ident]
        if missing or not isinstance(ident["recipe"], dict):
            raise RunError(f"{run_file} is not a jaxmnist run (no {', '.join(missing) or 'recipe'}); "
                           "pass the --workdir of a training run")
        return {**ident, "recipe": with_defaults(ident["recipe"])}

    def open_for(self, ident: dict) -> bool:
        """Creates the workdir for the run `ident`, or checks that it holds that run, and
        takes the lock; True when it already holds the run (a resume)."""
        if os.path.exists(self.file(RUN_FILE)):
            self._check_same(ident)
        elif os.path.isdir(self.path) and set(os.listdir(self.path)) - _OURS:
            raise RunError(f"workdir {self.path} is not empty and holds no jaxmnist run (no "
                           f"{RUN_FILE}); choose a new or empty directory")
        os.makedirs(self.path, exist_ok=True)
        self.lock()
        if os.path.exists(self.file(RUN_FILE)):  # under the lock: settled
            self._check_same(ident)
            return True
        atomic_write(self.file(RUN_FILE), json.dumps(ident, indent=1))
        return False

    def _check_same(self, ident: dict) -> None:
        old = self.identity()
        if old != ident:
            raise RunError(f"workdir {self.path} holds a different run ({_difference(old, ident)}); "
                           "use another --workdir or the same settings to resume")

    # -- lock -------------------------------------------------------------------------
    def lock(self) -> None:
        """Exclusive for the life of this process (or until unlock): a second trainer
        stops at once, naming the process that holds the workdir."""
        import fcntl

        if self._lock_fd is not None:
            return
        fd = os.open(self.file(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"workdir {self.path} is in use by {holder}; wait for it to end "
                           "(or stop it) and rerun, or pass another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    # -- epoch records ----------------------------------------------------------------
    def metrics(self) -> list[dict]:
        """metrics.jsonl's records; `lowering` for the older name `kernels`."""
        path = self.file(METRICS_FILE)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [{"lowering": r.pop("kernels"), **r} if "kernels" in r else r for r in records]

    def write_metrics(self, records: list[dict]) -> None:
        atomic_write(self.file(METRICS_FILE), "".join(json.dumps(r) + "\n" for r in records))

    @contextlib.contextmanager
    def writing(self, what: str, resumes_from: int):
        """Turns a storage failure inside the block (full disk, read-only or vanished
        workdir, lost permission) into one RunError line that says what to do; nothing
        written before is lost, and the next run resumes from epoch `resumes_from`."""
        try:
            yield
        except Exception as exc:
            reason = storage_failure(exc)
            if reason is None:
                raise
            then = (f"it resumes from epoch {resumes_from}" if resumes_from
                    else "it starts the run afresh")
            raise StorageError(f"could not write {what} in {self.path} ({reason}); free space, or "
                           f"make the directory exist and writable, and rerun the same command: "
                           f"{then}") from None

    # -- checkpoints ------------------------------------------------------------------
    @property
    def manager(self):
        if self._manager is None:
            self._manager = _open_manager(self.file("checkpoints"), self.read_only)
        return self._manager

    def epochs(self) -> list[int]:
        """Epochs with a checkpoint kept, oldest first."""
        if not os.path.isdir(self.file("checkpoints")):
            return []
        return sorted(self.manager.all_steps())

    def save(self, epoch: int, tree: dict, meta: dict) -> None:
        import orbax.checkpoint as ocp

        val = meta.get("val_accuracy")
        metrics = None if val is None else {"val_accuracy": float(np.mean(val))}
        try:  # a failure is reported once, by the caller: orbax's threads print it many times
            with quiet_logs(_ORBAX_LOGGERS), stderr_held():
                try:
                    self.manager.save(epoch, metrics=metrics, args=ocp.args.Composite(
                        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
                    self.manager.wait_until_finished()
                except Exception:
                    time.sleep(0.5)  # its abandoned writes finish failing into the held stderr
                    raise
        except Exception:
            # what is left of them reports again when collected, at exit
            logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
            raise

    def restore(self, epoch: int, template: dict, shardings: dict | None = None):
        """(tree, meta) of one epoch's checkpoint, onto `template`'s shapes."""
        import orbax.checkpoint as ocp

        restored = self.manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(template, shardings)),
            meta=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["meta"])

    def meta(self, epoch: int) -> dict:
        import orbax.checkpoint as ocp

        return dict(self.manager.restore(
            epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def restore_newest(self, template: dict, epochs=None, on_unreadable=None, shardings=None):
        """(epoch, tree, meta) of the newest of `epochs` (default: all kept) that restores,
        or None; on_unreadable(epoch, reason) runs first for each one that does not."""
        for epoch in sorted(self.epochs() if epochs is None else epochs, reverse=True):
            try:
                with quiet_logs():
                    return (epoch, *self.restore(epoch, template, shardings))
            except Exception as exc:  # orbax raises many types for damaged files
                if on_unreadable is not None:
                    on_unreadable(epoch, unreadable_reason(exc))
        return None

    def resume(self, template: dict, log: Callable[[str], Any], shardings=None):
        """The trainer's restore: the newest readable checkpoint, each unreadable newer one
        moved to corrupt/ with one warning line; None when there is none."""

        def set_aside(epoch: int, reason: str) -> None:
            dest = os.path.join(self.path, "corrupt", f"{epoch}-{int(time.time())}")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.move(os.path.join(self.manager.directory, str(epoch)), dest)
            self.manager.reload()
            log(f"warning: checkpoint for epoch {epoch} is unreadable ({reason}); "
                f"moved it to {dest} and falling back to the previous one")

        return self.restore_newest(template, on_unreadable=None if self.read_only else set_aside,
                                   shardings=shardings)

    def best_epoch(self) -> int:
        """Epoch with the highest validation accuracy among kept checkpoints (never test)."""
        scored = []
        for epoch in self.epochs():
            try:
                with quiet_logs():
                    val = self.meta(epoch).get("val_accuracy")
            except Exception:  # an unreadable checkpoint is no candidate
                continue
            if val is not None:
                scored.append((float(np.mean(val)), -epoch, epoch))
        if not scored:
            raise CheckpointError("this run has no validation split, so there is no best "
                                  "checkpoint (model selection never uses the test set); "
                                  "use --epoch N or the latest")
        return max(scored)[2]

    def restore_chosen(self, template: dict, epoch: int | None = None, best: bool = False,
                       log: Callable[[str], Any] = print):
        """The readers' restore: (epoch, tree, meta, unreadable epochs) of the checkpoint
        `epoch` or `best` picks, else of the newest readable one (one warning line for the
        unreadable newer ones). A chosen checkpoint that is missing or unreadable is a
        CheckpointError naming the fix."""
        kept = self.epochs()
        if not kept:
            raise CheckpointError(f"{self.path} has no checkpoints yet; train it first")
        chosen = best or epoch is not None
        if best:
            epoch = self.best_epoch()
        elif chosen and epoch not in kept:
            raise CheckpointError(f"no checkpoint for epoch {epoch} in {self.path}; kept: {kept}")
        bad: list[tuple[int, str]] = []
        got = self.restore_newest(template, [epoch] if chosen else kept,
                                  on_unreadable=lambda e, why: bad.append((e, why)))
        if got is None:
            raise CheckpointError(_unreadable_message(self.path, bad[0], kept, chosen))
        if bad:
            log(f"warning: checkpoint for epoch {', '.join(str(e) for e, _ in bad)} in "
                f"{self.path} is unreadable ({bad[0][1]}); evaluating epoch {got[0]}, the "
                "newest readable one")
        return (*got, [e for e, _ in bad])


def _unreadable_message(path: str, first: tuple[int, str], kept: list[int], chosen: bool) -> str:
    epoch, reason = first
    if not chosen:
        return (f"no checkpoint in {path} is readable (epoch {epoch}: {reason}); rerun the "
                "training command, which sets them aside and trains afresh")
    retrain = ("rerun the training command, which sets damaged checkpoints aside and resumes "
               "from the newest good one")
    others = [e for e in kept if e != epoch]
    fix = f"evaluate another with --epoch N (kept: {others}) or {retrain}" if others else retrain
    return f"checkpoint for epoch {epoch} in {path} is unreadable ({reason}); {fix}"


def _difference(old: dict, new: dict) -> str:
    diffs = []
    for key in new:
        if key == "recipe":
            for field, value in new["recipe"].items():
                if old.get("recipe", {}).get(field) != value:
                    diffs.append(f"{field}={value} (workdir has {old.get('recipe', {}).get(field)})")
        elif old.get(key) != new[key]:
            diffs.append(f"{key}={new[key]} (workdir has {old.get(key)})")
    return ", ".join(diffs)


def _open_manager(directory: str, read_only: bool):
    import orbax.checkpoint as ocp
    from orbax.checkpoint import checkpoint_managers as policies

    policy = policies.AnyPreservationPolicy([
        policies.LatestN(n=KEEP_LAST),
        policies.BestN(get_metric_fn=lambda m: m["val_accuracy"], n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    # orbax warns that a read-only manager does not save, and that the directory is
    # read-only: both are what was asked for.
    with quiet_logs() if read_only else contextlib.nullcontext():
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=False,
            cleanup_tmp_directories=not read_only, create=not read_only, read_only=read_only)
        return ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "meta"),
                                     options=options)


def _abstract(tree, shardings: dict | None = None):
    """Restore targets: this process's first device, or per item of the state tree the
    sharding a mesh run places it with (`shardings`, e.g. {"params": NamedSharding})."""
    import jax

    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return {
        name: jax.tree_util.tree_map(
            lambda x, s=(shardings or {}).get(name, one): jax.ShapeDtypeStruct(
                np.shape(x), x.dtype, sharding=s), item)
        for name, item in tree.items()
    }


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                   errno.ENOENT, errno.EIO}
_STORAGE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system|"
                           r"Permission denied|No such file or directory|RESOURCE_EXHAUSTED|"
                           r"PERMISSION_DENIED|Input/output error")


def storage_failure(exc: BaseException) -> str | None:
    """A short reason when `exc` (or an exception it was raised from) is the filesystem
    refusing a write, else None. orbax reports tensorstore's failures as ValueErrors whose
    text carries the OS error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return exc.strerror or errno.errorcode.get(exc.errno, "OSError")
        found = _STORAGE_TEXT.search(str(exc))
        if found:
            text = found.group(0)
            return "No space left on device" if text == "RESOURCE_EXHAUSTED" else text
        exc = exc.__cause__ or exc.__context__
    return None


_TENSORSTORE_STATUS = re.compile(
    r"\b(OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|INVALID_ARGUMENT|FAILED_PRECONDITION|UNKNOWN|INTERNAL):")


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
