"""`python -m jaxmnist.evaluate --workdir DIR`: score a saved checkpoint on the test set.

Rebuilds the run from its workdir's identity, restores the chosen checkpoint onto whatever device
this machine has, and reports test loss and accuracy, per-class accuracy and the
confusion matrix, without training.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import numpy as np

from jaxmnist import cli
from jaxmnist.messages import to_stderr
from jaxmnist.nets import lowering as lowering_lib


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jaxmnist.evaluate", description=__doc__)
    cli.add_checkpoint_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    cli.add_data_args(parser, dataset_default=None)
    lowering_lib.add_arguments(parser, steps_per_call=False)
    cli.add_common_args(parser)
    return parser.parse_args(argv)


def confusion_matrix(labels, predictions, classes: int = 10) -> np.ndarray:
    m = np.zeros((classes, classes), np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(predictions)), 1)
    return m



def evaluate_workdir(workdir: str, epoch: int | None = None, best: bool = False,
                     data_dir: str | None = None, dataset: str | None = None,
                     log: Callable[[str], Any] = to_stderr, lowering: str | None = None):
    """(report dict, per-model predictions) for one checkpoint of a workdir.

    Read-only: nothing in the workdir is moved or written. If the latest checkpoint is
    unreadable, the newest readable one is evaluated instead (one warning line through
    `log`); a checkpoint asked for by `epoch` or `best` that is unreadable is an error.
    """
    from jaxmnist import nets
    from jaxmnist.train import state as state_lib, step as step_lib
    from jaxmnist.use import inference

    got = inference.restore(workdir, epoch, best, log)
    recipe = got.recipe
    model = nets.build(recipe.arch, recipe.init, recipe.dropout, lowering=lowering)
    state = state_lib.for_evaluation(model, got.tree)
    data = cli.load_data(dataset or got.ident["dataset"], data_dir, val_examples=0)
    k = len(got.seeds)
    result = step_lib.evaluate(step_lib.make_eval_fn(got.recipe, k), state, data.test)
    labels = data.test.labels
    preds = result.predictions.reshape(k, -1)
    losses = np.atleast_1d(result.loss())
    models = [_model_report(seed, float(losses[i]), labels, preds[i])
              for i, seed in enumerate(got.seeds)]
    chosen = best or epoch is not None
    report = {
        "lowering": lowering_lib.resolve(lowering),
        "workdir": workdir,
        "arch": got.ident["arch"],
        "epoch": got.epoch,
        "test_examples": len(labels),
        "selected_by": ("validation" if best else "epoch" if chosen
                        else "latest readable" if got.unreadable else "latest"),
        "unreadable_epochs": got.unreadable,
        "reported_in_training": got.meta.get("test_accuracy"),
        "models": models,
    }
    return report, preds


def _model_report(seed: int, loss: float, labels, predictions) -> dict:
    cm = confusion_matrix(labels, predictions)
    return {
        "seed": seed,
        "test_loss": loss,
        "test_correct": int(np.trace(cm)),
        "test_accuracy": 100.0 * float(np.trace(cm)) / len(labels),
        "per_class_accuracy": [100.0 * float(cm[c, c]) / max(int(cm[c].sum()), 1) for c in range(10)],
        "confusion_matrix": cm.tolist(),
    }


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
    report, _ = evaluate_workdir(args.workdir, args.epoch, args.best, args.data_dir, args.dataset,
                                 lowering=args.lowering)
    if not 0 <= args.model < len(report["models"]):
        raise ValueError(f"--model must be in [0, {len(report['models'])})")
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        print(format_report(report, args.model))
