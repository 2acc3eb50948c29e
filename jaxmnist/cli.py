"""What the command-line entry points share: data and checkpoint flags, one-line errors
and exit codes, and quiet third-party logging.

Every main wrapped by `main_wrapper` accepts `--verbose` (taken out of argv before the
main's own parser sees it): without it, the warnings that absl, orbax, tensorflow-datasets
and JAX log on normal use (a read-only checkpoint manager, a missing GPU, ...) are
filtered to errors (`jaxmnist.messages.quiet_third_party`); with it they are shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys

from jaxmnist.messages import one_line, quiet_third_party

EXIT_USAGE = 2
EXIT_NAN = 3
VERBOSE_FLAG = "--verbose"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every CLI has (main_wrapper handles them; this lists them in --help)."""
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="show third-party libraries' warnings (filtered to errors by default)")


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's destination and says, on
    stderr, which flag to use (`const`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.const}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """--workdir and which of its checkpoints: what evaluate, predict, export and serve read."""
    parser.add_argument("--workdir", required=True, help="a training run's workdir")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--epoch", type=int, default=None,
                       help="the checkpoint of this epoch (default: the latest)")
    which.add_argument("--step", type=int, dest="epoch", action=DeprecatedAlias, const="--epoch",
                       help=argparse.SUPPRESS)
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


class MissingExtra(RuntimeError):
    """An optional dependency a command needs is not installed; the message names the extra."""


def require_extra(extra: str, *modules: str) -> None:
    """Stops with one line naming `pip install -e ".[extra]"` when any of `modules` is
    not importable (checked without importing them)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"{', '.join(missing)} not installed: this command needs the "
                           f"'{extra}' extra: pip install -e \".[{extra}]\" (in a clone) or "
                           f"pip install \"jaxmnist[{extra}]\"")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a refused run, not a bug: one line, exit 2."""
    from jaxmnist import data, nets, rundir

    return (data.DataError, rundir.RunError, nets.UnknownArch, MissingExtra, ValueError, OSError)


def main_wrapper(fn):
    """Runs a CLI main: takes `--verbose` out of argv and sets logging, then user errors
    print `error: ...` (one line) and exit 2 (3 for a NaN loss), Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapped(argv=None):
        argv = list(sys.argv[1:] if argv is None else argv)
        quiet_third_party(VERBOSE_FLAG in argv)
        argv = [a for a in argv if a != VERBOSE_FLAG]
        try:
            return fn(argv)
        except KeyboardInterrupt:
            print("\ninterrupted; rerun the same command to resume from the last checkpoint",
                  file=sys.stderr)
            sys.exit(130)
        except user_errors() as exc:
            from jaxmnist.rundir import StorageError
            from jaxmnist.train.loop import NaNLoss

            print(f"error: {one_line(exc, limit=2000)}", file=sys.stderr)
            code = EXIT_NAN if isinstance(exc, NaNLoss) else EXIT_USAGE
            if isinstance(exc, StorageError):
                # orbax's abandoned write threads would print their failures again while
                # the interpreter shuts down; every file is atomic and the lock dies with
                # the process, so nothing is lost by leaving at once
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            sys.exit(code)

    return wrapped
