"""The train loop: `train_and_evaluate`, one loop for a single model and for K models
trained at once (vmap over a leading model axis).

Randomness is a pure function of (seed, epoch, step): each model's key is
PRNGKey(seed); epoch e uses fold_in(key, e) for its shuffle, rotations and dropout
(`epoch_plan`). Nothing random is carried from one epoch to the next except through the
checkpointed state, so a run resumed from its epoch-e checkpoint replays exactly what an
uninterrupted run would have done, and model k of a K-model run is the same run as seed
k trained alone (bitwise under the CPU lowering, whose K-model step runs each model as
its own copy of the one-model step: `jaxmnist.nets.cpu.models_side_by_side`; within
float tolerance under the plain vmap).

The lowering is not part of a run's identity: both lowerings take the same trees, so a
run may be resumed under the other one (the change is logged). Nor are the devices: on a
mesh (`jaxmnist.train.parallel`) the step computes what one device computes, the state
is replicated, and a checkpoint restores onto any device count.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist.nets import lowering as lowering_lib
from jaxmnist.rundir import RunDir, RunError
from jaxmnist.train import parallel, state as state_lib, step as step_lib
from jaxmnist.train.plan import epoch_calls
from jaxmnist.train.step import evaluate, on_device
from jaxmnist.train.recipes import Recipe, schedule

if TYPE_CHECKING:
    from jaxmnist.data import Dataset

Log = Callable[[str], Any]


class NaNLoss(RunError):
    pass


@dataclasses.dataclass(frozen=True)
class RunConfig:
    recipe: Recipe
    seeds: tuple[int, ...] = (0,)
    workdir: str | None = None  # None: train in memory, write nothing
    dataset: str = "mnist"
    progress: bool = True
    chunk_steps: int = 50  # read the step metrics back from the device every this many steps
    plots: bool = True
    lowering: str | None = None  # "auto" | "plain" | "cpu"; None: $JAXMNIST_LOWERING, else auto
    steps_per_call: int | None = None  # None: lowering.default_steps_per_call()
    devices: int | str | None = None  # N, "all" or None (all): see jaxmnist.train.parallel

    @property
    def n_models(self) -> int:
        return len(self.seeds)


def identity(config: RunConfig, data: Dataset) -> dict:
    """What makes two runs the same run (and a workdir resumable)."""
    return {
        "arch": config.recipe.arch,
        "recipe": config.recipe.to_dict(),
        "seeds": list(config.seeds),
        "dataset": config.dataset,
        "train_examples": len(data.train),
        "val_examples": len(data.val),
    }


@dataclasses.dataclass
class Run:
    """What one run's epochs share: its settings, devices, compiled functions and data."""

    config: RunConfig
    data: Dataset
    layout: parallel.Layout
    lowering: str
    steps_per_call: int
    steps_per_epoch: int
    rundir: RunDir | None
    log: Log
    fns: dict = dataclasses.field(default_factory=dict)  # steps per call (and "eval") -> jitted
    arrays: dict = dataclasses.field(default_factory=dict)  # split -> (images, labels) on device
    first_step_logged: bool = False

    @property
    def writes(self) -> bool:
        return self.rundir is not None and parallel.is_primary()

    @property
    def k(self) -> int:
        return self.config.n_models


def train_and_evaluate(config: RunConfig, data: Dataset, log: Log = print,
                       on_chunk: Callable[[int, int], None] | None = None) -> list[dict]:
    """Trains (or resumes) the run `config` describes and returns one metrics record per
    completed epoch; each epoch is evaluated, logged, recorded and checkpointed."""
    started = time.perf_counter()
    run = setup(config, data, log)
    try:
        state, run_keys = state_lib.init_models(config.recipe, config.seeds, run.steps_per_epoch,
                                                run.lowering)
        state = run.layout.put_tree(state, run.layout.state_sharding)
        state, run_keys, start, history = resume(run, state, run_keys)
        compile_fns(run)
        log_setup(run, history, start)
        for epoch in range(start, config.recipe.epochs):
            state, train = train_epoch(run, state, run_keys, epoch, started, on_chunk)
            record = epoch_record(run, state, epoch, train)
            log_epoch(run, record)
            history.append(record)
            save_epoch(run, state, run_keys, record, history)
        if history and config.plots and run.rundir is not None:
            plot(run, state, history)
        return history
    finally:
        if run.rundir is not None:
            run.rundir.unlock()


