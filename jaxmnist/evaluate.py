"""`python -m jaxmnist.evaluate --workdir DIR`: score a saved checkpoint on the test set.

Rebuilds the run from its run.json, restores the chosen checkpoint onto whatever device
this machine has, and reports test loss and accuracy, per-class accuracy and the
confusion matrix, without training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Callable

import numpy as np

from jaxmnist import cli, kernels


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jaxmnist.evaluate", description=__doc__)
    parser.add_argument("--workdir", required=True)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, default=None, help="epoch of the checkpoint (default: latest)")
    which.add_argument("--best", action="store_true", help="checkpoint with the best validation accuracy")
    parser.add_argument("--model", type=int, default=0, help="which model of a multi-seed run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    cli.add_data_args(parser, dataset_default=None)
    kernels.add_arguments(parser, steps_per_call=False)
    cli.add_common_args(parser)
    return parser.parse_args(argv)


def confusion_matrix(labels, predictions, classes: int = 10) -> np.ndarray:
    m = np.zeros((classes, classes), np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(predictions)), 1)
    return m


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def evaluate_workdir(workdir: str, step: int | None = None, best: bool = False,
                     data_dir: str | None = None, dataset: str | None = None,
                     log: Callable[[str], Any] = _stderr, kernels: str | None = None):
    """(report dict, per-model predictions) for one checkpoint of a workdir.

    Read-only: nothing in the workdir is moved or written. If the latest checkpoint is
    unreadable, the newest readable one is evaluated instead (one warning line through
    `log`); a checkpoint asked for by `step` or `best` that is unreadable is an error.
    """
    from jaxmnist import checkpoint, loop, step as step_lib
    from jaxmnist.recipes import Recipe

    run_file = os.path.join(workdir, "run.json")
    if not os.path.exists(run_file):
        raise loop.RunError(f"{workdir} holds no jaxmnist run (no run.json); pass the --workdir of a training run")
    with open(run_file) as f:
        ident = json.load(f)
    manager = checkpoint.open_manager(os.path.join(workdir, "checkpoints"), read_only=True)
    steps = sorted(manager.all_steps())
    if not steps:
        raise checkpoint.CheckpointError(f"{workdir} has no checkpoints yet")
    chosen = best or step is not None
    if best:
        step = checkpoint.best_epoch(manager)
    elif step is None:
        step = steps[-1]
    elif step not in steps:
        raise checkpoint.CheckpointError(f"no checkpoint for epoch {step} in {workdir}; kept: {steps}")

    recipe = Recipe(**ident["recipe"])
    config = loop.RunConfig(recipe=recipe, seeds=tuple(ident["seeds"]), kernels=kernels)
    steps_per_epoch = math.ceil(ident["train_examples"] / recipe.batch_size)
    state, keys = loop.init_models(config, steps_per_epoch)
    template = checkpoint.state_tree(state, keys)
    unreadable: list[tuple[int, str]] = []
    candidates = [step] if chosen else steps
    got = checkpoint.restore_newest_readable(
        manager, template, candidates, on_unreadable=lambda e, why: unreadable.append((e, why)))
    if got is None:
        epoch, reason = unreadable[0]
        others = [s for s in steps if s != epoch]
        retrain = ("rerun the training command, which sets damaged checkpoints aside and "
                   "resumes from the newest good one")
        if not chosen:
            raise checkpoint.CheckpointError(
                f"no checkpoint in {workdir} is readable (epoch {epoch}: {reason}); rerun "
                f"the training command, which sets them aside and trains afresh")
        fix = f"evaluate another with --step N (kept: {others}) or {retrain}" if others else retrain
        raise checkpoint.CheckpointError(
            f"checkpoint for epoch {epoch} in {workdir} is unreadable ({reason}); {fix}")
    step, tree, meta = got
    if unreadable:
        which = ", ".join(str(e) for e, _ in unreadable)
        log(f"warning: checkpoint for epoch {which} in {workdir} is unreadable "
            f"({unreadable[0][1]}); evaluating epoch {step}, the newest readable one")
    state = state.replace(params=tree["params"], batch_stats=tree["batch_stats"],
                          opt_state=tree["opt_state"])

    data = cli.load_data(dataset or ident["dataset"], data_dir, val_examples=0)
    result = loop.evaluate(step_lib.make_eval_fn(recipe, config.n_models), state, data.test)
    labels = data.test.labels
    preds = result.predictions.reshape(config.n_models, -1)
    losses = np.atleast_1d(result.loss())
    models = []
    for i, seed in enumerate(ident["seeds"]):
        cm = confusion_matrix(labels, preds[i])
        models.append({
            "seed": seed,
            "test_loss": float(losses[i]),
            "test_correct": int(np.trace(cm)),
            "test_accuracy": 100.0 * float(np.trace(cm)) / len(labels),
            "per_class_accuracy": [100.0 * float(cm[c, c]) / max(int(cm[c].sum()), 1) for c in range(10)],
            "confusion_matrix": cm.tolist(),
        })
    report = {
        "kernels": config.lowering,
        "workdir": workdir,
        "arch": ident["arch"],
        "epoch": step,
        "test_examples": len(labels),
        "selected_by": ("validation" if best else "step" if chosen
                        else "latest readable" if unreadable else "latest"),
        "unreadable_epochs": [e for e, _ in unreadable],
        "reported_in_training": meta.get("test_accuracy"),
        "models": models,
    }
    return report, preds


def format_report(report: dict, model: int = 0) -> str:
    lines = [f"{report['arch']} epoch {report['epoch']} ({report['selected_by']}), {report['workdir']}"]
    for m in report["models"]:
        lines.append(
            f"seed {m['seed']}: Test set: Average loss: {m['test_loss']:.4f}, Accuracy: "
            f"{m['test_correct']}/{report['test_examples']} ({m['test_accuracy']:.2f}%)"
        )
    m = report["models"][model]
    lines.append(f"per-class accuracy (seed {m['seed']}):")
    lines.append("  " + "  ".join(f"{c}:{a:6.2f}" for c, a in enumerate(m["per_class_accuracy"])))
    lines.append("confusion matrix (rows true, columns predicted):")
    lines.append("      " + "".join(f"{c:>6}" for c in range(10)))
    for c, row in enumerate(m["confusion_matrix"]):
        lines.append(f"{c:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    report, _ = evaluate_workdir(args.workdir, args.step, args.best, args.data_dir, args.dataset,
                                 kernels=args.kernels)
    if not 0 <= args.model < len(report["models"]):
        raise ValueError(f"--model must be in [0, {len(report['models'])})")
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        print(format_report(report, args.model))


if __name__ == "__main__":
    import jaxmnist

    jaxmnist.use_huge_pages()
    main()
