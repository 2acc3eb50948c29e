"""Wall-clock time to 99.0% and 99.4% test accuracy: jaxmnist's trainer vs the PyTorch seed
recipe, same machine, same data, same architecture and hyperparameters.

    python benchmarks/time_to_accuracy.py --arch gap8k [--epochs N] [--max-epochs N]
        [--train-examples N] [--data-dir DIR] [--seed S] [--json out.json]
    # smoke: --max-epochs 1 --train-examples 2000
    python benchmarks/time_to_accuracy.py --arch gap8k --variant speed --speedrun 10 [--target 99.4]

Speedrun mode (--speedrun N) trains seeds 0..N-1 of the recipe one after another (each in
its own process, data loading excluded) and reports per run the training seconds (the
epochs' training time, with the first epoch's compilation estimated and reported apart)
and the final-epoch test accuracy, then mean / std / min over the seeds and a one-sided
t-test of mean >= --target. The peer row is PyTorch's seed 0 of the arch's SEED recipe
(the seed document's own, 15-20 epochs), stopped at its first epoch at >= --target: its
time to the target, the best case for it.

Each implementation trains in its own fresh Python process, one after the other (never
concurrently), and its clock starts when the parent launches that process: interpreter
start, imports (jax + flax + optax + orbax, or torch), model construction and jit /
first-call costs all count. Loading MNIST is the one thing taken off the clock (it is
timed and subtracted, and reported as `data_load_s`): both sides start from the same
uint8 arrays in memory, from `jaxmnist.data.load('mnist', data_dir, val_examples=0)`.
Times are taken right after each epoch's evaluation on all 10,000 test images; the
reported time to a threshold is the first epoch whose test accuracy reaches it
(null if none does).

* jaxmnist: `jaxmnist.train.loop.train_and_evaluate(RunConfig(recipe, progress=False, plots=False), data)`,
  i.e. the trainer without a workdir (no checkpoints are written; the PyTorch side
  writes none either).
* PyTorch: benchmarks/torch_reference.py's network, torch.optim.SGD with the recipe's
  lr / momentum / nesterov / weight decay, StepLR(step_size, gamma) stepped per epoch
  when step_size > 0 (or OneCycleLR stepped per batch for `schedule="onecycle"`), the recipe's batch size, a fresh shuffle every epoch with the last
  partial batch kept, torchvision RandomRotation's geometry per image (a uniform angle in
  [-r, r] per image, nearest, fill 0; implemented with affine_grid + grid_sample since
  torchvision is not available, batched on the main thread rather than in DataLoader
  worker processes over PIL images), ToTensor scaling and Normalize(0.1307, 0.3081);
  torch.set_num_threads(cores). The PyTorch process never imports JAX.

Both use the recipe `python -m jaxmnist.train --arch ARCH [--variant V]` would use; `--train-examples` trains
both on the same fixed random subset (a smoke setting: no threshold will be reached).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (stdlib + numpy only: the torch worker must not import jax)

IMPLS = ("jaxmnist", "torch")
EVAL_BATCH = 200  # jaxmnist.train.step.EVAL_BATCH (this module stays jax-free; a test checks they agree)


def threshold_key(thr: float) -> str:
    return f"seconds_to_{thr:.1f}"


def first_reaching(epochs: list[dict], thr: float) -> float | None:
    """elapsed_s of the first epoch with test_accuracy >= thr (percent), else None."""
    for e in epochs:
        if e["test_accuracy"] >= thr - 1e-9:
            return e["elapsed_s"]
    return None


def summarize_run(result: dict, thresholds) -> dict:
    epochs = result.get("epochs", [])
    out = {"impl": result["impl"]}
    for thr in thresholds:
        out[threshold_key(thr)] = first_reaching(epochs, thr)
    out["final_accuracy"] = epochs[-1]["test_accuracy"] if epochs else None
    out["best_accuracy"] = max((e["test_accuracy"] for e in epochs), default=None)
    out["total_seconds"] = epochs[-1]["elapsed_s"] if epochs else None
    out["first_epoch_seconds"] = epochs[0]["elapsed_s"] if epochs else None
    out["epochs_run"] = len(epochs)
    for k in ("data_load_s", "process_s", "error", "info"):
        if k in result:
            out[k] = result[k]
    out["epochs"] = epochs
    return out


# --- workers (each runs in its own process) --------------------------------------------


def _load_data(data_dir: str | None, train_examples: int | None):
    from jaxmnist import data

    ds = data.load("mnist", data_dir, val_examples=0)
    if train_examples and train_examples < len(ds.train):
        import numpy as np

        sel = np.sort(np.random.default_rng(0).permutation(len(ds.train))[:train_examples])
        train = data.Split(ds.train.images[sel], ds.train.labels[sel])
        ds = data.Dataset(name=ds.name, train=train, val=ds.val, test=ds.test)
    return ds


def _elapsed(t_spawn: float, data_s: float) -> float:
    return time.time() - t_spawn - data_s


def jax_worker(args, recipe_dict: dict) -> dict:
    from jaxmnist import machine

    machine.tune_process()  # before jax: XLA flags, malloc options

    t = time.time()
    ds = _load_data(args.data_dir, args.train_examples)
    data_s = time.time() - t

    from jaxmnist.train import loop

    from jaxmnist.train import recipes

    recipe = recipes.Recipe(**recipe_dict)
    stamps: dict[int, float] = {}
    first_step: list[float] = []
    pattern = re.compile(r"^Epoch (\d+): Test set")
    first_pattern = re.compile(r"^first step done ([0-9.]+)s after the run started")

    def log(line: str):
        m = pattern.match(line)
        if m:
            stamps[int(m.group(1))] = _elapsed(args.spawn_time, data_s)
        m = first_pattern.match(line)
        if m:
            first_step.append(float(m.group(1)))
        print(f"[jaxmnist] {line}", flush=True)

    config = loop.RunConfig(recipe=recipe, seeds=(args.seed,), progress=False, plots=False)
    history = loop.train_and_evaluate(config, ds, log=log)
    import jax

    epochs = []
    running = None
    for rec in history:
        e = rec["epoch"]
        if e in stamps:
            running = stamps[e]
        else:  # log format changed: fall back to the record's own epoch time
            running = (running or 0.0) + rec["seconds"]
        epochs.append({"epoch": e, "test_accuracy": rec["test_accuracy"],
                       "test_loss": rec["test_loss"], "train_loss": rec["train_loss"],
                       "epoch_seconds": rec["seconds"], "train_seconds": rec.get("train_seconds"),
                       "elapsed_s": running})
    return {"impl": "jaxmnist", "data_load_s": data_s, "epochs": epochs, "seed": args.seed,
            "first_step_s": first_step[0] if first_step else None,
            "info": {"device": common.machine.devices(), "jax": jax.__version__,
                     "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                     "compile_cache": os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "true")}}


def torch_worker(args, recipe_dict: dict) -> dict:
    import torch
    import torch.nn.functional as F

    import torch_reference as tr

    t = time.time()
    ds = _load_data(args.data_dir, args.train_examples)
    data_s = time.time() - t

    r = recipe_dict
    unsupported = [f for f, plain in (("label_smoothing", 0.0), ("bn_lr", 1.0), ("ema", 0.0),
                                      ("tta_rotation", 0.0), ("rotation_warmup", 0.0)) if r.get(f, plain) != plain]
    if r.get("schedule", "step") not in ("step", "onecycle"):
        unsupported.append(f"schedule {r['schedule']}")
    if unsupported:
        raise SystemExit("the PyTorch worker trains the seeds' way (plain NLL, one lr, no "
                         f"weight average, no test-time augmentation); drop {', '.join(unsupported)}")
    torch.set_num_threads(common.n_cores())
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = tr.TORCH_ARCHS[r["arch"]]()
    opt = tr.make_optimizer(model, r["lr"], r["momentum"], r["nesterov"], r["weight_decay"])
    train_x = common.to_nchw(ds.train.images)
    train_y = torch.from_numpy(ds.train.labels.astype("int64"))
    test_x = common.torch_augment(common.to_nchw(ds.test.images), None, 0.0)
    test_y = torch.from_numpy(ds.test.labels.astype("int64"))
    n, b, rot = len(train_y), r["batch_size"], r["rotation"]
    per_batch = None  # OneCycleLR, stepped after every batch as jaxmnist's schedule is
    if r.get("schedule", "step") == "onecycle":
        per_batch = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=r["lr"], epochs=r["epochs"], steps_per_epoch=-(-n // b),
            pct_start=r["pct_start"])
    sched = (torch.optim.lr_scheduler.StepLR(opt, r["step_size"], r["gamma"])
             if r["step_size"] > 0 and per_batch is None else None)

    epochs = []
    t_epoch = time.time()
    for epoch in range(r["epochs"]):
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for s in range(0, n, b):
            idx = perm[s: s + b]
            angles = torch.empty(len(idx)).uniform_(-rot, rot, generator=gen)
            x = common.torch_augment(train_x[idx], angles, rot)
            loss = tr.train_step(model, opt, x, train_y[idx])
            if per_batch is not None:
                per_batch.step()
            loss_sum += float(loss) * len(idx)
        t_trained = time.time()
        if sched is not None:
            sched.step()
        model.eval()
        correct, test_loss = 0, 0.0
        with torch.no_grad():
            for s in range(0, len(test_y), EVAL_BATCH):
                out = model(test_x[s: s + EVAL_BATCH])
                y = test_y[s: s + EVAL_BATCH]
                test_loss += float(F.nll_loss(out, y, reduction="sum"))
                correct += int((out.argmax(1) == y).sum())
        now = time.time()
        acc = 100.0 * correct / len(test_y)
        epochs.append({"epoch": epoch + 1, "test_accuracy": acc,
                       "test_loss": test_loss / len(test_y), "train_loss": loss_sum / n,
                       "epoch_seconds": now - t_epoch, "train_seconds": t_trained - t_epoch,
                       "elapsed_s": now - args.spawn_time - data_s})
        t_epoch = now
        print(f"[torch] Epoch {epoch + 1}: Test set: Average loss: {test_loss / len(test_y):.4f}, "
              f"Accuracy: {correct}/{len(test_y)} ({acc:.2f}%)  "
              f"{epochs[-1]['elapsed_s']:.1f}s since start", flush=True)
        if args.stop_at is not None and acc >= args.stop_at - 1e-9:
            break
    return {"impl": "torch", "data_load_s": data_s, "epochs": epochs,
            "info": {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}}


# --- parent ------------------------------------------------------------------------------


def launch(impl: str, args, recipe_dict: dict, stop_at: float | None = None) -> dict:
    """Runs one worker process; returns its result (or an error record)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(os.environ)
        if impl == "torch":
            env["JAXMNIST_TUNE"] = "0"  # importing jaxmnist.data must not start JAX
        elif args.no_compile_cache:
            env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl,
               "--recipe-json", json.dumps(recipe_dict), "--result", out,
               "--seed", str(args.seed)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        if args.train_examples:
            cmd += ["--train-examples", str(args.train_examples)]
        if stop_at is not None:
            cmd += ["--stop-at", repr(stop_at)]
        common.log(f"--- {impl}: {recipe_dict['arch']}, {recipe_dict['epochs']} epochs")
        t_spawn = time.time()
        proc = subprocess.run(cmd + ["--spawn-time", repr(t_spawn)], env=env)
        process_s = time.time() - t_spawn
        if proc.returncode != 0 or not os.path.exists(out):
            return {"impl": impl, "epochs": [], "process_s": process_s,
                    "error": f"worker exited with status {proc.returncode}"}
        with open(out) as f:
            result = json.load(f)
        result["process_s"] = process_s
        return result


