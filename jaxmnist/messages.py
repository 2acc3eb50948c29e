"""How jaxmnist speaks to a person: one-line errors, and third-party logs kept quiet.

`one_line` is the only formatter of an exception for a user; `quiet_logs` the only log
silencer (process-wide for a command, or scoped to a block that calls a noisy library),
and `stderr_held` keeps a failing library call's own printing from the user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator

# Loggers of the libraries jaxmnist drives; their WARNING lines are for their developers.
THIRD_PARTY_LOGGERS = ("absl", "orbax", "jax", "jax._src", "tensorflow", "tensorflow_datasets",
                       "etils", "flax", "optax", "array_record", "matplotlib", "PIL")
_THIRD_PARTY_MODULES = (r"(absl|orbax|jax|jaxlib|tensorflow|tensorflow_datasets|etils|flax|optax"
                        r"|array_record)(\.|$)")
MAX_LINE = 200


def to_stderr(message: str) -> None:
    """A log function for messages that are not the command's output."""
    import sys

    print(message, file=sys.stderr)


def one_line(exc: BaseException, limit: int = MAX_LINE) -> str:
    """An exception's message on one line (whitespace collapsed), at most `limit` chars."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def quiet_third_party(verbose: bool = False) -> None:
    """For a command's process: third-party logging at ERROR and their Python warnings
    off (TF_CPP_MIN_LOG_LEVEL=2 for C++ logging that reads it), unless verbose. Called by
    the command entry points only, never on import."""
    level = logging.WARNING if verbose else logging.ERROR
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        warnings.filterwarnings("ignore", module=_THIRD_PARTY_MODULES)


@contextlib.contextmanager
def quiet_logs(names=("absl", "orbax"), level: int = logging.CRITICAL + 1) -> Iterator[None]:
    """Within the block, the named loggers only pass records above `level`; for a call
    whose failure (or expected warning) the caller reports itself, in one line."""
    loggers = [logging.getLogger(name) for name in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, before):
            lg.setLevel(old)


@contextlib.contextmanager
def stderr_held() -> Iterator[None]:
    """Holds what anything in the process (Python or C++ threads) writes to file
    descriptor 2 within the block. On success it is written out afterwards; when the
    block raises it is dropped, unless the third-party loggers are verbose: the caller
    reports the failure in one line instead of a library's threads' pages of it."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            text = buffer.read()
            if ok or logging.getLogger("absl").level <= logging.WARNING and text:
                os.write(2, text)
