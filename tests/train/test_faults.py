"""Faults during training, as a user meets them: each interrupted or refused run, rerun
with the same command, ends identical to an uninterrupted run (metrics and weights).

The runs are `python -m jaxmnist.train` subprocesses (gap9k, 30,000 images, 3 epochs);
a full disk is a 300 KB tmpfs mounted as the workdir where this machine allows mounting
(root), and an injected orbax failure otherwise too: kill -9, SIGTERM, a full disk, a
damaged checkpoint, a second trainer on the busy workdir, a workdir that vanishes.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxmnist.rundir import RunDir, RunError

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("faults")]

TIMING = ("seconds", "train_seconds", "images_per_s")


def train_cmd(workdir, mnist_dir):
    return [sys.executable, "-m", "jaxmnist.train", "--arch", "gap9k", "--train-examples", "30000",
            "--epochs", "3", "--no-plots", "--no-progress", "--workdir", str(workdir),
            "--data-dir", mnist_dir]


def outcome(workdir) -> tuple[list, dict]:
    """(metrics without timings, the last checkpoint's weights) of a finished run."""
    from runs import params_of

    records = [{k: v for k, v in r.items() if k not in TIMING} for r in RunDir(str(workdir)).metrics()]
    tree = params_of(str(workdir))
    return records, {k: np.asarray(v) for k, v in tree["params"].items() for k, v in
                     ((f"{k}/{n}", a) for n, a in v.items())}


def assert_same_outcome(workdir, reference):
    records, weights = outcome(workdir)
    assert records == reference[0]
    assert weights.keys() == reference[1].keys()
    for key in weights:
        np.testing.assert_array_equal(weights[key], reference[1][key], err_msg=key)


@pytest.fixture(scope="module")
def reference(mnist_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("faults") / "uninterrupted"
    subprocess.run(train_cmd(workdir, mnist_dir), check=True, capture_output=True, timeout=600)
    return outcome(workdir)


def start_and_stop_in_epoch_2(workdir, mnist_dir, sig) -> int:
    proc = subprocess.Popen(train_cmd(workdir, mnist_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(3000):
            if (Path(workdir) / "checkpoints" / "1").is_dir() or proc.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # into epoch 2
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_or_terminated_run_resumes_identical(sig, reference, mnist_dir, tmp_path):
    workdir = tmp_path / "w"
    code = start_and_stop_in_epoch_2(workdir, mnist_dir, sig)
    assert code == -sig
    assert RunDir(str(workdir)).epochs() == [1]
    rerun = subprocess.run(train_cmd(workdir, mnist_dir), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stdout and "epoch 1" in rerun.stdout
    assert_same_outcome(workdir, reference)


def test_a_damaged_checkpoint_is_set_aside_and_the_rerun_ends_identical(reference, mnist_dir,
                                                                          tmp_path):
    workdir = tmp_path / "w"
    subprocess.run(train_cmd(workdir, mnist_dir), check=True, capture_output=True, timeout=600)
    for path in (workdir / "checkpoints" / "3" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: max(path.stat().st_size // 3, 1)])
    rerun = subprocess.run(train_cmd(workdir, mnist_dir), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    warned = [line for line in rerun.stdout.splitlines() if "unreadable" in line]
    assert len(warned) == 1 and "epoch 3" in warned[0] and (workdir / "corrupt").is_dir()
    assert_same_outcome(workdir, reference)


def test_a_second_trainer_is_refused_and_the_killed_first_resumes_identical(reference, mnist_dir,
                                                                            tmp_path):
    workdir = tmp_path / "w"
    first = subprocess.Popen(train_cmd(workdir, mnist_dir), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(3000):
            if (workdir / "checkpoints" / "1").is_dir() or first.poll() is not None:
                break
            time.sleep(0.05)
        second = subprocess.run(train_cmd(workdir, mnist_dir), capture_output=True, text=True,
                                timeout=300)
        assert first.poll() is None, "the first trainer ended before the second started"
        assert second.returncode == 2 and f"in use by process {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()
    rerun = subprocess.run(train_cmd(workdir, mnist_dir), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_outcome(workdir, reference)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 300 KB tmpfs (two gap9k checkpoints do not fit), or a skip where this machine
    cannot mount one (not root, no mount permission in a container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}); "
                    "test_injected_storage_failure_is_one_line covers the message")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_the_rerun_resumes_identical(small_tmpfs, reference,
                                                                  mnist_dir):
    workdir = small_tmpfs / "w"
    full = subprocess.run(train_cmd(workdir, mnist_dir), capture_output=True, text=True, timeout=600)
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not write"), full.stderr
    assert "No space left on device" in lines[0] and "rerun the same command" in lines[0]
    done = RunDir(str(workdir), read_only=True).epochs()
    # space back: the same command resumes from the last checkpoint that was written
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    rerun = subprocess.run(train_cmd(workdir, mnist_dir), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert (f"epoch {done[-1]}" in rerun.stdout) if done else "resumed" not in rerun.stdout
    assert_same_outcome(workdir, reference)


def test_injected_storage_failure_is_one_line(monkeypatch, mnist_dir, tmp_path):
    """orbax's own wording of a full disk (a ValueError around tensorstore's status) and a
    plain OSError both become the one line, and the epoch before stays the checkpoint."""
    from jaxmnist import data
    from jaxmnist.train import loop
    from runs import SMALL, small_recipe, subset

    real_save = RunDir.save
    failures = iter([ValueError('RESOURCE_EXHAUSTED: Error opening "zarr" driver: Error '
                                'writing local file "/w/d/x": [OS error 28: No space left on device]'),
                     OSError(30, "Read-only file system")])

    def save(self, epoch, tree, meta):
        if epoch == 2:
            raise next(failures)
        return real_save(self, epoch, tree, meta)

    monkeypatch.setattr(RunDir, "save", save)
    ds = subset(data.load("mnist", mnist_dir, val_examples=0), **SMALL)
    config = loop.RunConfig(recipe=small_recipe(), workdir=str(tmp_path / "w"), progress=False,
                            plots=False)
    for reason in ("No space left on device", "Read-only file system"):
        with pytest.raises(RunError) as exc:
            loop.train_and_evaluate(config, ds, log=lambda line: None)
        message = str(exc.value)
        assert "\n" not in message and reason in message, message
        assert "checkpoint of epoch 2" in message and "resumes from epoch 1" in message
        assert RunDir(str(tmp_path / "w"), read_only=True).epochs() == [1]


def test_a_workdir_that_vanishes_mid_run_is_one_line(mnist_dir, tmp_path):
    """The workdir deleted while the run trains epoch 2: one line naming the failure and
    what to do, not a traceback."""
    from jaxmnist import data
    from jaxmnist.train import loop
    from runs import SMALL, small_recipe, subset

    workdir = tmp_path / "w"
    ds = subset(data.load("mnist", mnist_dir, val_examples=0), **SMALL)
    config = loop.RunConfig(recipe=small_recipe(), workdir=str(workdir), progress=False, plots=False)

    def vanish(epoch, steps):
        if epoch == 1 and workdir.exists():
            shutil.rmtree(workdir)

    with pytest.raises(RunError) as exc:
        loop.train_and_evaluate(config, ds, log=lambda line: None, on_chunk=vanish)
    message = str(exc.value)
    assert "\n" not in message and "could not write" in message and "rerun the same command" in message