def table(report: dict) -> str:
    thresholds = report["config"]["thresholds"]
    headers = ["impl", *(f"s to {t:.1f}%" for t in thresholds), "final acc %", "best acc %",
               "epochs", "1st epoch s", "total s"]
    rows = []
    for r in report["results"]:
        if r.get("error"):
            rows.append([r["impl"], *(["-"] * (len(headers) - 2)), f"failed: {r['error']}"])
            continue
        rows.append([
            r["impl"],
            *(common.fmt_num(r[threshold_key(t)], 1) if r[threshold_key(t)] is not None
              else "never" for t in thresholds),
            common.fmt_num(r["final_accuracy"], 2), common.fmt_num(r["best_accuracy"], 2),
            r["epochs_run"], common.fmt_num(r["first_epoch_seconds"], 1),
            common.fmt_num(r["total_seconds"], 1),
        ])
    m, c = report["machine"], report["config"]
    lines = [
        common.markdown_table(headers, rows, [False] + [True] * (len(headers) - 1)), "",
        f"{c['arch']}, recipe {c['recipe']}, {c['train_examples']} training examples, "
        f"seed {c['seed']}. Machine: {common.cpu_label(m)}, {m['cores']} cores; python "
        f"{m['versions']['python']}, jax {m['versions']['jax']}, torch {m['versions']['torch']}; "
        f"git {m['git']}; {m['date']}; load average {m['load_average']}.",
        "* Seconds from process launch, with data loading subtracted (both start from the same "
        "uint8 arrays in memory); imports, compilation and per-epoch test evaluation count.",
        "* PyTorch: per-image random rotation with affine_grid + grid_sample (nearest, fill 0, "
        "torchvision/PIL geometry), batched on the main thread (no DataLoader workers).",
        "* 'final acc' is the last epoch's; 'best acc' is the best epoch's, shown only for "
        "reference (selecting it would use the test set).",
    ]
    warning = common.busy_warning(m["load_average"], m["cores"])
    if warning:
        lines.append(f"* WARNING: {warning}.")
    return "\n".join(lines)