def setup(config: RunConfig, data: Dataset, log: Log) -> Run:
    """Checks the settings, lays out the devices and opens (and locks) the workdir."""
    recipe = config.recipe
    recipe.validate(len(data.train))
    if config.n_models < 1:
        raise RunError("need at least one seed")
    try:
        layout = parallel.make_layout(config.devices, config.n_models, recipe.batch_size)
    except parallel.LayoutError as exc:
        raise RunError(str(exc)) from None
    steps_per_call = config.steps_per_call or lowering_lib.default_steps_per_call()
    if steps_per_call < 1:
        raise RunError(f"--steps-per-call must be >= 1, got {steps_per_call}")
    rundir = None if not config.workdir else RunDir(config.workdir)
    if rundir is not None and parallel.is_primary():  # process 0 checks and writes it
        with rundir.writing("the run's identity", resumes_from=0):
            rundir.open_for(identity(config, data))
    return Run(config=config, data=data, layout=layout, lowering=run_lowering(config, layout),
               steps_per_call=steps_per_call, rundir=rundir,
               steps_per_epoch=math.ceil(len(data.train) / recipe.batch_size),
               log=log if parallel.is_primary() else (lambda *_: None))


def run_lowering(config: RunConfig, layout: parallel.Layout) -> str:
    """The lowering a run uses: the configured one, except that the CPU lowering is for
    one device (its side-by-side K-model rule and fused custom-VJP stages are not written
    for a partitioned program), so `auto` on a CPU mesh means plain."""
    lowering = lowering_lib.resolve(config.lowering)
    if lowering == "cpu" and layout.size > 1:
        if lowering_lib.requested(config.lowering) == "cpu":
            raise RunError(f"--lowering cpu runs on one device, this run has {layout.size}; "
                           "use --lowering plain (or auto) or --devices 1")
        lowering = "plain"
    return lowering


def resume(run: Run, state, run_keys):
    """(state, run_keys, first epoch to train, history): from the workdir's newest good
    checkpoint when there is one, else as initialised. The other processes of a
    multi-host run restore what process 0 accepted and never set anything aside."""
    if run.rundir is None or not run.rundir.epochs():
        if run.writes:
            run.rundir.write_metrics([])
        return state, run_keys, 0, []
    shardings = None if run.layout.mesh is None else {
        "params": run.layout.state_sharding, "batch_stats": run.layout.state_sharding,
        "opt_state": run.layout.state_sharding, "step": run.layout.state_sharding,
        "rng": run.layout.replicated}
    template = state_lib.checkpoint_tree(state, run_keys)
    if parallel.is_primary():
        got = run.rundir.resume(template, run.log, shardings=shardings)
    else:
        got = run.rundir.restore_newest(template, shardings=shardings)
    if got is None:
        if run.writes:
            run.rundir.write_metrics([])
        return state, run_keys, 0, []
    start, tree, _ = got
    state, run_keys = state_lib.from_checkpoint(state, tree)
    history = [r for r in run.rundir.metrics() if r["epoch"] <= start]
    run.log(f"resumed {run.rundir.path} from the checkpoint of epoch {start}")
    if run.writes:
        run.rundir.write_metrics(history)
    return state, run_keys, start, history


def compile_fns(run: Run) -> None:
    """The jitted train step (and its scanned form), the evaluation, and the dataset on
    the devices."""
    recipe, k, layout = run.config.recipe, run.k, run.layout
    make = lambda s: step_lib.make_train_fn(recipe, k, run.lowering, s, layout=layout,  # noqa: E731
                                            steps_per_epoch=run.steps_per_epoch)
    run.fns = {1: make(1), "eval": step_lib.make_eval_fn(recipe, k, layout=layout)}
    if run.steps_per_call > 1:
        run.fns[run.steps_per_call] = make(run.steps_per_call)
    data = run.data
    run.arrays = {"train": on_device(data.train, layout), "test": on_device(data.test, layout)}
    if len(data.val):
        run.arrays["val"] = on_device(data.val, layout)


