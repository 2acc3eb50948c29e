"""What the command-line entry points share: data flags, clean errors, exit codes, and
quiet third-party logging.

Every main wrapped by `main_wrapper` accepts `--verbose` (taken out of argv before the
main's own parser sees it): without it, the warnings that absl, orbax, tensorflow-datasets
and JAX log on normal use (a read-only checkpoint manager, a missing GPU, ...) are
filtered to errors; with it they are shown. `add_common_args(parser)` lists the flag in a
parser's --help.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import warnings

EXIT_USAGE = 2
VERBOSE_FLAG = "--verbose"
# Loggers of the libraries jaxmnist drives; their WARNING lines are for their developers.
THIRD_PARTY_LOGGERS = ("absl", "orbax", "jax", "jax._src", "tensorflow", "tensorflow_datasets",
                       "etils", "flax", "optax", "array_record", "matplotlib", "PIL")
_THIRD_PARTY_MODULES = r"(absl|orbax|jax|jaxlib|tensorflow|tensorflow_datasets|etils|flax|optax|array_record)(\.|$)"
_verbose = False


def quiet_logging(verbose: bool = False) -> None:
    """Third-party logging at ERROR and their Python warnings off, unless verbose.

    Also sets TF_CPP_MIN_LOG_LEVEL=2 for C++ logging that reads it, unless already set."""
    global _verbose
    _verbose = verbose
    level = logging.WARNING if verbose else logging.ERROR
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        warnings.filterwarnings("ignore", module=_THIRD_PARTY_MODULES)


def is_verbose() -> bool:
    return _verbose


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every CLI has (main_wrapper handles them; this lists them in --help)."""
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="show third-party libraries' warnings (filtered to errors by default)")


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """--workdir and which of its checkpoints: what evaluate, predict, export and serve read."""
    parser.add_argument("--workdir", required=True, help="a training run's workdir")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, default=None, help="epoch of the checkpoint (default: latest)")
    which.add_argument("--best", action="store_true", help="checkpoint with the best validation accuracy")
    parser.add_argument("--model", type=int, default=0, help="which model of a multi-seed run")


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
    """Runs a CLI main: takes `--verbose` out of argv and sets logging (quiet_logging),
    then user errors print `error: ...` (one line) and exit 2, Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapped(argv=None):
        argv = list(sys.argv[1:] if argv is None else argv)
        verbose = VERBOSE_FLAG in argv
        quiet_logging(verbose)
        argv = [a for a in argv if a != VERBOSE_FLAG]
        try:
            return fn(argv)
        except KeyboardInterrupt:
            print("\ninterrupted; rerun the same command to resume from the last checkpoint",
                  file=sys.stderr)
            sys.exit(130)
        except user_errors() as exc:
            from jaxmnist import loop

            code = 3 if isinstance(exc, loop.NaNLoss) else EXIT_USAGE
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            sys.exit(code)

    return wrapped
