"""benchmarks/profile_step.py: XLA:CPU kernels found by name, perf samples attributed."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import profile_step  # noqa: E402  (imports jaxmnist before jax's backend starts)


# The kernels a process JIT-compiles are registered where profile_step reads them; one
# loaded from the persistent compilation cache (an earlier run's) is not. So the tests that
# need them run in a process with the cache off from the start.
NO_CACHE = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"

JIT_KERNELS_CHECK = """
import sys; sys.path.insert(0, sys.argv[1])
import profile_step
import jax, jax.numpy as jnp
f = jax.jit(lambda x, y: jnp.tanh(x) * y + jnp.sum(x))
args = (jnp.ones((64, 33)), jnp.full((64, 33), 2.0))
f(*args).block_until_ready()
hlo = f.lower(*args).compile().as_text()
kernels = profile_step.jit_kernels()
ours = [k for k in kernels if f"%{k.name} " in hlo or f"%{k.name}=" in hlo or f" {k.name}(" in hlo]
assert ours, [k.name for k in kernels][-10:]
index = profile_step.KernelIndex(kernels)
for k in ours:
    assert k.size > 0
    assert index.name(k.start) == k.name and index.name(k.start + k.size - 1) == k.name
assert index.name(0) is None
print("ok", len(ours))
"""


def test_jit_kernels_are_the_compiled_fusions():
    out = subprocess.run([sys.executable, "-c", JIT_KERNELS_CHECK, str(BENCH)], env=NO_CACHE,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]


def test_samples_are_classified_by_kernel_and_stack():
    index = profile_step.KernelIndex([profile_step.Kernel(0x1000, 0x100, "bitcast_add_fusion.8")])
    script = """
        1010 [unknown] (/tmp/perf-1.map)
        91c7577 xla::cpu::Worker::Parallelize

        7f00 [unknown] (/tmp/perf-1.map)

        9999 Eigen::internal::gemm_pack_rhs (libjax_common.so)
        8666 xla::cpu::ConvolutionThunk::HandleEigen2DConvolution (libjax_common.so)

        7988 Eigen::ThreadPoolTempl::MaybeGetTask (libjax_common.so)
        7987 Eigen::ThreadPoolTempl::WorkerLoop (libjax_common.so)
    """
    labels = [profile_step.classify(f, index) for f in profile_step.parse_perf_script(script)]
    assert labels == ["xla kernel: bitcast_add_fusion.8",
                      "oneDNN JIT gemm (convolution / dot arithmetic)",
                      "Eigen convolution (patch packing, blocking)",
                      "thread pool: waiting for work"]


def test_profile_needs_perf(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="perf not found"):
        profile_step.profile("gap7k", 0.1)


@pytest.mark.slow
def test_profile_of_the_train_step(tmp_path):
    """A real (short) profile where perf is installed; otherwise the clear error."""
    if shutil.which("perf") is None:
        with pytest.raises(SystemExit, match="perf not found"):
            profile_step.main(["--arch", "gap7k", "--seconds", "1"])
        return
    out = tmp_path / "profile.json"
    run = subprocess.run([sys.executable, str(BENCH / "profile_step.py"), "--arch", "gap7k",
                          "--seconds", "1", "--top", "5", "--json", str(out)],
                         env=NO_CACHE, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["steps"] > 0 and result["samples"] > 0 and result["jit_kernels"] > 10
    assert np.isclose(sum(result["shares"].values()), 1.0)
    assert any(k.startswith("xla kernel: ") for k in result["shares"])
    assert "XLA kernel (fusion)" in run.stdout