def log_setup(run: Run, history: list[dict], start: int) -> None:
    if run.layout.mesh is not None:
        run.log(run.layout.line())
    configured = lowering_lib.resolve(run.config.lowering)
    run.log(f"lowering: {run.lowering} on {jax.default_backend()}, {run.steps_per_call} step(s) "
            "per call" + (" (the CPU lowering runs on one device)"
                          if run.lowering != configured else ""))
    before = history[-1].get("lowering", run.lowering) if history else run.lowering
    if before != run.lowering:
        run.log(f"lowering changed on resume: epochs 1-{start} ran the {before} lowering, the "
                f"rest runs the {run.lowering} one")


@dataclasses.dataclass
class EpochTotals:
    """Running sums of one epoch's train metrics, per model (scalars for one model)."""

    steps: int = 0
    images: int = 0
    loss: Any = 0.0
    correct: Any = 0.0
    seconds: float = 0.0  # training only
    seconds_started: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, pending: list, first_step: int, epoch: int) -> int:
        """Adds calls' (batch sizes, device metrics); returns the steps added."""
        batches = np.array([b for bs, _ in pending for b in bs])
        losses = np.concatenate([np.asarray(m[0]) for _, m in pending])
        correct = np.concatenate([np.asarray(m[1]) for _, m in pending])
        check_finite(losses, first_step + self.steps, epoch)
        shape = (-1,) + (1,) * (losses.ndim - 1)
        self.loss = self.loss + (losses * batches.reshape(shape)).sum(axis=0)
        self.correct = self.correct + correct.sum(axis=0)
        self.steps += len(batches)
        self.images += int(batches.sum())
        return len(batches)


def train_epoch(run: Run, state, run_keys, epoch: int, started: float, on_chunk=None):
    """Runs one epoch's train calls; reads their metrics every chunk_steps steps."""
    recipe, n = run.config.recipe, len(run.data.train)
    calls = epoch_calls(run_keys, epoch, n, recipe.batch_size, run.k, run.steps_per_call)
    bar = progress_bar(run, epoch)
    totals, pending = EpochTotals(), []
    t0 = totals.seconds_started
    images, labels = run.arrays["train"]
    for i, (idx, keys, steps) in enumerate(calls):
        idx_in, keys_in = run.layout.put_batch(idx, keys, scanned=steps > 1)
        state, metrics = run.fns[steps](state, images, labels, idx_in, keys_in)
        if not run.first_step_logged:
            log_first_step(run, metrics, started)
        if steps == 1:  # metrics of every call as (steps, ...) arrays
            metrics = jax.tree_util.tree_map(lambda m: m[None], metrics)
        pending.append(([idx.shape[-1]] * steps, metrics))
        if sum(len(b) for b, _ in pending) < run.config.chunk_steps and i + 1 < len(calls):
            continue
        done = totals.add(pending, epoch * run.steps_per_epoch, epoch)
        pending = []
        if bar is not None:
            bar.update(done)
            bar.set_postfix(loss=f"{np.mean(totals.loss) / totals.images:.4f}",
                            acc=f"{100 * np.mean(totals.correct) / totals.images:.2f}",
                            img_s=f"{totals.images * run.k / (time.perf_counter() - t0):.0f}")
        if on_chunk is not None:
            on_chunk(epoch, totals.steps)
    totals.seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return state, totals


def epoch_record(run: Run, state, epoch: int, train: EpochTotals) -> dict:
    """The epoch's metrics.jsonl record: train, validation and test figures, per model."""
    n, lr_fn = len(run.data.train), schedule(run.config.recipe, run.steps_per_epoch)
    record = {
        "epoch": epoch + 1,
        "lowering": run.lowering,
        "steps_per_call": run.steps_per_call,
        "mesh": run.layout.describe(),
        "lr": float(lr_fn(epoch * run.steps_per_epoch)),  # at the epoch's first step
        "train_loss": _as_list(train.loss / n),
        "train_accuracy": _as_list(100.0 * train.correct / n),
    }
    splits = (["val"] if "val" in run.arrays else []) + ["test"]
    for split in splits:
        scored = evaluate(run.fns["eval"], state, run.arrays[split])
        labels = getattr(run.data, split).labels
        record[f"{split}_loss"] = _as_list(scored.loss())
        record[f"{split}_accuracy"] = _as_list(scored.accuracy(labels))
    record["seconds"] = time.perf_counter() - train.seconds_started
    record["train_seconds"] = train.seconds
    record["images_per_s"] = n * run.k / train.seconds
    return record


