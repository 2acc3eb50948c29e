"""benchmarks/profile_step.py: XLA:CPU kernels found by name, perf samples attributed."""

import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import profile_step  # noqa: E402  (imports jaxmnist before jax's backend starts)


@pytest.fixture
def no_compilation_cache():
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    yield
    jax.config.update("jax_enable_compilation_cache", before)


def test_jit_kernels_are_the_compiled_fusions(no_compilation_cache):
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


def test_profile_of_the_train_step(capsys):
    """A real (short) profile where perf is installed; otherwise the clear error."""
    if shutil.which("perf") is None:
        with pytest.raises(SystemExit, match="perf not found"):
            profile_step.main(["--arch", "gap7k", "--seconds", "1"])
        return
    result = profile_step.main(["--arch", "gap7k", "--seconds", "1", "--top", "5"])
    assert result["steps"] > 0 and result["samples"] > 0 and result["jit_kernels"] > 10
    assert np.isclose(sum(result["shares"].values()), 1.0)
    assert any(k.startswith("xla kernel: ") for k in result["shares"])
    assert "XLA kernel (fusion)" in capsys.readouterr().out
