"""The one way jaxmnist writes a file: atomically, so a killed process or a full disk
never leaves a half-written file behind (workdir records, dataset cache, exports, plots)."""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import BinaryIO, Callable, Union

Content = Union[str, bytes, Callable[[BinaryIO], None]]


def atomic_write(path, content: Content) -> None:
    """Writes `content` (text, bytes, or a function that writes to a binary file) to a
    temporary file beside `path`, syncs it and renames it over `path`. On any error the
    temporary file is removed, `path` keeps its old content, and the OSError propagates."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