def log_epoch(run: Run, record: dict) -> None:
    """The seeds' test line per model, then one line of train figures."""
    test_n = len(run.data.test)
    accuracy, loss = np.atleast_1d(record["test_accuracy"]), np.atleast_1d(record["test_loss"])
    val = np.atleast_1d(record["val_accuracy"]) if "val_accuracy" in record else None
    for i, seed in enumerate(run.config.seeds):
        tag = f"[seed {seed}] " if run.k > 1 else ""
        correct = int(round(accuracy[i] * test_n / 100.0))
        run.log(f"{tag}Epoch {record['epoch']}: Test set: Average loss: {loss[i]:.4f}, "
                f"Accuracy: {correct}/{test_n} ({100.0 * correct / test_n:.2f}%)"
                + (f"  Validation: {val[i]:.2f}%" if val is not None else ""))
    run.log(f"  lr {record['lr']:.6g}  train loss {np.mean(record['train_loss']):.4f}  "
            f"train acc {np.mean(record['train_accuracy']):.2f}%  "
            f"{record['images_per_s']:.0f} images/s  {record['seconds']:.1f}s")


def save_epoch(run: Run, state, run_keys, record: dict, history: list[dict]) -> None:
    """metrics.jsonl, then the epoch's checkpoint (every process takes part); a full disk
    or unwritable workdir stops the run with one line (`RunDir.writing`)."""
    if run.rundir is None:
        return
    epoch = record["epoch"]
    meta = {**identity(run.config, run.data), "lowering": run.lowering, "mesh": record["mesh"],
            "epoch": epoch, "val_accuracy": record.get("val_accuracy"),
            "test_accuracy": record["test_accuracy"]}
    keys = run_keys if run.layout.mesh is None else run.layout.put_replicated(run_keys)
    if run.writes:  # first: a resume drops records past its checkpoint, never misses one
        with run.rundir.writing("metrics.jsonl", resumes_from=epoch - 1):
            run.rundir.write_metrics(history)
    with run.rundir.writing(f"the checkpoint of epoch {epoch}", resumes_from=epoch - 1):
        run.rundir.save(epoch, state_lib.checkpoint_tree(state, keys), meta)


def plot(run: Run, state, history: list[dict]) -> None:
    """curves.png and misclassified.png (the first model's) in the workdir."""
    from jaxmnist.train import plots

    test = evaluate(run.fns["eval"], state, run.arrays["test"])  # every process: a collective
    if not run.writes:
        return
    pred = test.predictions if run.k == 1 else test.predictions[0]
    with run.rundir.writing("the plots", resumes_from=history[-1]["epoch"]):
        plots.curves(history, run.rundir.file("curves.png"), run.config.seeds)
        plots.misclassified(run.data.test.images, run.data.test.labels, pred,
                            run.rundir.file("misclassified.png"))


def check_finite(losses: np.ndarray, first_step: int, epoch: int) -> None:
    flat = losses.reshape(losses.shape[0], -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        at = first_step + int(np.argmax(bad)) + 1  # 1-based, as optimizer steps are counted
        raise NaNLoss(f"loss became NaN/inf at step {at} (epoch {epoch + 1}); stopped, the last "
                      "good checkpoint is kept. Lower --lr or check the input data")


def progress_bar(run: Run, epoch: int):
    if not (run.config.progress and parallel.is_primary()):
        return None
    from tqdm import tqdm

    return tqdm(total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{run.config.recipe.epochs}",
                leave=False, mininterval=0.5, dynamic_ncols=True)


def log_first_step(run: Run, metrics, started: float) -> None:
    jax.block_until_ready(metrics)
    age = process_age()
    since = f", {age:.2f}s after the process started" if age is not None else ""
    run.log(f"first step done {time.perf_counter() - started:.2f}s after the run started{since} "
            "(model init and compilation included)")
    run.first_step_logged = True


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc; 10 ms resolution), else None."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _as_list(x) -> Any:
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else [float(v) for v in x]
