"""Parametrized cases shared by the test modules (tests/ is on sys.path under pytest)."""

import pytest


def slow(*values):
    """A case that runs in the slow pass only: the default run keeps one of each kind,
    CI's `pytest -m slow` runs the rest."""
    return pytest.param(*values, marks=pytest.mark.slow)
