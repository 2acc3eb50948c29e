"""One short real training run shared by the predict, export and serve tests.

`trained_workdir` trains gap8k with the recipe `python -m jaxmnist.train --arch gap8k`
uses (the default variant), cut to two epochs, on the 60k MNIST training images (about
99% test accuracy), once per pytest session, however many test modules use it: the
fixture is imported into each module, so the run itself is memoised here.
"""

from __future__ import annotations

import pytest

from jaxmnist import data, loop, recipes

EPOCHS = 2
_RUN: dict[str, str] = {}


def train_once(tmp_path_factory, mnist_dir: str) -> str:
    if "workdir" not in _RUN:
        workdir = str(tmp_path_factory.mktemp("trained") / "gap8k")
        ds = data.load("mnist", mnist_dir, val_examples=0)
        recipe = recipes.variant("gap8k").replace(epochs=EPOCHS)
        loop.run(loop.RunConfig(recipe=recipe, workdir=workdir, progress=False, plots=False), ds,
                 log=lambda line: None)
        _RUN["workdir"] = workdir
    return _RUN["workdir"]


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, mnist_dir) -> str:
    return train_once(tmp_path_factory, mnist_dir)


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    return data.load("mnist", mnist_dir, val_examples=0).test
