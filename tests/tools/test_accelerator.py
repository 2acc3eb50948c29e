"""benchmarks/accelerator.py in its tiny mode on CPU: every part runs and the JSON holds
what docs/benchmarks.md says."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_accelerator_script_tiny_run(tmp_path, mnist_dir):
    import sys

    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("accelerator", BENCH / "accelerator.py")
    accelerator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accelerator)
    out = tmp_path / "accel.json"
    assert accelerator.main(["--tiny", "--data-dir", mnist_dir, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tiny"] and report["device"].lower().startswith(("cpu", "tfrt_cpu"))
    assert {(r["steps_per_call"], r["impl"]) for r in report["steps"]} == {(1, "jaxmnist-plain"),
                                                                          (2, "jaxmnist-plain")}
    assert all(r["images_per_s"] > 0 for r in report["steps"])
    assert [r["k"] for r in report["models"]] == [1, 2]
    run = report["speed_run"]
    assert run["seeds"] == 2 and len(run["final_test_accuracy"]) == 2
    assert all(0 <= a <= 100 for a in run["final_test_accuracy"])
