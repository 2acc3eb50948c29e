"""Smoke tests of benchmarks/: they run and write well-formed results. Nothing about speed.

The benchmarks folder is not a package; its scripts are imported by path.
"""

import json
import math
import os
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import common  # noqa: E402
import epoch_vs_step  # noqa: E402
import models_per_step  # noqa: E402
import step_throughput  # noqa: E402  (imports jaxmnist before jax)
import time_to_accuracy  # noqa: E402

import jax.numpy as jnp  # noqa: E402

from jaxmnist.data import augment

MACHINE_KEYS = {"cpu", "cpu_id", "cores", "device", "versions", "XLA_FLAGS", "date"}
VERSION_KEYS = {"python", "jax", "jaxlib", "flax", "optax", "torch"}
RESULT_KEYS = {"arch", "batch_size", "impl", "images_per_s", "min", "max", "compile_s"}


def _positive_finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_step_throughput_tiny_run_writes_schema(tmp_path, capsys):
    out = tmp_path / "throughput.json"
    step_throughput.main([
        "--archs", "gap8k", "--batch-sizes", "32", "--repeats", "2", "--steps", "2",
        "--warmup", "1", "--impls", "jaxmnist", "torch-eager", "--eval-images", "1000",
        "--torch-threads", "1", "--json", str(out),
    ])
    report = json.loads(out.read_text())

    machine = report["machine"]
    assert MACHINE_KEYS <= set(machine)
    assert VERSION_KEYS <= set(machine["versions"])
    assert isinstance(machine["device"], list) and machine["device"]
    assert machine["cores"] >= 1

    results = report["results"]
    assert {r["impl"] for r in results} == {
        "jaxmnist", "torch-eager", "jaxmnist-eval", "torch-eager-eval"}
    for r in results:
        assert RESULT_KEYS <= set(r), r
        assert "error" not in r, r
        assert r["arch"] == "gap8k"
        for key in ("images_per_s", "min", "max"):
            assert _positive_finite(r[key]), (key, r)
        assert r["min"] <= r["images_per_s"] <= r["max"]
        assert math.isfinite(r["compile_s"]) and r["compile_s"] >= 0
        assert len(r["repeat_images_per_s"]) == 2  # per repeat, for paired ratios
        assert sorted(r["repeat_images_per_s"])[0] == r["min"]
        assert len(r["repeat_cross_core_ratio"]) == 2
        assert all(x is None or _positive_finite(x) for x in r["repeat_cross_core_ratio"])
    assert {r["batch_size"] for r in results if not r["impl"].endswith("-eval")} == {32}

    by_impl = {r["impl"]: r for r in results}
    for impl, ref in (("jaxmnist", "torch-eager"), ("jaxmnist-eval", "torch-eager-eval")):
        pair = (by_impl[impl]["paired_ratio_normal"], by_impl[impl]["paired_ratio_slow"])
        assert pair == step_throughput.paired_ratios(by_impl[impl], by_impl[ref])
        assert "paired_ratio_normal" not in by_impl[ref]

    printed = capsys.readouterr().out
    assert "| arch" in printed and "vs torch-eager" in printed and "torch-eager-eval" in printed
    assert "slow-phase repeats" in printed and "paired vs eager: normal / slow" in printed


def test_paired_ratios_split_by_phase():
    """Each repeat's ratio goes to the phase its probe saw; unprobed repeats count in neither."""
    rec = {"repeat_images_per_s": [10.0, 20.0, 30.0, 40.0],
           "repeat_cross_core_ratio": [1.0, 6.0, None, 1.1]}
    ref = {"repeat_images_per_s": [5.0, 20.0, 10.0, 10.0]}
    assert step_throughput.paired_ratios(rec, ref) == (3.0, 1.0)
    rec["repeat_cross_core_ratio"] = [1.0, 1.0, 1.0, 1.0]
    assert step_throughput.paired_ratios(rec, ref) == (2.5, None)


def test_cross_core_ratio():
    """Positive and finite on a machine with two CPUs to pin to; None on one CPU."""
    ratio = common.cross_core_ratio(megabytes=1, rounds=3)
    if len(os.sched_getaffinity(0)) >= 2:
        assert _positive_finite(ratio)
    else:
        assert ratio is None


