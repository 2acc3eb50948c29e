"""One prepared command for an accelerator: what the plain lowering does on a GPU or TPU.

    python benchmarks/accelerator.py --json accel.json          # about 6-8 minutes on one GPU
    python benchmarks/accelerator.py --tiny --json accel.json   # seconds, on CPU (the test suite)

In order, each part bounded so the whole fits a short lease of a machine:

1. the plain-lowering test subset (`JAXMNIST_LOWERING=plain pytest -m "lowering and not
   slow"`), its pass/fail line kept;
2. train-step throughput of the five archs (`jaxmnist.train.step.make_train_fn`, plain
   lowering, synthetic on-device data) at batch 128, 512 and 2048 with 1, 16 and 64
   steps per call, and PyTorch's step (eager and torch.compile) where torch sees a GPU;
3. K-model throughput of gap8k, K = 1, 4, 16, 64, 256 vmapped seeds in one step;
4. a 10-seed run of gap8k's speed recipe, the seeds vmapped in one process, on MNIST
   (`--data-dir` or $JAXMNIST_DATA_DIR): final-epoch test accuracy per seed and seconds.

It runs on an image that already has a CUDA JAX: `pip install --no-deps -e .` beside jax
and jaxlib 0.10 (with their CUDA plugin), flax 0.12, optax 0.2, orbax-checkpoint 0.12
and numpy; tensorflow-datasets is not needed (an IDX folder is read directly). JSON:
`machine`, `device`, `tests`, `steps` (arch, batch, steps_per_call, images_per_s, impl),
`models` (k, model_images_per_s), `speed_run` (accuracies, seconds), `seconds`.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from jaxmnist import machine  # process tuning (first: before JAX starts)

if __name__ == "__main__":
    machine.prepare_command()

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FULL = {"archs": ["fc19k", "gap7k", "fc16k", "gap8k", "gap9k"], "batches": [128, 512, 2048],
        "per_call": [1, 16, 64], "ks": [1, 4, 16, 64, 256], "seeds": 10, "seconds": 1.5}
TINY = {"archs": ["gap8k"], "batches": [32], "per_call": [1, 2], "ks": [1, 2], "seeds": 2,
        "seconds": 0.2, "train_examples": 256, "epochs": 1}
ROOT = Path(__file__).resolve().parents[1]


def run_tests(budget_s: float) -> dict:
    env = dict(os.environ, JAXMNIST_LOWERING="plain")
    t = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-m", "lowering and not slow", "-p",
                              "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=budget_s)
        last = (out.stdout.strip().splitlines() or [""])[-1]
        return {"returncode": out.returncode, "summary": last, "seconds": time.perf_counter() - t}
    except subprocess.TimeoutExpired:
        return {"returncode": None, "summary": f"stopped after {budget_s:.0f} s", "seconds": budget_s}


def timed_rate(call, images_per_call: int, seconds: float) -> float:
    """Images/s of `call()` (which returns something to block on) after one warm-up call."""
    import jax

    jax.block_until_ready(call())
    n, t = 0, time.perf_counter()
    while True:
        out = call()
        n += 1
        if n % 4 == 0 or time.perf_counter() - t > seconds:
            jax.block_until_ready(out)
            if time.perf_counter() - t > seconds:
                return n * images_per_call / (time.perf_counter() - t)


def jax_step_rate(arch: str, batch: int, per_call: int, k: int, seconds: float) -> float:
    """Model-images/s of the plain-lowering train step (K models vmapped when k > 1)."""
    import jax.numpy as jnp

    from jaxmnist.train import recipes, state as state_lib, step

    recipe = recipes.variant(arch).replace(batch_size=batch)
    rng = np.random.default_rng(0)
    n = max(4 * batch, 1024)
    images = jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, n, dtype=np.int32))
    spe = math.ceil(n / batch)
    state, keys = state_lib.init_models(recipe, tuple(range(k)), spe, "plain")
    fn = step.make_train_fn(recipe, k, "plain", per_call, steps_per_epoch=spe)
    lead = ((per_call,) if per_call > 1 else ()) + ((k,) if k > 1 else ())
    idx = jnp.asarray(rng.integers(0, n, lead + (batch,), dtype=np.int32))
    step_keys = jnp.asarray(rng.integers(0, 2**31, lead + (2,), dtype=np.uint32))
    holder = {"state": state}

    def call():
        holder["state"], metrics = fn(holder["state"], images, labels, idx, step_keys)
        return metrics

    return timed_rate(call, batch * per_call * k, seconds)


def torch_rates(arch: str, batch: int, seconds: float) -> list[dict]:
    """PyTorch's step on the GPU, eager and torch.compile; [] where torch sees none."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    import torch_reference as tr

    rows = []
    for impl in ("torch-eager", "torch-compile"):
        model = tr.TORCH_ARCHS[arch]().cuda()
        opt = tr.make_optimizer(model, 0.01)
        step = tr.train_step if impl == "torch-eager" else torch.compile(tr.train_step)
        x = torch.randn(batch, 1, 28, 28, device="cuda")
        y = torch.randint(0, 10, (batch,), device="cuda")

        def call():
            return step(model, opt, x, y)

        call()
        torch.cuda.synchronize()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            call()
            n += 1
        torch.cuda.synchronize()
        rows.append({"arch": arch, "batch": batch, "steps_per_call": 1, "impl": impl,
                     "images_per_s": n * batch / (time.perf_counter() - t)})
    return rows


