"""What `import jaxmnist` does to the process (see jaxmnist/__init__.py)."""

import os
import subprocess
import sys

import pytest

# Bytes glibc serves with mmap for a 64 MB buffer allocated after `import jaxmnist`.
_MMAPPED = """
import ctypes, jaxmnist, numpy as np
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                 "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblkhd
buf = np.ones(64 * 2**20 // 8)
print(libc.mallinfo2().hblkhd - before)
"""


def _mmapped_bytes(tune: str) -> int:
    env = dict(os.environ, JAXMNIST_TUNE=tune)
    out = subprocess.run([sys.executable, "-c", _MMAPPED], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_import_keeps_large_buffers_off_mmap():
    """Large scratch buffers (fc19k's step needs 44 MB per call) come from the heap, so they
    are not mapped and zero-filled by the kernel on every step; untuned, glibc maps them."""
    assert _mmapped_bytes("0") >= 64 * 2**20
    assert _mmapped_bytes("1") == 0
