import pytest

from jaxmnist import data


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    return data.load("mnist", mnist_dir, val_examples=0)
