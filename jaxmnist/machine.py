"""The machine a command runs on: its description, and the process tuning that the
command entry points and benchmarks ask for explicitly (importing jaxmnist changes
nothing in the process).

`tune_process()` (call it before JAX starts its backend; JAXMNIST_TUNE=0 skips it, e.g.
for A/B benchmarks) sets:

* the XLA flag --xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot,
  only where the installed jaxlib knows it (XLA aborts at start on a flag it does not
  know): it keeps XLA from routing each small convolution / dot through YNNPACK one by
  one, which measured slower for 4-32 channel convolutions on CPU;
* glibc malloc kept from returning large buffers to the OS between steps and from
  serving them with mmap (mallopt), which otherwise costs page faults on every step for
  the heavier networks;
* a persistent compilation cache (~/.cache/jaxmnist/xla, or $JAXMNIST_CACHE_DIR/xla),
  so a second run reaches its first step without recompiling.

`use_huge_pages()` re-executes the program with glibc asking for transparent huge pages
(see there). On a GPU or TPU host all of this is harmless: the XLA flag is read by the
CPU backend only, malloc tuning and huge pages touch host memory, and the compilation
cache serves every backend.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import mmap
import os
import platform
import sys
from typing import Any

XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot",)
_HUGETLB = "glibc.malloc.hugetlb=1"


def cache_root() -> str:
    """$JAXMNIST_CACHE_DIR, else $XDG_CACHE_HOME/jaxmnist, else ~/.cache/jaxmnist."""
    if os.environ.get("JAXMNIST_CACHE_DIR"):
        return os.environ["JAXMNIST_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxmnist")


def tuning_enabled() -> bool:
    return os.environ.get("JAXMNIST_TUNE", "1") != "0"


def tune_process() -> None:
    """XLA flags, malloc and the compilation cache for this process (module docstring)."""
    if not tuning_enabled():
        return
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in XLA_FLAGS if f.split("=")[0] not in flags and jaxlib_knows(f)]
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
    else:  # JAX reads these when it is imported
        for name, value in cache.items():
            os.environ.setdefault(name.upper(), str(value))


@functools.lru_cache(maxsize=None)
def jaxlib_knows(flag: str) -> bool:
    """Whether the installed jaxlib's XLA defines `flag` (its name is in the library)."""
    name = flag.split("=")[0].lstrip("-").encode()
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    for root in spec.submodule_search_locations:
        for path in glob.glob(os.path.join(root, "**", "*.so*"), recursive=True):
            try:
                with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    if m.find(name) >= 0:
                        return True
            except (OSError, ValueError):
                continue
    return False


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
    if not tuning_enabled() or "glibc.malloc.hugetlb" in tunables or not _huge_pages_possible():
        return
    env = dict(os.environ, GLIBC_TUNABLES=f"{tunables}:{_HUGETLB}" if tunables else _HUGETLB)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, list(sys.orig_argv), env)
    except OSError:  # e.g. an interpreter that cannot be re-run: carry on without
        pass


def prepare_command() -> None:
    """What every command entry point does first: huge pages (a re-exec), then tuning."""
    use_huge_pages()
    tune_process()


def _first_cpu_info() -> dict[str, str]:
    """The first CPU's block of /proc/cpuinfo as {key: value}; {} where there is none."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = (part.strip() for part in line.partition(":"))
                info[key] = value
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform.processor()."""
    return _first_cpu_info().get("model name") or platform.processor() or platform.machine()


# ISA extensions that decide which kernels XLA, oneDNN and Eigen can use.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8", "sve", "asimd")


def cpu_id() -> dict[str, Any]:
    """Vendor, family/model/stepping and the ISA extensions of interest, from /proc/cpuinfo.

    Two VMs can print the same model name ("Intel(R) Xeon(R) Processor") and run these
    networks at speeds 2x apart (this project's results files come from an AMD EPYC and an
    Intel Xeon model 207), so result files record which CPU they came from.
    """
    fields = {"vendor_id": "vendor", "cpu family": "family", "model": "model",
              "stepping": "stepping"}
    block = _first_cpu_info()
    info: dict[str, Any] = {name: block[key] for key, name in fields.items() if key in block}
    flags = block.get("flags", block.get("Features"))
    if flags is not None:
        present = set(flags.split())
        info["isa"] = [flag for flag in ISA_FLAGS if flag in present]
    return info


def describe(with_jax: bool = True) -> dict:
    """What a reader needs to compare two result files (`with_jax`: the device, which
    imports jax)."""
    import jaxmnist

    versions = {"python": platform.python_version(), "jaxmnist": jaxmnist.__version__}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy"):
        try:
            versions[name] = __import__(name, fromlist=["_"]).__version__
        except (ImportError, AttributeError):
            versions[name] = None
    info = {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cores": _cores(),
        "versions": versions,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "huge_pages": "glibc.malloc.hugetlb" in os.environ.get("GLIBC_TUNABLES", ""),
    }
    if with_jax:
        info["device"] = devices()
    return info


def devices() -> list[str]:
    """JAX's devices as platform:kind:id (imports jax)."""
    import jax

    return [f"{d.platform}:{d.device_kind}:{d.id}" for d in jax.devices()]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
