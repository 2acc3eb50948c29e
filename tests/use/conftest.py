"""One short real training run shared by the predict, export and serve tests.

`trained_workdir` trains gap8k with the recipe `python -m jaxmnist.train --arch gap8k`
uses (the default variant), cut to two epochs, on the 60k MNIST training images (about
99% test accuracy), once per pytest session, however many test modules use it: the
session fixture is built once per test process (the modules share an xdist group).
"""

from __future__ import annotations

import pytest

from jaxmnist import data
from jaxmnist.train import loop
from jaxmnist.train import recipes

EPOCHS = 2


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, mnist_dir) -> str:
    workdir = str(tmp_path_factory.mktemp("trained") / "gap8k")
    ds = data.load("mnist", mnist_dir, val_examples=0)
    recipe = recipes.variant("gap8k").replace(epochs=EPOCHS)
    loop.train_and_evaluate(loop.RunConfig(recipe=recipe, workdir=workdir, progress=False,
                                           plots=False), ds, log=lambda line: None)
    return workdir


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    return data.load("mnist", mnist_dir, val_examples=0).test
