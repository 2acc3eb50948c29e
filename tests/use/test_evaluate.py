"""`python -m jaxmnist.evaluate`: refusals in one line (the reports are checked where runs
are trained: tests/train/test_loop.py, tests/train/test_reference_runs.py)."""

import pytest

from cases import one_line_error
from jaxmnist.use import evaluate


def cli_error(capsys, argv):
    return one_line_error(capsys, evaluate.main, argv)


def test_evaluate_cli_errors(capsys, tmp_path):
    err = cli_error(capsys, ["--workdir", str(tmp_path)])
    assert "run.json" in err

