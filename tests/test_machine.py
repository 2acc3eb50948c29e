"""Importing jaxmnist changes nothing in the process; the commands tune it explicitly."""

import os
import subprocess
import sys

import pytest

from jaxmnist import machine

# Imports every module of the package, then reports what the process looks like.
_IMPORT_ALL = r"""
import ctypes, json, logging, os, pkgutil, sys, warnings
def snapshot():
    import jax
    return {"env": dict(os.environ), "jax": {k: str(getattr(jax.config, k)) for k in
            ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")},
            "loggers": {n: logging.getLogger(n).level for n in ("absl", "orbax", "jax")},
            "filters": len(warnings.filters), "argv": sys.orig_argv}
before = snapshot()
import jaxmnist
for m in pkgutil.walk_packages(jaxmnist.__path__, "jaxmnist."):
    __import__(m.name)
after = snapshot()
print(json.dumps({"same": before == after, "diff": [k for k in before if before[k] != after[k]],
                  "modules": len([m for m in sys.modules if m.startswith("jaxmnist")])}))
"""

# Bytes glibc serves with mmap for a 64 MB buffer allocated after tuning (or not).
_MMAPPED = """
import ctypes, sys, numpy as np
from jaxmnist import machine
if sys.argv[1] == "tune":
    machine.tune_process()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                 "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblkhd
buf = np.ones(64 * 2**20 // 8)
print(libc.mallinfo2().hblkhd - before)
"""


def _run(code, *args) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",) and not k.startswith("JAX_")}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    return out.stdout.strip().splitlines()[-1]


def test_importing_every_module_leaves_the_process_as_it_was():
    import json

    result = json.loads(_run(_IMPORT_ALL))
    assert result["modules"] > 25
    assert result["same"], result["diff"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_tuning_keeps_large_buffers_off_mmap_and_importing_does_not():
    """Large scratch buffers (fc19k's step needs 44 MB per call) come from the heap once the
    process is tuned, so they are not mapped and zero-filled by the kernel on every step;
    merely importing jaxmnist leaves glibc's defaults, which map them."""
    assert int(_run(_MMAPPED, "import-only")) >= 64 * 2**20
    assert int(_run(_MMAPPED, "tune")) == 0


def test_xla_flags_are_set_only_where_jaxlib_knows_them(monkeypatch):
    assert machine.jaxlib_knows("--xla_cpu_experimental_ynn_fusion_type=x")
    assert not machine.jaxlib_knows("--xla_cpu_no_such_flag_in_any_jaxlib=1")
    monkeypatch.setattr(machine, "XLA_FLAGS", ("--xla_cpu_no_such_flag_in_any_jaxlib=1",))
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.environ.get("JAX_COMPILATION_CACHE_DIR", "x"))
    machine.tune_process()
    assert os.environ["XLA_FLAGS"] == ""


def test_accelerator_extras_name_the_jax_range_and_constraints_pin_inside_it():
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    jax_range = next(d for d in project["dependencies"] if re.match(r"jax[><=]", d))[len("jax"):]
    for extra in ("cuda12", "cuda13", "tpu"):
        (req,) = project["optional-dependencies"][extra]
        assert req == f"jax[{extra}]{jax_range}", (extra, req)
    pins = dict(line.split("==") for line in (root / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    low, high = re.match(r">=([\d.]+),<([\d.]+)", jax_range).groups()
    version = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert version(low) <= version(pins["jax"]) < version(high)
