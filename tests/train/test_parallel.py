"""Runs on several devices and hosts equal runs on one device (jaxmnist.train.parallel).

The device count is fixed when JAX starts, so the multi-device runs happen in
subprocesses with forced CPU devices (JAX_NUM_CPU_DEVICES) and this process keeps one
device. Forced CPU devices share the same two cores: nothing here measures speed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from jaxmnist.rundir import RunDir


def read_metrics(workdir):
    return RunDir(workdir).metrics()
import pytest

from jaxmnist import cli
from jaxmnist.use import inference
from jaxmnist.train import loop
from jaxmnist.train import parallel
from jaxmnist.train import recipes

HERE = Path(__file__).resolve().parent
# Float sums in another order (an all-reduce over devices instead of one reduction):
# a few steps agree to ~2e-7 on parameters of magnitude ~1.
TOL = 1e-5


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices))
    env.pop("JAXMNIST_LOWERING", None)  # the subprocesses choose their lowering explicitly
    return env


@pytest.fixture(scope="module")
def mesh_report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mesh")
    out = root / "report.json"
    subprocess.run([sys.executable, str(HERE / "mesh_worker.py"), str(out), str(root)],
                   env=_env(4), check=True, timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.xdist_group("mesh")  # one mesh_report per run, not per process
def test_data_parallel_equals_one_device(mesh_report):
    """One model, its batch split over 4 devices: the same step, with the global batch's
    BatchNorm statistics (batch_stats are compared with the parameters)."""
    r = mesh_report["data_parallel"]
    mesh = {"models": 1, "data": 4, "devices": 4, "platform": "cpu", "processes": 1}
    assert r["mesh"] == mesh_report["data_parallel_scan_mesh"] == mesh
    (first,) = r["first_step"]
    assert first["max_abs_diff"] <= TOL * first["max_abs"] and first["update"] > 1e-4, first
    assert r["log"][0] == "mesh: data=4 over 4 cpu device(s)"
    # the CPU lowering is for one device: auto falls back to plain on a mesh
    assert r["log"][1].startswith("lowering: plain on cpu")


@pytest.mark.slow
@pytest.mark.xdist_group("mesh")  # one mesh_report per run, not per process
def test_scanned_steps_equal_single_calls_on_one_and_on_four_devices(mesh_report):
    """Each call of 2 scanned steps against the 2 single calls from the same state: the
    same losses, and weights within 1% of the call's own update (a skipped, repeated or
    misfed step moves them by about half of it). Not to rounding level: see
    mesh_worker.scanned_calls_against_single_calls."""
    for name in ("scan_on_one_of_four_devices", "scan_on_four_devices"):
        r = mesh_report[name]
        assert r["calls"] == 2
        assert r["loss_rel_diff"] <= TOL, (name, r)
        assert r["max_abs_diff"] <= 0.01 * r["update"], (name, r)


@pytest.mark.slow
@pytest.mark.xdist_group("mesh")  # one mesh_report per run, not per process
def test_sweeps_over_devices_equal_models_trained_alone(mesh_report):
    """K=4 seeds on 4 devices (one model each): whole runs; K=2 on 2 x 2 (models x data):
    each model's step, its batch split over 2 devices."""
    r = mesh_report["sweep_k4"]
    assert {a: r["mesh"][a] for a in ("models", "data")} == {"models": 4, "data": 1}
    assert len(r["per_model"]) == 4
    for m, d in enumerate(r["per_model"]):
        assert d["max_abs_diff"] <= TOL * d["max_abs"], (4, m, d)
    r = mesh_report["sweep_k2"]
    assert {a: r["mesh"][a] for a in ("models", "data")} == {"models": 2, "data": 2}
    assert len(r["first_step"]) == 2
    for m, d in enumerate(r["first_step"]):
        assert d["max_abs_diff"] <= TOL * d["max_abs"] and d["update"] > 1e-4, (2, m, d)


@pytest.mark.slow
@pytest.mark.xdist_group("mesh")  # one mesh_report per run, not per process
def test_mesh_run_resumes_bitwise_on_the_same_topology(mesh_report):
    r = mesh_report["resume"]
    assert r["resumed_line"] and r["same_history"]
    assert r["max_abs_diff"] == 0.0, r


def test_bad_device_counts_are_one_line_errors():
    cases = {
        "0": "--devices must be a positive number or 'all', got 0",
        "two": "--devices must be a positive number or 'all', got 'two'",
        str(jax.device_count() + 1): f"--devices {jax.device_count() + 1}, but this machine has",
    }
    for devices, message in cases.items():
        with pytest.raises(parallel.LayoutError, match="^" + message.replace("(", r"\(")):
            parallel.make_layout(devices, 1, 128)
    assert parallel.make_layout("all", 1, 128).mesh is None  # one device: no mesh at all
    assert parallel.make_layout(1, 3, 128).mesh is None


def test_batch_that_does_not_split_is_refused(tmp_path):
    code = ("from jaxmnist.train import parallel\n"
            "try:\n    parallel.make_layout(3, 1, 128)\n"
            "except parallel.LayoutError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(4), capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip()
    assert out.startswith("batch size 128 does not split over the 3 devices of the data axis"), out
    assert len(out.splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.xdist_group("mesh")  # not beside the 4-device subprocess: 2 cores
def test_two_processes_on_localhost_match_one_process(tmp_path, mnist_dir):
    """2 processes x 2 CPU devices (gloo collectives) train through the CLI; process 0
    alone speaks and writes; the result equals one device's, and a fresh one-device
    process evaluates the checkpoint to the accuracy the run logged."""
    workdir = tmp_path / "run"
    args = ["--arch", "gap8k", "--train-examples", "64", "--batch-size", "32", "--epochs", "1",
            "--lowering", "plain", "--no-progress", "--no-plots", "--data-dir", mnist_dir,
            "--workdir", str(workdir), "--coordinator-address", f"127.0.0.1:{_free_port()}",
            "--num-processes", "2"]
    procs = [subprocess.Popen([sys.executable, "-m", "jaxmnist.train", *args, "--process-id", str(i)],
                              env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=tmp_path)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=420)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{out}"
    assert "mesh: data=4 over 4 cpu device(s) in 2 processes" in outs[0]
    assert "Epoch 1: Test set" in outs[0]
    assert "Epoch 1" not in outs[1] and "recipe:" not in outs[1], outs[1]
    records = read_metrics(str(workdir))
    assert [r["epoch"] for r in records] == [1]
    assert records[0]["mesh"]["processes"] == 2

    # the same run on one device, in this process
    recipe = recipes.variant("gap8k", "tuned").replace(epochs=1, batch_size=32)
    data = cli.load_data("mnist", mnist_dir, 0, 64)
    alone = tmp_path / "alone"
    loop.train_and_evaluate(loop.RunConfig(recipe=recipe, workdir=str(alone), lowering="plain", progress=False,
                            plots=False, devices=1), data, log=lambda *_: None)
    two = jax.tree_util.tree_leaves(inference.load(str(workdir)).variables)
    one = jax.tree_util.tree_leaves(inference.load(str(alone)).variables)
    scale = max(float(np.max(np.abs(x))) for x in one)
    assert max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(two, one)) <= TOL * scale

    evaluated = subprocess.run([sys.executable, "-m", "jaxmnist.evaluate", "--workdir", str(workdir),
                                "--data-dir", mnist_dir], env=_env(1), capture_output=True,
                               text=True, timeout=300, check=True).stdout
    correct = round(records[0]["test_accuracy"] * 100)
    assert f"Accuracy: {correct}/10000" in evaluated, evaluated