# --- speedrun: N seeds of one recipe ------------------------------------------------------


def run_timing(result: dict) -> dict:
    """One run's clock, data loading excluded: train_s sums each epoch's training (evaluation
    not included); compile_s is the first epoch's training time beyond the median of the
    later epochs' (the step's compilation, and the partial last batch's, happen in epoch 1),
    so train_s_excl_compile = train_s - compile_s; eval_s the per-epoch test evaluations."""
    epochs = result.get("epochs", [])
    train = [e.get("train_seconds") if e.get("train_seconds") is not None else e["epoch_seconds"]
             for e in epochs]
    out = {"train_s": sum(train) if train else None,
           "eval_s": sum(e["epoch_seconds"] for e in epochs) - sum(train) if train else None}
    if len(train) >= 2:
        later = statistics.median(train[1:])
        out["compile_s"] = max(train[0] - later, 0.0)
        out["train_s_excl_compile"] = out["train_s"] - out["compile_s"]
    else:
        out["compile_s"] = out["train_s_excl_compile"] = None
    return out


def speedrun_summary(finals: list[float], target: float) -> dict:
    """mean / std / min / max of the final-epoch accuracies, and a one-sided one-sample
    t-test of H1: mean >= target (H0: mean < target; p small = the mean clears it)."""
    import numpy as np
    from scipy import stats

    a = np.asarray(finals, dtype=float)
    out = {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
           "min": float(a.min()), "max": float(a.max()),
           "at_or_above_target": int((a >= target - 1e-9).sum()), "target": target}
    if a.size > 1 and out["std"] > 0:
        t = stats.ttest_1samp(a, target, alternative="greater")
        out["t"], out["p_mean_above_target"] = float(t.statistic), float(t.pvalue)
    else:
        out["t"] = out["p_mean_above_target"] = None
    return out


