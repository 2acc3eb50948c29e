"""`python -m jaxmnist.train --arch gap8k`: train one seed architecture with its recipe.

Every recipe field is a flag (defaults come from the arch's recipe), so a run is
described completely by its command line and its workdir's identity (`jaxmnist.rundir`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from jaxmnist import cli
from jaxmnist.nets import lowering as lowering_lib
from jaxmnist.train import parallel

_NOT_FLAGS = ("arch", "variant")


def _recipe_flags(parser: argparse.ArgumentParser) -> None:
    from jaxmnist.train.recipes import Recipe

    group = parser.add_argument_group("recipe overrides (default: the arch's seed recipe)")
    for field in dataclasses.fields(Recipe):
        if field.name in _NOT_FLAGS:
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str, "float | None": float}[str(field.type)]
            group.add_argument(flag, type=kind, default=None)


def parse_args(argv=None) -> argparse.Namespace:
    from jaxmnist.nets import ARCHS
    from jaxmnist.train.recipes import VARIANTS

    parser = argparse.ArgumentParser(prog="python -m jaxmnist.train", description=__doc__)
    parser.add_argument("--arch", required=True, help=f"one of: {', '.join(ARCHS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="train K models at once, seeds SEED..SEED+K-1 (one jitted step; "
                             "on several devices the models are split over them)")
    parser.add_argument("--variant", default=None, choices=VARIANTS,
                        help="recipe variant: seed (the seed document's recipe) or tuned (improved "
                             "within the seed's constraints, chosen on validation; see recipes.py). "
                             "Default: tuned where the arch has one, else seed")
    parser.add_argument("--workdir", default=None, help="default: runs/ARCH-tuned-seedS (runs/ARCH-seedS with --variant seed or for fc16k; seedsS-E for --seeds K)")
    cli.add_data_args(parser)
    parser.add_argument("--train-examples", type=int, default=None,
                        help="train on the first N training examples only (quick runs)")
    parser.add_argument("--val-examples", type=int, default=0,
                        help="hold out N training examples for model selection (default 0: the "
                             "seeds train on all 60k; the best checkpoint needs a validation split)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs at the end")
    lowering_lib.add_arguments(parser)
    parallel.add_arguments(parser)
    cli.add_common_args(parser)
    _recipe_flags(parser)
    return parser.parse_args(argv)


def recipe_from_args(args: argparse.Namespace):
    from jaxmnist.train.recipes import variant

    recipe = variant(args.arch, args.variant)
    args.variant = recipe.variant
    changes = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(recipe)
        if f.name not in _NOT_FLAGS and getattr(args, f.name, None) is not None
    }
    return recipe.replace(**changes)


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    recipe = recipe_from_args(args)
    recipe.validate()
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    parallel.parse_devices(args.devices)
    parallel.initialize(args)  # before anything touches a device
    say = parallel.primary_print()
    if recipe.variant != "seed":
        say(f"recipe variant {recipe.variant!r} (chosen on validation, see jaxmnist/train/recipes.py); "
            f"the seed document's own: --variant seed")
    suffix = "" if args.variant == "seed" else f"-{args.variant}"
    seeds = tuple(range(args.seed, args.seed + args.seeds))
    which = f"seed{args.seed}" if len(seeds) == 1 else f"seeds{seeds[0]}-{seeds[-1]}"
    workdir = args.workdir or os.path.join("runs", f"{args.arch}{suffix}-{which}")
    say(f"recipe: {json.dumps(recipe.to_dict())}")
    t0 = time.perf_counter()
    data = cli.load_data(args.dataset, args.data_dir, args.val_examples, args.train_examples)
    say(f"data: {args.dataset} train {len(data.train)}, val {len(data.val)}, test {len(data.test)} "
        f"({time.perf_counter() - t0:.2f}s)")

    from jaxmnist.train import loop

    config = loop.RunConfig(
        recipe=recipe,
        seeds=seeds,
        workdir=workdir,
        dataset=args.dataset,
        progress=not args.no_progress,
        plots=not args.no_plots,
        lowering=args.lowering,
        steps_per_call=args.steps_per_call,
        devices=args.devices,
    )
    history = loop.train_and_evaluate(config, data, log=say)
    for i, seed in enumerate(seeds):
        say(_summary(history, i if len(seeds) > 1 else None, f"[seed {seed}] " if len(seeds) > 1 else ""))
    say(f"workdir: {workdir}  wall time {time.perf_counter() - t0:.1f}s")


def _summary(history: list[dict], model: int | None, tag: str) -> str:
    """The final line for one model: final-epoch test accuracy first, best epochs labelled."""
    def get(r, key):
        return r[key] if model is None else r[key][model]

    final = history[-1]
    summary = (f"{tag}final (epoch {final['epoch']}): test accuracy {get(final, 'test_accuracy'):.2f}%, "
               f"best test epoch {max(get(r, 'test_accuracy') for r in history):.2f}% (for comparison "
               f"with the seeds only; never used for selection)")
    if "val_accuracy" in final:
        best = max(history, key=lambda r: (get(r, "val_accuracy"), -r["epoch"]))
        summary += (f"; best validation epoch {best['epoch']} "
                    f"(val {get(best, 'val_accuracy'):.2f}%, test {get(best, 'test_accuracy'):.2f}%)")
    return summary
