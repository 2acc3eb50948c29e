"""The CLIs' output on normal use and on a damaged checkpoint: no third-party WARNING
lines, every problem in one line, and evaluate never touches the workdir.

The session's trained run (tests/conftest.py, 2 epochs) is shared with the predict,
export and serve tests; the CLIs run as subprocesses, as a user runs them.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import time

import pytest

from jaxmnist import cli
from jaxmnist.train import loop

pytestmark = pytest.mark.xdist_group("trained_model")  # the trained run once, in one process


@pytest.fixture(scope="module")
def trained(trained_run):
    return trained_run


def damaged_copy(workdir, dest, epoch=2):
    """A copy of the run whose checkpoint of `epoch` has every state file truncated."""
    shutil.copytree(workdir, dest)
    for root, _, files in os.walk(os.path.join(dest, "checkpoints", str(epoch), "state")):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "r+b") as fh:
                fh.truncate(max(os.path.getsize(path) // 3, 1))
    return str(dest)


def listing(folder):
    return sorted((os.path.relpath(os.path.join(r, f), folder), os.path.getsize(os.path.join(r, f)))
                  for r, _, files in os.walk(folder) for f in files)


def evaluate(workdir, mnist_dir, *flags):
    return subprocess.run(
        [sys.executable, "-m", "jaxmnist.evaluate", "--workdir", workdir, "--data-dir", mnist_dir,
         "--json", *flags],
        capture_output=True, text=True, timeout=300)


def test_evaluate_prints_no_third_party_warnings(trained, mnist_dir):
    workdir, _, _ = trained
    proc = evaluate(workdir, mnist_dir)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    report = json.loads(proc.stdout)
    assert report["epoch"] == 2 and report["selected_by"] == "latest"


def test_evaluate_falls_back_from_a_damaged_latest_checkpoint(trained, mnist_dir, tmp_path):
    workdir = damaged_copy(trained[0], tmp_path / "run")
    before = listing(workdir)
    proc = evaluate(workdir, mnist_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("warning: checkpoint for epoch 2 ") and "unreadable" in lines[0]
    assert "evaluating epoch 1" in lines[0]
    report = json.loads(proc.stdout)
    assert report["epoch"] == 1 and report["selected_by"] == "latest readable"
    assert listing(workdir) == before  # read-only: nothing moved, written or deleted


def test_evaluate_of_a_damaged_chosen_checkpoint_is_a_one_line_error(trained, mnist_dir, tmp_path):
    workdir = damaged_copy(trained[0], tmp_path / "run")
    proc = evaluate(workdir, mnist_dir, "--epoch", "2")
    assert proc.returncode == cli.EXIT_USAGE, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: checkpoint for epoch 2 ") and "--epoch N" in lines[0]
    assert proc.stdout == ""


@pytest.mark.slow
def test_trainer_sets_a_damaged_checkpoint_aside_in_one_line(trained, tmp_path, capfd):
    workdir, ds, recipe = trained
    workdir = damaged_copy(workdir, tmp_path / "run")
    messages = []
    capfd.readouterr()
    history = loop.train_and_evaluate(loop.RunConfig(recipe=recipe, workdir=workdir, progress=False, plots=False),
                       ds, log=messages.append)
    out, err = capfd.readouterr()
    assert "Exception" not in out + err and "Traceback" not in out + err, out + err
    warned = [m for m in messages if "unreadable" in m]
    assert len(warned) == 1 and "\n" not in warned[0] and len(warned[0]) < 400, warned
    assert "epoch 2" in warned[0] and os.listdir(os.path.join(workdir, "corrupt"))
    assert [r["epoch"] for r in history] == [1, 2]


def test_main_wrapper_takes_verbose_out_of_argv():
    seen = []

    @cli.main_wrapper
    def main(argv=None):
        seen.append(argv)

    try:
        main(["--x", "1", "--verbose"])
        assert seen[-1] == ["--x", "1"]
        assert logging.getLogger("absl").level == logging.WARNING
        main(["--x", "1"])
        assert seen[-1] == ["--x", "1"]
        assert logging.getLogger("absl").level == logging.ERROR
    finally:
        logging.getLogger("absl").setLevel(logging.NOTSET)


def test_user_errors_are_one_line(capsys):
    @cli.main_wrapper
    def main(argv=None):
        raise ValueError("first\nsecond")

    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == cli.EXIT_USAGE
    assert capsys.readouterr().err == "error: first second\n"


def test_old_flag_spellings_still_work_and_say_they_are_deprecated(trained, mnist_dir):
    """--kernels (now --lowering) and --step (now --epoch) are read for this version."""
    workdir = trained[0]
    old = evaluate(workdir, mnist_dir, "--step", "1", "--kernels", "plain")
    new = evaluate(workdir, mnist_dir, "--epoch", "1", "--lowering", "plain")
    assert old.returncode == new.returncode == 0, old.stderr + new.stderr
    assert json.loads(old.stdout)["models"] == json.loads(new.stdout)["models"]
    assert json.loads(new.stdout)["epoch"] == 1 and json.loads(new.stdout)["lowering"] == "plain"
    assert "--step is deprecated; use --epoch" in old.stderr
    assert "--kernels is deprecated; use --lowering" in old.stderr
    assert "deprecated" not in new.stderr


@pytest.mark.slow
def test_a_second_trainer_on_a_busy_workdir_stops_at_once_and_a_killed_run_resumes(mnist_dir, tmp_path):
    workdir = tmp_path / "w"
    cmd = [sys.executable, "-m", "jaxmnist.train", "--arch", "gap9k", "--train-examples", "2000",
           "--epochs", "30", "--no-plots", "--no-progress", "--workdir", str(workdir),
           "--data-dir", mnist_dir]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):  # until its first checkpoint is written
            if (workdir / "checkpoints" / "1").is_dir() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert first.poll() is None, "the first trainer ended before the test could start a second"
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert second.returncode == cli.EXIT_USAGE, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"in use by process {first.pid}" in lines[0], second.stderr
    finally:
        first.kill()  # SIGKILL: the kernel drops its lock
        first.wait()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "final (epoch 30)" in resumed.stdout


@pytest.mark.parametrize("command, extra, module", [("export", "export", "flatbuffers"),
                                                    ("serve", "serve", "hypercorn")])
def test_a_missing_optional_dependency_is_one_line_naming_the_extra(command, extra, module,
                                                                     monkeypatch, capsys, tmp_path):
    import importlib
    import importlib.util

    from cases import one_line_error

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == module else real(name, *a))
    main = importlib.import_module(f"jaxmnist.use.{command}").main
    argv = ["--workdir", str(tmp_path)] + (["--out", str(tmp_path / "m")] if command == "export" else [])
    err = one_line_error(capsys, main, argv)
    assert module in err and f'pip install -e ".[{extra}]"' in err, err


@pytest.mark.slow
def test_training_and_evaluation_need_no_tfds_with_an_idx_folder(mnist_dir, tmp_path):
    """An image with JAX but without tensorflow-datasets and array-record (a CUDA
    container): the IDX folder is read directly, and train and evaluate run."""
    blocker = tmp_path / "block" / "sitecustomize.py"
    blocker.parent.mkdir()
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow_datasets', 'array_record'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import atexit, os\n"
        "atexit.register(lambda: open(os.environ['SEEN'], 'a').write("
        "str(sorted(m for m in sys.modules if m.startswith(('tensorflow', 'array_record')))) + '\\n'))\n")
    seen = tmp_path / "seen.txt"
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "JAXMNIST_CACHE_DIR": str(tmp_path / "c"),
           "SEEN": str(seen)}
    workdir = str(tmp_path / "w")
    train = subprocess.run([sys.executable, "-m", "jaxmnist.train", "--arch", "gap9k", "--epochs", "1",
                            "--train-examples", "512", "--no-plots", "--no-progress",
                            "--workdir", workdir, "--data-dir", mnist_dir],
                           env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    report = evaluate(workdir, mnist_dir)  # the blocker is not on this one's path
    assert report.returncode == 0, report.stderr
    again = subprocess.run([sys.executable, "-m", "jaxmnist.evaluate", "--workdir", workdir,
                            "--data-dir", mnist_dir, "--json"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["models"] == json.loads(report.stdout)["models"]
    assert seen.read_text().splitlines() == ["[]", "[]"]  # neither process imported them