def test_torch_compile_failure_is_recorded(tmp_path, monkeypatch, capsys):
    """A torch.compile that fails leaves an error row and the rest of the run intact."""

    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler (simulated)")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    out = tmp_path / "t.json"
    step_throughput.main([
        "--archs", "gap9k", "--batch-sizes", "16", "--repeats", "1", "--steps", "1",
        "--warmup", "1", "--impls", "torch-eager", "torch-compile", "--eval-images", "0",
        "--torch-threads", "1", "--in-process", "--json", str(out),  # the patch lives here
    ])
    rows = {r["impl"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"torch-eager", "torch-compile"}
    assert _positive_finite(rows["torch-eager"]["images_per_s"])
    assert "simulated" in rows["torch-compile"]["error"]
    assert rows["torch-compile"]["images_per_s"] is None
    assert "failed: RuntimeError" in capsys.readouterr().out


@pytest.mark.slow
def test_models_per_step_tiny_run(tmp_path, capsys):
    out = tmp_path / "k.json"
    models_per_step.main(["--arch", "gap7k", "--models", "1", "2", "--batch-size", "16",
                          "--rounds", "1", "--images-per-repeat", "64", "--json", str(out)])
    report = json.loads(out.read_text())
    assert MACHINE_KEYS <= set(report["machine"])
    assert [r["models"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert r["arch"] == "gap7k" and r["batch_size"] == 16
        assert all(_positive_finite(r[k]) for k in ("images_per_s", "min", "max", "first_call_s"))
    table = capsys.readouterr().out
    assert "vs K=1" in table and table.count("| gap7k") == 2


@pytest.mark.slow
def test_epoch_vs_step_tiny_run(tmp_path, capsys, mnist_dir):
    """Trainer epochs on real MNIST (a 512-image slice) against the bare step."""
    out = tmp_path / "e.json"
    epoch_vs_step.main(["--arch", "gap9k", "--epochs", "2", "--rounds", "1",
                        "--train-examples", "512", "--data-dir", mnist_dir, "--json", str(out)])
    report = json.loads(out.read_text())
    assert MACHINE_KEYS <= set(report["machine"])
    (r,) = report["results"]
    assert r["arch"] == "gap9k" and r["train_examples"] == 512 and len(r["epochs_images_per_s"]) == 1
    assert all(_positive_finite(r[k]) for k in ("epoch_images_per_s", "step_images_per_s"))
    assert r["epoch_over_step"] == pytest.approx(r["epoch_images_per_s"] / r["step_images_per_s"])
    assert "epoch / step" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        epoch_vs_step.main(["--epochs", "1"])  # the first epoch is never timed


def test_quick_is_small():
    args = step_throughput.parse_args(["--quick"])
    assert len(args.archs) * len(args.batch_sizes) <= 5
    assert args.repeats <= 2 and "torch-compile" not in args.impls
    full = step_throughput.parse_args([])
    assert full.repeats >= 5 and set(full.impls) == set(step_throughput.IMPLS)


def test_torch_rotation_matches_jaxmnist():
    """The PyTorch baselines rotate like torchvision/PIL, i.e. like jaxmnist.data.augment."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 28, 28, 1), dtype=np.uint8)
    angles = np.concatenate([[0.0, 7.0, -7.0, 35.0, -35.0, 90.0],
                             rng.uniform(-35, 35, 18)]).astype(np.float32)
    want = np.asarray(augment.rotate(jnp.asarray(images), jnp.asarray(angles)))
    got = common.torch_rotate_nearest(common.to_nchw(images).float(), torch.from_numpy(angles))
    got = got.round().to(torch.uint8).numpy().transpose(0, 2, 3, 1)
    # Only a source coordinate exactly on a pixel edge may round differently.
    assert np.mean(got != want) <= 1e-3


def test_eval_batches_match_the_trainer():
    """Both sides of both benchmarks score in the trainer's eval batches."""
    from jaxmnist.train import step
    assert time_to_accuracy.EVAL_BATCH == step_throughput.EVAL_BATCH == step.EVAL_BATCH


def test_time_to_accuracy_thresholds():
    epochs = [
        {"epoch": 1, "test_accuracy": 98.5, "elapsed_s": 10.0},
        {"epoch": 2, "test_accuracy": 99.0, "elapsed_s": 20.0},
        {"epoch": 3, "test_accuracy": 99.39, "elapsed_s": 30.0},
        {"epoch": 4, "test_accuracy": 99.2, "elapsed_s": 40.0},
    ]
    s = time_to_accuracy.summarize_run({"impl": "x", "epochs": epochs}, [99.0, 99.4])
    assert s["seconds_to_99.0"] == 20.0
    assert s["seconds_to_99.4"] is None
    assert s["final_accuracy"] == 99.2 and s["best_accuracy"] == 99.39
    assert s["total_seconds"] == 40.0 and s["epochs_run"] == 4
    failed = time_to_accuracy.summarize_run(
        {"impl": "torch", "epochs": [], "error": "boom"}, [99.0])
    assert failed["seconds_to_99.0"] is None and failed["error"] == "boom"


def test_cpu_id_names_the_cpu_model_and_isa(monkeypatch, tmp_path):
    """Result files from different machine kinds must be told apart even when the model name
    is the generic one a VM reports."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
        "model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 2\n"
        "flags\t\t: fpu avx2 fma avx512f avx512_bf16 hypervisor\n\n"
        "processor\t: 1\nvendor_id\t: OtherVendor\nflags\t\t: amx_tile\n")
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(cpuinfo if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    ident = common.cpu_id()
    assert ident == {"vendor": "GenuineIntel", "family": "6", "model": "207", "stepping": "2",
                     "isa": ["avx2", "fma", "avx512f", "avx512_bf16"]}
    label = common.cpu_label({"cpu": common.cpu_model(), "cpu_id": ident})
    assert label == "Intel(R) Xeon(R) Processor (6/207/2; avx2 fma avx512f avx512_bf16)"
    assert common.cpu_label({"cpu": "some cpu"}) == "some cpu"
