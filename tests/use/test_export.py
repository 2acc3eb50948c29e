"""`python -m jaxmnist.export`: the artifact computes what the checkpoint computes, without flax."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxmnist.use import export
from jaxmnist.use import exported
from jaxmnist.use import inference

pytestmark = pytest.mark.xdist_group("trained_model")  # one trained model per process


@pytest.fixture(scope="module")
def artifact(trained_workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model.jaxexport"
    try:
        export.main(["--workdir", trained_workdir, "--out", str(out)])
    except SystemExit as exc:  # pragma: no cover - main only exits on errors
        pytest.fail(f"export exited with {exc.code}")
    return str(out)


def test_sidecar_describes_the_artifact(artifact, trained_workdir):
    import hashlib

    import jax

    with open(artifact + ".json") as f:
        info = json.load(f)
    model = inference.load(trained_workdir, lowering="plain")  # what the CLI exports
    with open(artifact, "rb") as f:
        assert info["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert info["arch"] == "gap8k" and info["params"] == 7776
    assert info["normalization"]["mean"] == model.recipe.mean
    assert info["normalization"]["std"] == model.recipe.std
    assert info["test_accuracy"] == pytest.approx(model.test_accuracy) and info["test_accuracy"] > 98
    assert info["jax_version"] == jax.__version__ and set(info["platforms"]) == {"cpu", "cuda"}


def test_artifact_equals_model_in_a_process_without_flax(artifact, trained_workdir, mnist_test,
                                                         tmp_path):
    images = tmp_path / "test.npy"
    np.save(images, mnist_test.images)
    out = tmp_path / "log_probs.npy"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from jaxmnist.use.exported import load
        net = load({artifact!r})
        x = np.load({str(images)!r})
        lp = np.concatenate([net(x[:1]), net(x[1:7]), net(x[7:])])  # symbolic batch
        np.save({str(out)!r}, lp)
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("flax", "optax", "orbax", "tensorflow_datasets")
                       or m in ("jaxmnist.nets", "jaxmnist.nets.layers", "jaxmnist.use.inference"))
        print("imported:", heavy)
        assert 'flax' not in sys.modules, heavy
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported: []" in proc.stdout
    got = np.load(out)
    want = inference.load(trained_workdir, lowering="plain").log_probs(mnist_test.images)
    diff = float(np.max(np.abs(got - want)))
    print(f"exported vs checkpoint over {len(got)} test images: max |diff| of log-probs {diff:.3g}")
    assert got.shape == (10000, 10) and diff <= 1e-5
    assert np.mean(got.argmax(1) == mnist_test.labels) > 0.98


def test_damaged_or_replaced_artifact_is_refused(artifact, tmp_path):
    blob = open(artifact, "rb").read()
    bad = tmp_path / "model.jaxexport"
    bad.write_bytes(blob[:-10] + b"0123456789")
    (tmp_path / "model.jaxexport.json").write_text(open(artifact + ".json").read())
    with pytest.raises(exported.ArtifactError, match="does not match"):
        exported.load(str(bad))
    junk = tmp_path / "junk.jaxexport"
    junk.write_bytes(b"not an export")
    with pytest.raises(exported.ArtifactError, match="not a jax.export artifact"):
        exported.load(str(junk))
    net = exported.load(artifact)
    with pytest.raises(ValueError, match="uint8"):
        net(np.zeros((1, 28, 28, 1), np.float32))


def test_export_of_a_workdir_without_checkpoints(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "m.jaxexport")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "m.jaxexport").exists()
