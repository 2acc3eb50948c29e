"""Parametrized cases shared by the test modules (tests/ is on sys.path under pytest)."""

import pytest


def slow(*values):
    """A case that runs in the slow pass only: the default run keeps one of each kind,
    CI's `pytest -m slow` runs the rest."""
    return pytest.param(*values, marks=pytest.mark.slow)


def one_line_error(capsys, main, argv) -> str:
    """Runs a command's main(argv), which must exit non-zero with one `error: ` line on
    stderr; returns that line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err
