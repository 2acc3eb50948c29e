"""A dataset as uint8 arrays: its train, validation and test splits."""

from __future__ import annotations

import dataclasses

import numpy as np

IMAGE_SIZE = 28
NUM_CLASSES = 10
# The validation split must not move when a user changes the training seed.
VAL_SEED = 0


class DataError(Exception):
    """One-line, user-facing message naming the file or the fix."""


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, (N, 28, 28, 1)
    labels: np.ndarray  # int32, (N,)

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx) -> "Split":
        return Split(images=self.images[idx], labels=self.labels[idx])


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str  # 'mnist' | 'fashion_mnist'
    train: Split  # train minus the validation examples
    val: Split  # may have 0 examples
    test: Split  # the official 10,000 test examples, never used for selection


def check_val_examples(val_examples) -> None:
    if isinstance(val_examples, bool) or not isinstance(val_examples, (int, np.integer)):
        raise DataError(f"val_examples must be an integer, got {val_examples!r}")
    if val_examples < 0:
        raise DataError(f"val_examples must be >= 0, got {val_examples}")


def carve_validation(train: Split, val_examples: int) -> tuple[Split, Split]:
    """(train, val): a fixed random val_examples of the training split (VAL_SEED); train
    keeps file order so that runs differing only in val size stay comparable."""
    n = len(train)
    if not 0 <= val_examples < n:
        raise DataError(f"val_examples={val_examples} must be in [0, {n}): train has {n} examples")
    perm = np.random.default_rng(VAL_SEED).permutation(n)
    val_idx, train_idx = perm[:val_examples], np.sort(perm[val_examples:])
    return train.take(train_idx), train.take(val_idx)
