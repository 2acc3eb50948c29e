"""Whole trainer epochs against the bare train step: what the epoch loop costs on top.

    python benchmarks/epoch_vs_step.py --arch fc19k [--rounds 3] [--epochs 3] [--json out.json]

An epoch of `jaxmnist.train.loop.train_and_evaluate` does more than the step that `step_throughput.py` times:
it draws the epoch's shuffled batch plan and step keys, feeds 469 index arrays from the
host, reads the loss and accuracy back every 50 steps, and runs the last partial batch
(96 images, its own compiled shape). This times both, in one process, taking turns:
each round trains `--epochs` epochs on MNIST (--data-dir / JAXMNIST_DATA_DIR) with the
trainer's own loop and keeps the epochs after the first (which includes compilation;
the loop's `train_seconds`, so the per-epoch test evaluation is not counted), then runs
as many steps of the bare step on the benchmark's synthetic batches
(`step_throughput.JaxTrain`). Reports both in images/s and their ratio (median over
rounds); the issue's target is an epoch within 5% of the step.
"""

from __future__ import annotations

from jaxmnist import machine  # process tuning (first: before JAX starts)

if __name__ == "__main__":
    machine.prepare_command()

import argparse
import math
import statistics
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import step_throughput  # noqa: E402  (its JaxTrain runner times make_train_fn)

from jaxmnist import cli
from jaxmnist import data as data_lib
from jaxmnist.train import loop
from jaxmnist import nets
from jaxmnist.train import recipes


def measure(arch: str, ds: data_lib.Dataset, rounds: int, epochs: int,
            variant: str | None = None) -> list[dict]:
    recipe = recipes.variant(arch, variant).replace(epochs=epochs)
    n = len(ds.train)
    steps = math.ceil(n / recipe.batch_size)
    images_np, labels_np = step_throughput.synthetic_data(0)
    bare = step_throughput.JaxTrain(recipe, jax.device_put(images_np), jax.device_put(labels_np),
                                    np.random.default_rng(0))
    bare.timed(3)  # compile
    out = []
    for r in range(rounds):
        history = loop.train_and_evaluate(loop.RunConfig(recipe=recipe, seeds=(r,), progress=False, plots=False),
                           ds, log=lambda _: None)
        epoch_rates = [rec["images_per_s"] for rec in history[1:]]
        step_rate = steps * recipe.batch_size / bare.timed(steps)
        epoch_rate = statistics.median(epoch_rates)
        out.append({"arch": arch, "batch_size": recipe.batch_size, "round": r,
                    "train_examples": n, "epoch_images_per_s": epoch_rate,
                    "epochs_images_per_s": epoch_rates, "step_images_per_s": step_rate,
                    "epoch_over_step": epoch_rate / step_rate})
        common.log(f"round {r}: epochs {', '.join(f'{x:,.0f}' for x in epoch_rates)} images/s; "
                   f"bare step {step_rate:,.0f} images/s")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="fc19k", choices=list(nets.ARCHS))
    p.add_argument("--variant", choices=recipes.VARIANTS, default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs per round; the first is dropped (compilation)")
    p.add_argument("--data-dir", default=None, help="MNIST IDX folder (default $JAXMNIST_DATA_DIR)")
    p.add_argument("--train-examples", type=int, default=None,
                   help="train on the first N training images only (tests)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.epochs < 2:
        p.error("--rounds must be >= 1 and --epochs >= 2 (the first epoch is not timed)")
    try:  # the trainer's loader: --train-examples keeps the first N training images
        ds = cli.load_data("mnist", args.data_dir, val_examples=0, train_examples=args.train_examples)
    except (data_lib.DataError, ValueError) as exc:
        p.exit(2, f"epoch_vs_step.py: error: {exc}\n")
    load_before = common.load_average()
    results = measure(args.arch, ds, args.rounds, args.epochs, args.variant)
    epoch = statistics.median(r["epoch_images_per_s"] for r in results)
    step = statistics.median(r["step_images_per_s"] for r in results)
    rows = [[r["arch"], r["round"], common.fmt_num(r["epoch_images_per_s"]),
             common.fmt_num(r["step_images_per_s"]), f"{r['epoch_over_step']:.3f}"]
            for r in results]
    rows.append([results[0]["arch"], "median", common.fmt_num(epoch), common.fmt_num(step),
                 f"{epoch / step:.3f}"])
    table = common.markdown_table(
        ["arch", "round", "epoch images/s", "bare step images/s", "epoch / step"], rows)
    summary = {"epoch_images_per_s": epoch, "step_images_per_s": step, "epoch_over_step": epoch / step}
    report = {"machine": common.machine_info(), "config": vars(args), "results": results,
              "summary": summary}
    notes = [f"{len(ds.train)} training images, batch {results[0]['batch_size']}; epochs after "
             "the first of each round, median."]
    return common.publish_run(report, table, args.json, load_before, notes)


if __name__ == "__main__":
    main()
