"""`python -m jaxmnist.evaluate`: refusals in one line (the reports are checked where runs
are trained: tests/train/test_loop.py, tests/train/test_reference_runs.py)."""

import pytest

from jaxmnist.use import evaluate


def cli_error(capsys, argv, module=evaluate):
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_evaluate_cli_errors(capsys, tmp_path):
    err = cli_error(capsys, ["--workdir", str(tmp_path)], module=evaluate)
    assert "run.json" in err

