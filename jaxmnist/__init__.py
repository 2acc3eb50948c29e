"""jaxmnist: the small, fast MNIST convnets of ../shared/seeds in JAX/Flax.

Importing the package tunes the process for these tiny networks on CPU, before JAX
starts its backend (set JAXMNIST_TUNE=0 to skip, e.g. for A/B benchmarks):

* XLA flag --xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot:
  keeps XLA from routing each small convolution / dot through YNNPACK one by one, which
  measured slower for 4-32 channel convolutions on this CPU;
* glibc malloc kept from returning large buffers to the OS between steps and from
  serving them with mmap (mallopt), which otherwise costs page faults on every step for
  the heavier networks;
* a persistent compilation cache (~/.cache/jaxmnist/xla, or $JAXMNIST_CACHE_DIR/xla),
  so a second run reaches its first step without recompiling.

Entry points (train, evaluate, reproduce, the benchmarks) also call `use_huge_pages()`
first thing, which glibc only allows at process start (see there).

On a GPU or TPU host all of this is harmless: the XLA flag is read by the CPU backend
only, malloc tuning and huge pages touch host memory (the train step's arrays live on
the accelerator), and the compilation cache serves every backend.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.2.0"

_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot",)


def cache_root() -> str:
    """$JAXMNIST_CACHE_DIR, else $XDG_CACHE_HOME/jaxmnist, else ~/.cache/jaxmnist."""
    if os.environ.get("JAXMNIST_CACHE_DIR"):
        return os.environ["JAXMNIST_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxmnist")


def _tune_malloc() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # M_TRIM_THRESHOLD=-1, M_TOP_PAD=-2, M_MMAP_MAX=-4 (malloc.h)
        libc.mallopt(-1, 1024 * 1024 * 1024)
        libc.mallopt(-2, 256 * 1024 * 1024)
        # No mmap at all (raising the mmap threshold is not enough: glibc caps it at 32 MB,
        # and fc19k's step needs a 44 MB scratch buffer per call, which would otherwise be
        # mapped, zero-filled by the kernel and unmapped on every step; fc19k, 5 alternating
        # process pairs: 22.5 -> 21.5 ms per step).
        libc.mallopt(-4, 0)
    except (OSError, AttributeError):
        pass


_HUGETLB = "glibc.malloc.hugetlb=1"


def _huge_pages_possible() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(sys, "orig_argv"):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            if "[never]" in f.read():
                return False
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return name == "glibc" and tuple(int(v) for v in version.split(".")[:2]) >= (2, 35)
    except (OSError, ValueError, AttributeError):
        return False


def use_huge_pages() -> None:
    """Re-executes this program with glibc's malloc asking for transparent huge pages.

    The train step streams through dozens of 1-8 MB activation buffers; on 4 KB pages
    the TLB misses cost 15-25% of the step on the 2-core CPU this was measured on
    (fc19k, batch 128, 8 alternating process pairs: 27-34 ms -> 22-25 ms per step).
    glibc reads GLIBC_TUNABLES only at process start, hence the exec: it happens before
    anything else (call it first in `if __name__ == "__main__"` code), replaces the
    process image with the same command line, and runs at most once. No-op where glibc
    is older than 2.35, huge pages are off, or JAXMNIST_TUNE=0.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (os.environ.get("JAXMNIST_TUNE", "1") == "0" or "glibc.malloc.hugetlb" in tunables
            or not _huge_pages_possible()):
        return
    env = dict(os.environ, GLIBC_TUNABLES=f"{tunables}:{_HUGETLB}" if tunables else _HUGETLB)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, list(sys.orig_argv), env)
    except OSError:  # e.g. an interpreter that cannot be re-run: carry on without
        pass


def _tune() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in _XLA_FLAGS if f.split("=")[0] not in flags]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
    _tune_malloc()
    cache = {
        "jax_compilation_cache_dir": os.path.join(cache_root(), "xla"),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    if "jax" in sys.modules:  # too late for the environment: configure the live module
        for name, value in cache.items():
            sys.modules["jax"].config.update(name, value)
    else:  # JAX reads these when it is imported; `from jaxmnist import data` stays JAX-free
        for name, value in cache.items():
            os.environ.setdefault(name.upper(), str(value))


if os.environ.get("JAXMNIST_TUNE", "1") != "0":
    _tune()