def speed_run(seeds: int, data_dir: str | None, train_examples: int | None, epochs: int | None) -> dict:
    import dataclasses

    from jaxmnist import data
    from jaxmnist.train import loop, recipes

    ds = data.load("mnist", data_dir, val_examples=0)
    if train_examples:
        ds = dataclasses.replace(ds, train=ds.train.take(slice(0, train_examples)))
    recipe = recipes.variant("gap8k", "speed")
    recipe = recipe.replace(epochs=epochs) if epochs else recipe
    config = loop.RunConfig(recipe=recipe, seeds=tuple(range(seeds)), progress=False,
                            plots=False, lowering="plain")
    t = time.perf_counter()
    history = loop.train_and_evaluate(config, ds, log=lambda line: None)
    final = np.atleast_1d(history[-1]["test_accuracy"])
    return {"seeds": seeds, "epochs": recipe.epochs, "final_test_accuracy": final.tolist(),
            "mean": float(final.mean()), "seconds": time.perf_counter() - t}


def table(report: dict) -> str:
    rows = [[r["arch"], r["batch"], r["steps_per_call"], r["impl"], f"{r['images_per_s']:,.0f}"]
            for r in report["steps"]]
    rows += [["gap8k", 128, 1, f"jaxmnist-plain K={r['k']}", f"{r['model_images_per_s']:,.0f}"]
             for r in report["models"]]
    s = report["speed_run"]
    return (common.markdown_table(["arch", "batch", "steps/call", "impl", "images/s"], rows)
            + f"\n\nTests: {report['tests'].get('summary')}\nSpeed run ({s['seeds']} seeds "
            f"vmapped, {s['epochs']} epochs): mean final test {s['mean']:.2f}% in {s['seconds']:.0f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="seconds-long run of every part (CPU, tests)")
    p.add_argument("--data-dir", default=None, help="MNIST IDX folder (default $JAXMNIST_DATA_DIR)")
    p.add_argument("--test-budget", type=float, default=150.0, help="seconds for the test subset")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    import jax

    plan, start = (TINY if args.tiny else FULL), time.perf_counter()
    report = {"machine": common.machine_info(), "device": str(jax.devices()[0]),
              "tiny": args.tiny}
    report["tests"] = {"skipped": "tiny mode"} if args.tiny else run_tests(args.test_budget)
    report["steps"] = [{"arch": a, "batch": b, "steps_per_call": s, "impl": "jaxmnist-plain",
                        "images_per_s": jax_step_rate(a, b, s, 1, plan["seconds"])}
                       for a in plan["archs"] for b in plan["batches"] for s in plan["per_call"]]
    for a in plan["archs"]:
        report["steps"] += torch_rates(a, plan["batches"][0], plan["seconds"])
    report["models"] = [{"k": k, "model_images_per_s": jax_step_rate("gap8k", 128 if not args.tiny
                                                                     else 32, 1, k, plan["seconds"])}
                        for k in plan["ks"]]
    report["speed_run"] = speed_run(plan["seeds"], args.data_dir, plan.get("train_examples"),
                                    plan.get("epochs"))
    report["seconds"] = time.perf_counter() - start
    common.publish(report, table(report), args.json)
    return 0 if report["tests"].get("returncode", 0) in (0, None) else 1


if __name__ == "__main__":
    sys.exit(main())
