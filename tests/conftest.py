import os
from pathlib import Path

import pytest

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
