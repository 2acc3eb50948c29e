"""What the command-line entry points share: data flags, clean errors, exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys

EXIT_USAGE = 2


def add_data_args(parser: argparse.ArgumentParser, dataset_default: str | None = "mnist") -> None:
    parser.add_argument("--dataset", default=dataset_default, help="mnist or fashion_mnist")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the four IDX files (default: $JAXMNIST_DATA_DIR, else download via tfds)",
    )


def load_data(dataset: str, data_dir: str | None, val_examples: int, train_examples: int | None = None):
    from jaxmnist import data

    ds = data.load(dataset, data_dir, val_examples=val_examples)
    if train_examples is not None:
        if train_examples <= 0:
            raise ValueError(f"--train-examples must be positive, got {train_examples}")
        train = data.Split(ds.train.images[:train_examples], ds.train.labels[:train_examples])
        ds = dataclasses.replace(ds, train=train)
    return ds


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a refused run, not a bug: one line, exit 2."""
    from jaxmnist import checkpoint, data, loop, models

    return (
        data.DataError,
        loop.RunError,
        checkpoint.CheckpointError,
        models.UnknownArch,
        ValueError,
        FileNotFoundError,
    )


def main_wrapper(fn):
    """Runs a CLI main: user errors print `error: ...` and exit 2, Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapped(argv=None):
        try:
            return fn(argv)
        except KeyboardInterrupt:
            print("\ninterrupted; rerun the same command to resume from the last checkpoint",
                  file=sys.stderr)
            sys.exit(130)
        except user_errors() as exc:
            from jaxmnist import loop

            code = 3 if isinstance(exc, loop.NaNLoss) else EXIT_USAGE
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(code)

    return wrapped
