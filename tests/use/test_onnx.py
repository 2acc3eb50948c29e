"""ONNX export: for all five archs onnxruntime computes the JAX network's log-probabilities
(1e-5 on the whole test set, the same class for all 10,000), the graph passes
onnx.checker, both input layouts work, and the file runs where only onnxruntime and
numpy are installed."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cases import slow
from jaxmnist import nets
from jaxmnist.data import augment
from jaxmnist.use import export, onnx_graph

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MEAN, STD = 0.1307, 0.3081


def realistic_variables(arch, images):
    """Initial weights with BatchNorm running statistics of real images (20 train-mode
    passes at momentum 0.1), so eval mode normalises as a trained network does."""
    net = nets.Net(nets.spec_of(arch, dropout=0.0))
    v = nets.init_variables(net, jax.random.PRNGKey(7))
    x = augment.normalize(images[:512], MEAN, STD)
    step = jax.jit(lambda v: net.apply(v, x, train=True, mutable=["batch_stats"])[1])
    for _ in range(20):
        v = {"params": v["params"], **step(v)}
    return jax.tree_util.tree_map(np.asarray, v)


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("arch", [a if a == "gap8k" else slow(a) for a in nets.ARCHS])
def test_onnxruntime_equals_the_jax_network_on_the_test_set(arch, mnist_test):
    images = mnist_test.images
    v = realistic_variables(arch, images)
    apply = jax.jit(lambda x: nets.Net(nets.spec_of(arch)).apply(
        v, augment.normalize(x, MEAN, STD), train=False))
    want = np.concatenate([np.asarray(apply(images[i:i + 1000])) for i in range(0, 10_000, 1000)])
    graph = onnx_graph.build(nets.spec_of(arch), v, MEAN, STD)
    onnx.checker.check_model(graph, full_check=True)
    got = session(graph).run(None, {"images": images})[0]
    assert got.shape == (10_000, 10)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    nchw = session(onnx_graph.build(nets.spec_of(arch), v, MEAN, STD, layout="nchw"))
    np.testing.assert_array_equal(nchw.run(None, {"images": images[:100].transpose(0, 3, 1, 2)})[0],
                                  got[:100])


@pytest.mark.xdist_group("trained_model")
def test_export_cli_writes_an_onnx_file_of_the_trained_model(trained_workdir, mnist_test, tmp_path):
    from jaxmnist.use import inference

    out = tmp_path / "model.onnx"
    export.main(["--workdir", trained_workdir, "--out", str(out), "--format", "onnx"])
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["format"] == "onnx/opset17" and info["input"]["shape"] == ["N", 28, 28, 1]
    model = inference.load(trained_workdir, lowering="plain")
    want = model.log_probs(mnist_test.images)
    got = session(onnx.load(str(out))).run(None, {"images": mnist_test.images})[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_a_recipe_with_test_time_rotations_is_refused_in_one_line():
    class Model:  # what from_model reads of a restored checkpoint
        recipe = type("R", (), {"tta_rotation": 5.0, "arch": "gap8k"})()

    with pytest.raises(ValueError, match="test-time rotations"):
        onnx_graph.from_model(Model())


@pytest.mark.slow
def test_the_file_runs_with_onnxruntime_and_numpy_alone(mnist_test, tmp_path):
    """A fresh venv with only onnxruntime and numpy (from pip's cache or the registry)."""
    arch = "gap8k"
    v = realistic_variables(arch, mnist_test.images)
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_graph.build(nets.spec_of(arch), v, MEAN, STD).SerializeToString())
    np.save(tmp_path / "x.npy", mnist_test.images[:50])
    want = session(onnx.load(str(path))).run(None, {"images": mnist_test.images[:50]})[0]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           f"onnxruntime=={ort.__version__}", f"numpy=={np.__version__}"]
    subprocess.run(pip, check=True, timeout=600)
    script = textwrap.dedent(f"""
        import sys, numpy as np, onnxruntime as ort
        s = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        np.save({str(tmp_path / 'out.npy')!r}, s.run(None, {{"images": np.load({str(tmp_path / 'x.npy')!r})}})[0])
        heavy = [m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "jaxmnist", "onnx", "torch")]
        assert not heavy, heavy
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    subprocess.run([str(venv / "bin" / "python"), "-c", script], check=True, env=env, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), want)