def speedrun_table(report: dict) -> str:
    headers = ["impl", "recipe", "seed", "epochs", "final acc %", "train s", "s/epoch", "compile s",
               "train s excl. compile", "eval s", "first step s", "process s", "s to target"]
    rows = []
    target_key = threshold_key(report["summary"]["target"])
    for r in report["runs"]:
        if r.get("error"):
            rows.append([r["impl"], r.get("variant", "-"), r.get("seed", "-"), f"failed: {r['error']}",
                         *(["-"] * 9)])
            continue
        per_epoch = r["train_s"] / r["epochs_run"] if r.get("train_s") and r.get("epochs_run") else None
        rows.append([r["impl"], r.get("variant", "-"), r.get("seed", "-"), r.get("epochs_run", "-"),
                     common.fmt_num(r["final_accuracy"], 2),
                     common.fmt_num(r["train_s"], 1), common.fmt_num(per_epoch, 1),
                     common.fmt_num(r["compile_s"], 1),
                     common.fmt_num(r["train_s_excl_compile"], 1), common.fmt_num(r["eval_s"], 1),
                     common.fmt_num(r.get("first_step_s"), 1), common.fmt_num(r.get("process_s"), 1),
                     common.fmt_num(r.get(target_key), 1)])
    sm, c, m = report["summary"], report["config"], report["machine"]
    p = sm.get("p_mean_above_target")
    lines = [
        common.markdown_table(headers, rows, [False, False] + [True] * (len(headers) - 2)), "",
        f"jaxmnist over {sm['n']} seeds: final-epoch test accuracy {sm['mean']:.2f} +- {sm['std']:.2f}% "
        f"(min {sm['min']:.2f}, max {sm['max']:.2f}; {sm['at_or_above_target']}/{sm['n']} at >= "
        f"{sm['target']:.2f}); one-sided t-test of mean >= {sm['target']:.2f}: "
        + (f"t = {sm['t']:.2f}, p = {p:.3g}" if p is not None else "n/a")
        + f". Training seconds per run: mean {sm['train_s_mean']:.1f} (excl. compile "
        f"{common.fmt_num(sm.get('train_s_excl_compile_mean'), 1)}).",
        f"{c['arch']}, recipe {c['recipe']}, {c['train_examples']} training examples. Machine: "
        f"{common.cpu_label(m)}, {m['cores']} cores; python {m['versions']['python']}, jax "
        f"{m['versions']['jax']}, torch {m['versions']['torch']}; git {m['git']}; {m['date']}; "
        f"load average {m['load_average']}.",
        "* Each run is its own process, one after another; data loading is excluded. 'train s' "
        "sums the epochs' training time (first-epoch compilation included, evaluation not); "
        "'compile s' is the first epoch's training time beyond the later epochs' median.",
        "* Accuracies are the final epoch's, never the best epoch's.",
        "* The PyTorch row is the peer: the seed document's recipe, seed 0 only, stopped at its "
        "first epoch at >= the target; 's to target' is its process time (data loading excluded) "
        "to that epoch's evaluation, the best case for it. For jaxmnist that column is the "
        "first epoch at the target, which a speedrun does not stop at: its accuracy is the final epoch's.",
    ]
    warning = common.busy_warning(m["load_average"], m["cores"])
    if warning:
        lines.append(f"* WARNING: {warning}.")
    return "\n".join(lines)


