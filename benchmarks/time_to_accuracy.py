"""Wall-clock time to 99.0% and 99.4% test accuracy: jaxmnist's trainer vs the PyTorch seed
recipe, same machine, same data, same architecture and hyperparameters.

    python benchmarks/time_to_accuracy.py --arch gap8k [--epochs N] [--max-epochs N]
        [--train-examples N] [--data-dir DIR] [--seed S] [--json out.json]
    # smoke: --max-epochs 1 --train-examples 2000

Each implementation trains in its own fresh Python process, one after the other (never
concurrently), and its clock starts when the parent launches that process: interpreter
start, imports (jax + flax + optax + orbax, or torch), model construction and jit /
first-call costs all count. Loading MNIST is the one thing taken off the clock (it is
timed and subtracted, and reported as `data_load_s`): both sides start from the same
uint8 arrays in memory, from `jaxmnist.data.load('mnist', data_dir, val_examples=0)`.
Times are taken right after each epoch's evaluation on all 10,000 test images; the
reported time to a threshold is the first epoch whose test accuracy reaches it
(null if none does).

* jaxmnist: `jaxmnist.loop.run(RunConfig(recipe, progress=False, plots=False), data)`,
  i.e. the trainer without a workdir (no checkpoints are written; the PyTorch side
  writes none either).
* PyTorch: benchmarks/torch_reference.py's network, torch.optim.SGD with the recipe's
  lr / momentum / nesterov / weight decay, StepLR(step_size, gamma) stepped per epoch
  when step_size > 0, the recipe's batch size, a fresh shuffle every epoch with the last
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (stdlib + numpy only: the torch worker must not import jax)

IMPLS = ("jaxmnist", "torch")
EVAL_BATCH = 200  # jaxmnist.step.EVAL_BATCH (this module stays jax-free; a test checks they agree)


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
    import jaxmnist  # noqa: F401  # before jax: XLA flags, malloc options

    t = time.time()
    ds = _load_data(args.data_dir, args.train_examples)
    data_s = time.time() - t

    from jaxmnist import loop, recipes

    recipe = recipes.Recipe(**recipe_dict)
    stamps: dict[int, float] = {}
    pattern = re.compile(r"^Epoch (\d+): Test set")

    def log(line: str):
        m = pattern.match(line)
        if m:
            stamps[int(m.group(1))] = _elapsed(args.spawn_time, data_s)
        print(f"[jaxmnist] {line}", flush=True)

    config = loop.RunConfig(recipe=recipe, seeds=(args.seed,), progress=False, plots=False)
    history = loop.run(config, ds, log=log)
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
                       "epoch_seconds": rec["seconds"], "elapsed_s": running})
    return {"impl": "jaxmnist", "data_load_s": data_s, "epochs": epochs,
            "info": {"device": common.jax_devices(), "jax": jax.__version__,
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
    torch.set_num_threads(common.n_cores())
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = tr.TORCH_ARCHS[r["arch"]]()
    opt = tr.make_optimizer(model, r["lr"], r["momentum"], r["nesterov"], r["weight_decay"])
    sched = (torch.optim.lr_scheduler.StepLR(opt, r["step_size"], r["gamma"])
             if r["step_size"] > 0 else None)
    train_x = common.to_nchw(ds.train.images)
    train_y = torch.from_numpy(ds.train.labels.astype("int64"))
    test_x = common.torch_augment(common.to_nchw(ds.test.images), None, 0.0)
    test_y = torch.from_numpy(ds.test.labels.astype("int64"))
    n, b, rot = len(train_y), r["batch_size"], r["rotation"]

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
            loss_sum += float(loss) * len(idx)
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
                       "epoch_seconds": now - t_epoch,
                       "elapsed_s": now - args.spawn_time - data_s})
        t_epoch = now
        print(f"[torch] Epoch {epoch + 1}: Test set: Average loss: {test_loss / len(test_y):.4f}, "
              f"Accuracy: {correct}/{len(test_y)} ({acc:.2f}%)  "
              f"{epochs[-1]['elapsed_s']:.1f}s since start", flush=True)
    return {"impl": "torch", "data_load_s": data_s, "epochs": epochs,
            "info": {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}}


# --- parent ------------------------------------------------------------------------------


def launch(impl: str, args, recipe_dict: dict) -> dict:
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="gap8k")
    p.add_argument("--variant", choices=("seed", "tuned"), default=None,
                   help="recipe variant (default: the trainer's default for the arch)")
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
    args = p.parse_args(argv)
    for name in ("epochs", "max_epochs", "train_examples"):
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
    from jaxmnist import recipes

    recipe = recipes.variant(args.arch, args.variant)
    epochs = args.epochs or recipe.epochs
    if args.max_epochs:
        epochs = min(epochs, args.max_epochs)
    recipe = recipe.replace(epochs=epochs)
    recipe_dict = recipe.to_dict()

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
    import jaxmnist

    jaxmnist.use_huge_pages()  # both trainers' processes inherit it
    main()
