"""The run directory: identity and refusal, records, the lock, atomic writes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxmnist import files
from jaxmnist.rundir import LOCK_FILE, RunDir, RunError
from jaxmnist.train import recipes

IDENT = {"arch": "gap8k", "recipe": recipes.recipe_for("gap8k").to_dict(), "seeds": [0],
         "dataset": "mnist", "train_examples": 100, "val_examples": 0}


def test_a_new_workdir_is_created_and_then_recognised(tmp_path):
    wd = str(tmp_path / "w")
    first = RunDir(wd)
    assert first.open_for(IDENT) is False
    assert RunDir(wd, read_only=True).identity() == IDENT
    with pytest.raises(RunError, match=f"in use by process {os.getpid()}"):
        RunDir(wd).open_for(IDENT)  # locked, even within the process
    first.unlock()
    again = RunDir(wd)
    assert again.open_for(IDENT) is True
    again.unlock()


def test_workdir_from_before_a_new_recipe_field_still_resumes(tmp_path):
    """run.json written without a field added since (its default reproduces the old run)."""
    old = {**IDENT, "recipe": {k: v for k, v in IDENT["recipe"].items() if k != "label_smoothing"}}
    (tmp_path / "run.json").write_text(json.dumps(old))
    rd = RunDir(str(tmp_path))
    assert rd.open_for(IDENT) is True
    rd.unlock()
    changed = {**IDENT, "recipe": {**IDENT["recipe"], "label_smoothing": 0.1}}
    with pytest.raises(RunError, match="label_smoothing=0.1"):
        RunDir(str(tmp_path)).open_for(changed)


def test_a_foreign_directory_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="holds no jaxmnist run"):
        RunDir(str(tmp_path)).open_for(IDENT)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_metrics_of_an_older_run_read_lowering_for_kernels(tmp_path):
    rd = RunDir(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "kernels": "cpu"}) + "\n")
    assert rd.metrics() == [{"lowering": "cpu", "epoch": 1}]
    rd.write_metrics([{"epoch": 1, "lowering": "plain"}, {"epoch": 2, "lowering": "plain"}])
    assert [r["epoch"] for r in rd.metrics()] == [1, 2]


_HOLD = """
import sys, time
from jaxmnist.rundir import RunDir
rd = RunDir(sys.argv[1])
rd.open_for({ident})
print("locked", flush=True)
time.sleep(60)
"""


def _holder(wd):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD.format(ident=repr(IDENT)), wd],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_trainer_is_refused_naming_the_holder_and_a_killed_one_blocks_nothing(tmp_path):
    wd = str(tmp_path / "w")
    holder = _holder(wd)
    try:
        with pytest.raises(RunError) as exc:
            RunDir(wd).open_for(IDENT)
        message = str(exc.value)
        assert f"process {holder.pid}" in message and "in use" in message
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert os.path.exists(os.path.join(wd, LOCK_FILE))  # left behind by the killed process
    resumed = RunDir(wd)
    assert resumed.open_for(IDENT) is True  # and it does not block the resume
    resumed.unlock()


def test_readers_neither_lock_nor_write(tmp_path):
    wd = str(tmp_path / "w")
    holder = _holder(wd)
    try:
        before = sorted(os.listdir(wd))
        reader = RunDir(wd, read_only=True)
        assert reader.identity() == IDENT and reader.epochs() == [] and reader.metrics() == []
        assert sorted(os.listdir(wd)) == before
    finally:
        holder.kill()
        holder.wait()


def test_atomic_write_keeps_the_old_content_when_writing_fails(tmp_path):
    path = tmp_path / "f.json"
    files.atomic_write(path, "old")

    def fails(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        files.atomic_write(path, fails)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.json"]  # no temporary file left


def test_checkpoints_keep_the_last_three_and_the_best_by_validation(tmp_path):
    """Epochs 1-6 with validation accuracies peaking at epoch 2: kept are 4, 5, 6 and 2,
    and the best is chosen by validation only (epoch 5's test accuracy is the highest)."""
    import numpy as np

    rd = RunDir(str(tmp_path / "w"))
    rd.open_for(IDENT)
    val = {1: 90.0, 2: 99.0, 3: 95.0, 4: 96.0, 5: 97.0, 6: 98.0}
    for epoch, v in val.items():
        rd.save(epoch, {"w": np.full(3, epoch, np.float32)},
                {"epoch": epoch, "val_accuracy": v, "test_accuracy": 99.9 if epoch == 5 else 90.0})
    rd.unlock()
    reader = RunDir(str(tmp_path / "w"), read_only=True)
    assert reader.epochs() == [2, 4, 5, 6]
    assert reader.best_epoch() == 2
    template = {"w": np.zeros(3, np.float32)}
    epoch, tree, meta, unreadable = reader.restore_chosen(template, best=True)
    assert (epoch, float(tree["w"][0]), meta["val_accuracy"], unreadable) == (2, 2.0, 99.0, [])
    with pytest.raises(RunError, match=r"no checkpoint for epoch 3 .* kept: \[2, 4, 5, 6\]"):
        reader.restore_chosen(template, epoch=3)