def speedrun_main(args, machine: dict, recipe_dict: dict, peer_recipe: dict) -> dict:
    runs = []
    for seed in range(args.speedrun):
        if "jaxmnist" not in args.impls:
            break
        args.seed = seed
        raw = launch("jaxmnist", args, recipe_dict)
        row = summarize_run(raw, [args.target])
        row.update(seed=seed, variant=recipe_dict["variant"], first_step_s=raw.get("first_step_s"),
                   **run_timing(raw))
        runs.append(row)
    if "torch" in args.impls:
        args.seed = 0
        raw = launch("torch", args, peer_recipe, stop_at=args.target)
        row = summarize_run(raw, [args.target])
        row.update(seed=0, variant=peer_recipe["variant"], **run_timing(raw))
        runs.append(row)
    ok = [r for r in runs if r["impl"] == "jaxmnist" and not r.get("error")]
    summary = speedrun_summary([r["final_accuracy"] for r in ok], args.target) if ok else {
        "n": 0, "mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"),
        "at_or_above_target": 0, "target": args.target, "t": None, "p_mean_above_target": None}
    summary["train_s_mean"] = (sum(r["train_s"] for r in ok) / len(ok)) if ok else float("nan")
    excl = [r["train_s_excl_compile"] for r in ok if r.get("train_s_excl_compile") is not None]
    summary["train_s_excl_compile_mean"] = sum(excl) / len(excl) if excl else None
    machine["load_average_after"] = common.load_average()
    report = {
        "machine": machine,
        "config": {"mode": "speedrun", "arch": args.arch, "variant": args.variant, "recipe": recipe_dict,
                   "peer_recipe": peer_recipe,
                   "seeds": list(range(args.speedrun)), "train_examples": args.train_examples or 60000,
                   "test_examples": 10000, "target": args.target, "data_dir": args.data_dir,
                   "compile_cache": not args.no_compile_cache},
        "summary": summary,
        "runs": runs,
    }
    return common.publish(report, speedrun_table(report), args.json)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="gap8k")
    p.add_argument("--variant", default=None,
                   help="recipe variant: seed, tuned, speed where the arch has one "
                        "(default: the trainer's default for the arch)")
    p.add_argument("--speedrun", type=int, metavar="N", default=None,
                   help="speedrun mode: N seeds (0..N-1) of the recipe, each in its own process, "
                        "final-epoch accuracy per seed, mean/std/min, a one-sided t-test of "
                        "mean >= --target, training seconds per run (compile apart); plus "
                        "PyTorch's seed 0 as the peer row")
    p.add_argument("--target", type=float, default=99.4, help="speedrun's accuracy target (%%)")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="cap on epochs (StepLR depends only on the epoch, so a capped run "
                        "is the first epochs of the full one)")
    p.add_argument("--train-examples", type=int, default=None,
                   help="train on a fixed random subset of this size (smoke runs)")
    p.add_argument("--data-dir", default=None,
                   help="MNIST IDX folder (default $JAXMNIST_DATA_DIR, else "
                        "../shared/datasets/mnist beside the repo, else a tfds download)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    p.add_argument("--thresholds", nargs="+", type=float, default=[99.0, 99.4])
    p.add_argument("--no-compile-cache", action="store_true",
                   help="jaxmnist process without jax's persistent compilation cache "
                        "(counts a cold compile)")
    p.add_argument("--json", metavar="PATH")
    # internal: worker mode
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--recipe-json", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--spawn-time", type=float, help=argparse.SUPPRESS)
    p.add_argument("--stop-at", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("epochs", "max_epochs", "train_examples", "speedrun"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def worker_main(args) -> None:
    recipe = json.loads(args.recipe_json)
    fn = jax_worker if args.worker == "jaxmnist" else torch_worker
    result = fn(args, recipe)
    common.write_json(args.result, result)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return None
    args.data_dir = args.data_dir or common.default_data_dir()
    machine = common.machine_info(with_jax=False)  # the parent never starts JAX

    # The recipe comes from jaxmnist (importing it imports jax, in this idle parent only).
    from jaxmnist.train import recipes

    recipe = recipes.variant(args.arch, args.variant)
    epochs = args.epochs or recipe.epochs
    if args.max_epochs:
        epochs = min(epochs, args.max_epochs)
    recipe = recipe.replace(epochs=epochs)
    recipe_dict = recipe.to_dict()
    if args.speedrun:
        return speedrun_main(args, machine, recipe_dict, recipes.variant(args.arch, "seed").to_dict())

    raw = [launch(impl, args, recipe_dict) for impl in args.impls]
    results = [summarize_run(r, args.thresholds) for r in raw]
    machine["load_average_after"] = common.load_average()
    for r in raw:  # the parent never starts JAX: take JAX's side from its worker
        info = r.get("info", {})
        if info.get("device"):
            machine["device"] = info["device"]
            machine["XLA_FLAGS"] = info.get("XLA_FLAGS", "")
    report = {
        "machine": machine,
        "config": {"arch": args.arch, "recipe": recipe_dict, "seed": args.seed,
                   "train_examples": args.train_examples or 60000, "test_examples": 10000,
                   "thresholds": args.thresholds, "data_dir": args.data_dir,
                   "compile_cache": not args.no_compile_cache},
        "results": results,
    }
    return common.publish(report, table(report), args.json)


if __name__ == "__main__":
    from jaxmnist import machine

    machine.use_huge_pages()  # both trainers' processes inherit it
    main()
