"""The trained run the predict, export and serve tests read (tests/conftest.py's
`trained_run`), and the MNIST test split."""

from __future__ import annotations

import pytest

from jaxmnist import data


@pytest.fixture(scope="session")
def trained_workdir(trained_run) -> str:
    return trained_run[0]


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    return data.load("mnist", mnist_dir, val_examples=0).test
