"""MNIST and Fashion-MNIST as uint8 numpy arrays, with a fixed validation split.

Two routes give identical arrays:

* ``source='idx'``: the four IDX files parsed with numpy (`jaxmnist.data.idx`);
* ``source='tfds'``: tensorflow-datasets builders, without TensorFlow, and a cache of
  the decoded arrays (`jaxmnist.data.tfds_source`); online, tfds downloads the files.

``'auto'`` (the default) takes tfds where it is installed and the IDX route otherwise,
so an image that has JAX but not tfds still trains from an IDX folder. On-device
augmentation is `jaxmnist.data.augment`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from jaxmnist.data.idx import ENV_DATA_DIR, FIX_HINT, OFFICIAL_SHA256, idx_paths, read_idx_files
from jaxmnist.data.splits import (IMAGE_SIZE, NUM_CLASSES, DataError, Dataset, Split,
                                  carve_validation, check_val_examples)

DATASETS = ("mnist", "fashion_mnist")
SOURCES = ("auto", "idx", "tfds")

__all__ = ["DATASETS", "SOURCES", "ENV_DATA_DIR", "IMAGE_SIZE", "NUM_CLASSES", "DataError",
           "Dataset", "Split", "load", "read_idx_folder", "data_dir_from_env_or"]


def data_dir_from_env_or(arg) -> str | None:
    """An explicit folder wins so that a CLI flag can override the environment."""
    if arg is not None and os.fspath(arg) != "":
        return os.fspath(arg)
    return os.environ.get(ENV_DATA_DIR) or None


def load(name="mnist", data_dir=None, val_examples=5000, source="auto", cache_dir=None) -> Dataset:
    """Loads a verified dataset; `data_dir` None means download through tfds."""
    _check_choice("dataset", name, DATASETS)
    _check_choice("source", source, SOURCES)
    check_val_examples(val_examples)
    folder = data_dir_from_env_or(data_dir)
    expected = OFFICIAL_SHA256[name]
    if source == "auto":
        source = "tfds" if _installed("tensorflow_datasets") or folder is None else "idx"
    if source == "idx":
        if folder is None:
            raise DataError(f"source='idx' reads local files: {FIX_HINT}")
        train, test, _ = read_idx_files(idx_paths(folder), expected)
    else:
        from jaxmnist.data.tfds_source import load_tfds

        train, test = load_tfds(name, folder, _cache_root(cache_dir), expected)
    train, val = carve_validation(train, val_examples)
    return Dataset(name=name, train=train, val=val, test=test)


def read_idx_folder(folder, name="mnist") -> tuple[Split, Split]:
    """Parses without checksum verification, so that any IDX folder can be read."""
    _check_choice("dataset", name, DATASETS)
    train, test, _ = read_idx_files(idx_paths(folder), expected=None)
    return train, test


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _check_choice(what: str, value, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise DataError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _cache_root(cache_dir) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from jaxmnist.machine import cache_root

    return Path(cache_root()) / "tfds"
