import os
from pathlib import Path

import pytest

from jaxmnist import machine

# The suite runs as the commands do: the same XLA flags (results are compared bitwise
# with runs of the commands) and the persistent compilation cache. Before JAX starts.
machine.tune_process()

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# shared/ sits beside the repo, for developers and in CI's fresh clone alike.
_SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    """Real MNIST folder: $JAXMNIST_DATA_DIR, else shared/datasets/mnist.

    Skips when absent, except under CI=true where missing data must fail loudly.
    """
    folder = Path(os.environ.get("JAXMNIST_DATA_DIR") or _SHARED_MNIST)
    missing = [n for n in _IDX_FILES if not ((folder / n).is_file() or (folder / n[:-3]).is_file())]
    if missing:
        reason = f'real MNIST not found: {folder} lacks {", ".join(missing)} (set JAXMNIST_DATA_DIR)'
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return str(folder)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_dir):
    """(workdir, data, recipe) of one short real training run shared by the CLI, predict,
    export and serve tests: gap8k's speed recipe cut to 2 epochs (OneCycleLR over them)
    on the first 30,000 MNIST training images, about 99.0% test accuracy, a checkpoint per
    epoch. Built once per test process; the modules that use it share an xdist group."""
    import dataclasses

    from jaxmnist import data
    from jaxmnist.train import loop, recipes

    workdir = str(tmp_path_factory.mktemp("trained") / "gap8k")
    ds = data.load("mnist", mnist_dir, val_examples=0)
    ds = dataclasses.replace(ds, train=ds.train.take(slice(0, 30_000)))
    recipe = recipes.variant("gap8k", "speed").replace(epochs=2)
    loop.train_and_evaluate(loop.RunConfig(recipe=recipe, workdir=workdir, progress=False,
                                           plots=False), ds, log=lambda line: None)
    return workdir, ds, recipe


def pytest_xdist_node_collection_finished(node, ids):
    """Under `--dist loadgroup` pytest-xdist appends "@group" to the node id of every test
    marked xdist_group (every test of test_lowerings.py is), so that a group's shared
    fixtures (a trained model, the real MNIST cache) are built in one process. A pytest
    that stops plugins from renaming node ids (9.2) breaks this silently: stop and say so."""
    if node.config.getvalue("dist") != "loadgroup":
        return
    grouped = [i for i in ids if i.startswith("tests/nets/test_lowerings.py::")]
    if grouped and not any("@" in i for i in grouped):
        pytest.exit(f"pytest-xdist could not group tests (e.g. {grouped[0]}): pytest "
                    f"{pytest.__version__} breaks --dist loadgroup; install the test extra's "
                    "pytest range: pip install -e \".[test]\"", returncode=3)
