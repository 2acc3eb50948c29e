"""The train loop: one loop for a single model and for K models trained at once (vmap).

Randomness is a pure function of (seed, epoch, step): each model's key is
PRNGKey(seed); epoch e uses fold_in(key, e) for its shuffle, rotations and dropout.
Nothing random is carried from one epoch to the next except through the checkpointed
state, so a run resumed from its epoch-e checkpoint replays exactly what an
uninterrupted run would have done, and model k of a K-model run is the same run as
seed k trained alone (bitwise under the CPU lowering, whose K-model step runs each
model as its own copy of the one-model step: `jaxmnist.cpu.models_side_by_side`;
within float tolerance under the plain vmap).

The lowering (`kernels`) is not part of a run's identity: both lowerings take the same
trees, so a run may be resumed under the other one (the change is logged). Nor are the
devices: on a mesh (`jaxmnist.parallel`) the step computes what one device computes, the
state is replicated, and a checkpoint restores onto any device count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist import checkpoint, kernels as kernels_lib, models, parallel, step as step_lib
from jaxmnist.recipes import Recipe, schedule, with_defaults

if TYPE_CHECKING:
    from jaxmnist.data import Dataset, Split


class RunError(RuntimeError):
    """A run that cannot start or go on; the message says what to do."""


class NaNLoss(RunError):
    pass


@dataclasses.dataclass(frozen=True)
class RunConfig:
    recipe: Recipe
    seeds: tuple[int, ...] = (0,)
    workdir: str | None = None
    dataset: str = "mnist"
    progress: bool = True
    chunk_steps: int = 50
    plots: bool = True
    kernels: str | None = None  # "auto" | "plain" | "cpu"; None: $JAXMNIST_KERNELS, else auto
    steps_per_call: int | None = None  # None: kernels.default_steps_per_call()
    devices: int | str | None = None  # N, "all" or None (all): see jaxmnist.parallel

    @property
    def n_models(self) -> int:
        return len(self.seeds)

    @property
    def lowering(self) -> str:
        """"plain" or "cpu": what `kernels` means on this machine."""
        return kernels_lib.resolve(self.kernels)

    @property
    def steps_in_one_call(self) -> int:
        s = self.steps_per_call or kernels_lib.default_steps_per_call()
        if s < 1:
            raise RunError(f"--steps-per-call must be >= 1, got {s}")
        return s


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


def write_json_atomic(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _describe_difference(old: dict, new: dict) -> str:
    diffs = []
    for key in new:
        if key == "recipe":
            for field, value in new["recipe"].items():
                if old.get("recipe", {}).get(field) != value:
                    diffs.append(f"{field}={value} (workdir has {old.get('recipe', {}).get(field)})")
        elif old.get(key) != new[key]:
            diffs.append(f"{key}={new[key]} (workdir has {old.get(key)})")
    return ", ".join(diffs)


def prepare_workdir(workdir: str, ident: dict, write: bool = True) -> bool:
    """Creates (unless not `write`) or checks the workdir; True when it already holds this run."""
    run_file = os.path.join(workdir, "run.json")
    if os.path.exists(run_file):
        try:
            with open(run_file) as f:
                old = json.load(f)
        except (OSError, ValueError) as exc:
            raise RunError(f"{run_file} is unreadable ({exc}); use a fresh --workdir") from None
        if isinstance(old.get("recipe"), dict):
            old = {**old, "recipe": with_defaults(old["recipe"])}
        if old != ident:
            raise RunError(
                f"workdir {workdir} holds a different run ({_describe_difference(old, ident)}); "
                "use another --workdir or the same settings to resume"
            )
        return True
    if os.path.isdir(workdir) and os.listdir(workdir):
        raise RunError(
            f"workdir {workdir} is not empty and holds no jaxmnist run (no run.json); "
            "choose a new or empty directory"
        )
    if write:
        os.makedirs(workdir, exist_ok=True)
        write_json_atomic(run_file, ident)
    return False


def open_workdir(workdir: str, ident: dict) -> bool:
    """prepare_workdir on process 0; True when the workdir already holds this run.

    The other processes of a multi-host run neither check nor write it (a check racing
    process 0's first write could see a half-made workdir); they look for checkpoints to
    resume from, which exist only in a workdir process 0 accepted."""
    if parallel.is_primary():
        return prepare_workdir(workdir, ident)
    return True


def run_lowering(config: RunConfig, layout: parallel.Layout) -> str:
    """The lowering a run uses: config.lowering, except that the CPU lowering is for one
    device (its side-by-side K-model rule and fused custom-VJP stages are not written for
    a partitioned program), so `auto` on a CPU mesh means plain."""
    lowering = config.lowering
    if lowering == "cpu" and layout.size > 1:
        if (config.kernels or os.environ.get(kernels_lib.ENV) or "auto") == "cpu":
            raise RunError(f"--kernels cpu runs on one device, this run has {layout.size}; "
                           "use --kernels plain (or auto) or --devices 1")
        lowering = "plain"
    return lowering


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _rewrite_metrics(workdir: str, records: list[dict]) -> None:
    path = os.path.join(workdir, "metrics.jsonl")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def init_models(config: RunConfig, steps_per_epoch: int, lowering: str | None = None):
    """(state, run_keys): one TrainState, its arrays stacked on a leading axis when K > 1."""
    model = models.build(config.recipe.arch, config.recipe.init, config.recipe.dropout,
                         kernels=lowering or config.lowering)
    states, keys = [], []
    for seed in config.seeds:
        init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
        states.append(step_lib.create_state(model, config.recipe, init_key, steps_per_epoch))
        keys.append(run_key)
    if config.n_models == 1:
        return states[0], keys[0]
    arrays = [(s.step, s.params, s.batch_stats, s.opt_state) for s in states]
    step, params, batch_stats, opt_state = _stack(arrays)
    stacked = states[0].replace(step=step, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return stacked, jnp.stack(keys)


def epoch_plan(run_keys, epoch: int, n: int, batch: int, n_models: int):
    """Shuffled batch indices and per-step keys for one epoch.

    Returns (full_idx, full_keys, tail_idx, tail_keys): full batches with a leading step
    axis, then the last partial batch (as PyTorch's DataLoader keeps it) or None.
    """

    def one(key):
        ekey = jax.random.fold_in(key, epoch)
        perm = jax.random.permutation(jax.random.fold_in(ekey, 0), n)
        skey = jax.random.fold_in(ekey, 1)
        steps = math.ceil(n / batch)
        keys = jax.vmap(lambda i: jax.random.fold_in(skey, i))(jnp.arange(steps))
        return perm, keys

    if n_models > 1:
        perm, keys = jax.vmap(one)(run_keys)  # (K, n), (K, steps, 2)
        keys = jnp.swapaxes(keys, 0, 1)
    else:
        perm, keys = one(run_keys)
        perm = perm[None]
    full = n // batch
    idx = perm[:, : full * batch].reshape(perm.shape[0], full, batch).swapaxes(0, 1)
    tail = perm[:, full * batch :]
    if n_models == 1:
        idx, tail = idx[:, 0], tail[0]
    tail_idx = tail[None] if tail.shape[-1] else None
    return idx, keys[:full], tail_idx, (keys[full:] if tail_idx is not None else None)


def _calls(full_idx, full_keys, tail_idx, tail_keys, per_call: int) -> list[tuple]:
    """One epoch's train calls as (idx, keys, steps): the full batches `per_call` at a
    time (leading step axis) while they last, then one step per call, the last partial
    batch included."""
    calls, full = [], full_idx.shape[0]
    scanned = full - full % per_call if per_call > 1 else 0
    for i in range(0, scanned, per_call):
        calls.append((full_idx[i:i + per_call], full_keys[i:i + per_call], per_call))
    for i in range(scanned, full):
        calls.append((full_idx[i], full_keys[i], 1))
    if tail_idx is not None:
        calls.append((np.asarray(tail_idx)[0], np.asarray(tail_keys)[0], 1))
    return calls


@dataclasses.dataclass
class Evaluation:
    predictions: np.ndarray  # (N,) or (K, N)
    losses: np.ndarray

    def accuracy(self, labels) -> np.ndarray:
        return 100.0 * np.mean(self.predictions == np.asarray(labels), axis=-1)

    def correct(self, labels) -> np.ndarray:
        return np.sum(self.predictions == np.asarray(labels), axis=-1)

    def loss(self) -> np.ndarray:
        return np.mean(self.losses, axis=-1)


def on_device(split: Split, layout: parallel.Layout | None = None) -> tuple:
    """A split's arrays on the device, or replicated on every device of a mesh."""
    if layout is None:
        return jnp.asarray(split.images), jnp.asarray(split.labels)
    return layout.put_replicated(split.images), layout.put_replicated(split.labels)


def evaluate(eval_fn, state, split: Split | tuple) -> Evaluation:
    """Scores every example of a split (host Split, or its on_device() arrays)."""
    images, labels = split if isinstance(split, tuple) else on_device(split)
    pred, loss = eval_fn(state, images, labels)
    return Evaluation(np.asarray(pred), np.asarray(loss))


def _as_list(x) -> Any:
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else [float(v) for v in x]


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, mininterval=0.5, dynamic_ncols=True)


def _check_finite(losses: np.ndarray, first_step: int, epoch: int):
    flat = losses.reshape(losses.shape[0], -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        at = first_step + int(np.argmax(bad)) + 1  # 1-based, as optimizer steps are counted
        raise NaNLoss(
            f"loss became NaN/inf at step {at} (epoch {epoch + 1}); stopped, the last "
            "good checkpoint is kept. Lower --lr or check the input data"
        )


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


def run(
    config: RunConfig,
    data: Dataset,
    log: Callable[[str], Any] = print,
    on_chunk: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Trains (or resumes) and returns one metrics record per completed epoch."""
    run_start = time.perf_counter()
    first_step_logged = False
    recipe, k = config.recipe, config.n_models
    n = len(data.train)
    recipe.validate(n)
    if k < 1:
        raise RunError("need at least one seed")
    ident = identity(config, data)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    try:
        layout = parallel.make_layout(config.devices, k, recipe.batch_size)
    except parallel.LayoutError as exc:
        raise RunError(str(exc)) from None
    lowering, per_call = run_lowering(config, layout), config.steps_in_one_call
    primary = parallel.is_primary()
    if not primary:  # process 0 speaks and writes for a multi-host run
        log = lambda *_: None  # noqa: E731
    writes = bool(config.workdir) and primary
    state, run_keys = init_models(config, steps_per_epoch, lowering)
    state = layout.put_tree(state, layout.state_sharding)
    shardings = None if layout.mesh is None else {
        "params": layout.state_sharding, "batch_stats": layout.state_sharding,
        "opt_state": layout.state_sharding, "step": layout.state_sharding,
        "rng": layout.replicated}
    lr_fn = schedule(recipe, steps_per_epoch)
    start_epoch, history, manager = 0, [], None

    if config.workdir:
        resuming = open_workdir(config.workdir, ident)
        manager = checkpoint.open_manager(os.path.join(config.workdir, "checkpoints"))
        got = None
        if resuming:
            template = checkpoint.state_tree(state, run_keys)
            if primary:
                got = checkpoint.restore_latest_good(manager, config.workdir, template, log,
                                                     shardings=shardings)
            else:
                got = checkpoint.restore_newest_readable(manager, template, shardings=shardings)
        if got is not None:
            start_epoch, tree, _ = got
            state = state.replace(
                params=tree["params"],
                batch_stats=tree["batch_stats"],
                opt_state=tree["opt_state"],
                step=tree["step"],
            )
            run_keys = jnp.asarray(np.asarray(tree["rng"]))  # host-side, as at init
            history = [r for r in read_metrics(config.workdir) if r["epoch"] <= start_epoch]
            log(f"resumed {config.workdir} from the checkpoint of epoch {start_epoch}")
        if writes:
            _rewrite_metrics(config.workdir, history)

    mesh = layout.describe()
    train_images, train_labels = on_device(data.train, layout)
    val_dev = on_device(data.val, layout) if len(data.val) else None
    test_dev = on_device(data.test, layout)
    if layout.mesh is not None:
        log(layout.line())
    log(f"kernels: {lowering} lowering on {jax.default_backend()}, {per_call} step(s) per call"
        + (" (the CPU lowering runs on one device)" if lowering != config.lowering else ""))
    if history and history[-1].get("kernels", lowering) != lowering:
        log(f"kernels changed on resume: epochs 1-{start_epoch} ran the "
            f"{history[-1]['kernels']} lowering, the rest runs the {lowering} one")
    train_fn = step_lib.make_train_fn(recipe, k, lowering, layout=layout,
                                      steps_per_epoch=steps_per_epoch)
    scan_fn = (step_lib.make_train_fn(recipe, k, lowering, per_call, layout=layout,
                                      steps_per_epoch=steps_per_epoch)
               if per_call > 1 else None)
    eval_fn = step_lib.make_eval_fn(recipe, k, layout=layout)
    tag = (lambda i: f"[seed {config.seeds[i]}] ") if k > 1 else (lambda i: "")

    for epoch in range(start_epoch, recipe.epochs):
        full_idx, full_keys, tail_idx, tail_keys = epoch_plan(
            run_keys, epoch, n, recipe.batch_size, k
        )
        calls = _calls(np.asarray(full_idx), np.asarray(full_keys), tail_idx, tail_keys, per_call)

        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{recipe.epochs}",
                        config.progress and primary)
        t0 = time.perf_counter()
        done_steps, done_images, loss_sum, correct_sum = 0, 0, 0.0, 0.0
        pending = []  # device-side metrics not yet read; read every chunk_steps steps
        for i, (idx, keys, steps) in enumerate(calls):
            fn = scan_fn if steps > 1 else train_fn
            idx_in, keys_in = layout.put_batch(idx, keys, scanned=steps > 1)
            state, metrics = fn(state, train_images, train_labels, idx_in, keys_in)
            if first_step_logged is False:
                jax.block_until_ready(metrics)
                age = process_age()
                since = f", {age:.2f}s after the process started" if age is not None else ""
                log(f"first step done {time.perf_counter() - run_start:.2f}s after the run "
                    f"started{since} (model init and compilation included)")
                first_step_logged = True
            if steps == 1:  # metrics of every call as (steps, ...) arrays
                metrics = jax.tree_util.tree_map(lambda m: m[None], metrics)
            pending.append(([idx.shape[-1]] * steps, metrics))
            if sum(len(b) for b, _ in pending) < config.chunk_steps and i + 1 < len(calls):
                continue
            batches = np.array([b for bs, _ in pending for b in bs])
            losses = np.concatenate([np.asarray(m[0]) for _, m in pending])
            correct = np.concatenate([np.asarray(m[1]) for _, m in pending])
            _check_finite(losses, epoch * steps_per_epoch + done_steps, epoch)
            shape = (-1,) + (1,) * (losses.ndim - 1)
            loss_sum = loss_sum + (losses * batches.reshape(shape)).sum(axis=0)
            correct_sum = correct_sum + correct.sum(axis=0)
            done_steps += len(batches)
            done_images += int(batches.sum())
            pending = []
            if bar is not None:
                rate = done_images * k / (time.perf_counter() - t0)
                bar.update(len(batches))
                bar.set_postfix(
                    loss=f"{np.mean(loss_sum) / done_images:.4f}",
                    acc=f"{100 * np.mean(correct_sum) / done_images:.2f}",
                    img_s=f"{rate:.0f}",
                )
            if on_chunk is not None:
                on_chunk(epoch, done_steps)
        train_seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()

        record = {
            "epoch": epoch + 1,
            "kernels": lowering,
            "steps_per_call": per_call,
            "mesh": mesh,
            "lr": float(lr_fn(epoch * steps_per_epoch)),  # at the epoch's first step
            "train_loss": _as_list(loss_sum / n),
            "train_accuracy": _as_list(100.0 * correct_sum / n),
        }
        if len(data.val):
            val = evaluate(eval_fn, state, val_dev)
            record["val_loss"] = _as_list(val.loss())
            record["val_accuracy"] = _as_list(val.accuracy(data.val.labels))
        test = evaluate(eval_fn, state, test_dev)
        record["test_loss"] = _as_list(test.loss())
        record["test_accuracy"] = _as_list(test.accuracy(data.test.labels))
        record["seconds"] = time.perf_counter() - t0
        record["train_seconds"] = train_seconds
        record["images_per_s"] = n * k / train_seconds

        correct_test = np.atleast_1d(test.correct(data.test.labels))
        losses_test = np.atleast_1d(test.loss())
        for i in range(k):
            log(
                f"{tag(i)}Epoch {epoch + 1}: Test set: Average loss: {losses_test[i]:.4f}, "
                f"Accuracy: {correct_test[i]}/{len(data.test)} "
                f"({100.0 * correct_test[i] / len(data.test):.2f}%)"
                + (
                    f"  Validation: {np.atleast_1d(record['val_accuracy'])[i]:.2f}%"
                    if "val_accuracy" in record
                    else ""
                )
            )
        log(
            f"  lr {record['lr']:.6g}  train loss {np.mean(record['train_loss']):.4f}  "
            f"train acc {np.mean(record['train_accuracy']):.2f}%  "
            f"{record['images_per_s']:.0f} images/s  {record['seconds']:.1f}s"
        )
        history.append(record)

        if manager is not None:
            meta = {
                **ident,
                "kernels": lowering,
                "mesh": mesh,
                "epoch": epoch + 1,
                "val_accuracy": record.get("val_accuracy"),
                "test_accuracy": record["test_accuracy"],
            }
            keys_saved = run_keys if layout.mesh is None else layout.put_replicated(run_keys)
            checkpoint.save(manager, epoch + 1, checkpoint.state_tree(state, keys_saved), meta)
            if writes:
                _rewrite_metrics(config.workdir, history)

    if config.workdir and config.plots and history:
        from jaxmnist import plots

        test = evaluate(eval_fn, state, test_dev)  # on every process: a collective
        if not writes:
            return history
        plots.curves(history, os.path.join(config.workdir, "curves.png"), config.seeds)
        pred = test.predictions if k == 1 else test.predictions[0]
        plots.misclassified(
            data.test.images, data.test.labels, pred, os.path.join(config.workdir, "misclassified.png")
        )
    return history
