"""Training throughput of K models in one step (`--mode vmap`) against one model at a time.

    python benchmarks/models_per_step.py --arch gap8k --models 1 2 3 [--json out.json]

Times `jaxmnist.train.step.make_train_fn(recipe, K)`, the step `experiments/reproduce.py --mode
vmap` trains with, for each K on synthetic data, in one process: the K values take turns
(round r runs them in order, round r+1 in reverse) so that drift in machine speed hits
each alike. Reports total training images/s over all K models (median over rounds, with
min and max); K=1 is the per-seed `--mode sequential` run, so K models in one step are
not slower than K separate runs when their figure is at least K=1's.
"""

from __future__ import annotations

from jaxmnist import machine  # process tuning (first: before JAX starts)

if __name__ == "__main__":
    machine.prepare_command()

import argparse
import statistics
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import step_throughput  # noqa: E402  (its JaxTrain runner times make_train_fn)

from jaxmnist.nets import lowering as lowering_lib
from jaxmnist import nets
from jaxmnist.train import recipes


def measure(arch: str, ks: list[int], batch: int, rounds: int, images_per_repeat: int,
            variant: str | None = None, lowering: str | None = None) -> list[dict]:
    lowering = lowering_lib.resolve(lowering)
    recipe = recipes.variant(arch, variant).replace(batch_size=batch)
    images_np, labels_np = step_throughput.synthetic_data(0)
    images, labels = jax.device_put(images_np), jax.device_put(labels_np)
    runners, first_call, rates = {}, {}, {k: [] for k in ks}
    for k in ks:
        runners[k] = step_throughput.JaxTrain(recipe, images, labels,
                                              np.random.default_rng([0, k]), n_models=k,
                                              lowering=lowering)
        first_call[k] = runners[k].timed(1)
        common.log(f"{arch} K={k}: first call {first_call[k]:.1f} s")
    for r in range(rounds):
        for k in (ks if r % 2 == 0 else ks[::-1]):
            runner = runners[k]
            steps = max(2, images_per_repeat // runner.images_per_call)
            runner.timed(2)  # settle after the other K's turn
            rates[k].append(steps * runner.images_per_call / runner.timed(steps, offset=2))
    return [
        {"arch": arch, "models": k, "batch_size": batch,
         "images_per_s": statistics.median(rates[k]), "min": min(rates[k]),
         "max": max(rates[k]), "first_call_s": first_call[k]}
        for k in ks
    ]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="gap8k", choices=list(nets.ARCHS))
    p.add_argument("--variant", choices=recipes.VARIANTS, default=None)
    p.add_argument("--models", type=int, nargs="+", default=[1, 2, 3],
                   help="K values to time (default 1 2 3)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--images-per-repeat", type=int, default=3072,
                   help="training images (all models) per timed repeat")
    p.add_argument("--json", metavar="PATH")
    lowering_lib.add_arguments(p, steps_per_call=False)
    args = p.parse_args(argv)
    if any(k < 1 for k in args.models) or args.rounds < 1 or args.batch_size < 1:
        p.error("--models, --rounds and --batch-size must be positive")
    load_before = common.load_average()
    results = measure(args.arch, sorted(set(args.models)), args.batch_size, args.rounds,
                      args.images_per_repeat, args.variant, args.lowering)
    base = next((r["images_per_s"] for r in results if r["models"] == 1), None)
    rows = [[r["arch"], r["models"], common.fmt_num(r["images_per_s"]), common.fmt_num(r["min"]),
             common.fmt_num(r["max"]), f"{r['first_call_s']:.1f}",
             f"{r['images_per_s'] / base:.2f}x" if base else "-"] for r in results]
    table = common.markdown_table(
        ["arch", "K", "total images/s (median)", "min", "max", "first call s", "vs K=1"], rows)
    report = {"machine": common.machine_info(), "lowering": lowering_lib.resolve(args.lowering),
              "results": results}
    return common.publish_run(report, table, args.json, load_before)


if __name__ == "__main__":
    main()
