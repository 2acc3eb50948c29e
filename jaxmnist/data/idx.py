"""The four IDX files of MNIST or Fashion-MNIST, parsed with numpy and verified.

Every file is checked against the sha256 of its *decompressed* content: the ``.gz``
wrappers differ between mirrors (recompressed copies, Debian's repack) while the IDX
bytes are the same everywhere. This module imports neither tfds nor JAX, so an IDX
folder is all a training run needs.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxmnist.data.splits import IMAGE_SIZE, NUM_CLASSES, DataError, Split
from jaxmnist.messages import one_line

ENV_DATA_DIR = "JAXMNIST_DATA_DIR"
FIX_HINT = f"set --data-dir or {ENV_DATA_DIR} to a folder with the four IDX files"

# Which files a folder must hold; keys are shared by every table below.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# sha256 of the decompressed IDX files.
# MNIST: computed from the official files in shared/datasets/mnist (their .gz
#   were recompressed, so only the decompressed bytes are comparable).
# Fashion-MNIST: computed from Debian's dataset-fashion-mnist
#   (0.0~git20200523.55506a9-1, /usr/share/datasets/fashion-mnist).  Debian's
#   .gz carry the upstream deflate streams unchanged: putting back the stored
#   file name and mtime (2017-08-31) in their gzip headers reproduces, byte for
#   byte, the four .gz whose sha256 tfds 4.9.10 registers in
#   url_checksums/fashion_mnist.txt.
OFFICIAL_SHA256 = {
    "mnist": {
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}



def idx_paths(folder) -> dict[str, Path]:
    """Accepts .gz or uncompressed files, since people often gunzip them."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"data dir {root} is not a folder; {FIX_HINT}")
    return {key: _find_idx_file(root, stem) for key, stem in FILES.items()}


def _find_idx_file(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing {root / stem}.gz (or uncompressed {stem}); {FIX_HINT}")


def read_idx_files(
    paths: Mapping[str, Path], expected: Mapping[str, str] | None
) -> tuple[Split, Split, dict[str, str]]:
    """Returns (train, test, decompressed sha256 per file); all checks before any use."""
    blobs = {key: _decompressed_bytes(path) for key, path in paths.items()}
    arrays = {key: _parse_idx(blobs[key], paths[key], key) for key in FILES}
    splits = tuple(_split_from_arrays(arrays, paths, prefix) for prefix in ("train", "test"))
    digests = {key: hashlib.sha256(blob).hexdigest() for key, blob in blobs.items()}
    if expected is not None:
        _verify_digests(digests, expected, paths)
    return splits[0], splits[1], digests


def _decompressed_bytes(path: Path) -> bytes:
    """Trusts the gzip magic, not the name, since renamed files are common."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if raw[:2] != b"\x1f\x8b":
        if path.suffix == ".gz":
            raise DataError(f"{path} is not a gzip file; re-download it")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        reason = one_line(err)
        raise DataError(f"{path} is a truncated or corrupt gzip file ({reason}); re-download it") from None


def _parse_idx(data: bytes, path: Path, key: str) -> np.ndarray:
    """Checks the header against the payload so a short file can never parse."""
    is_images = key.endswith("images")
    magic, ndim = (0x00000803, 3) if is_images else (0x00000801, 1)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: {len(data)} bytes, shorter than the IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "images (idx3)" if is_images else "labels (idx1)"
        raise DataError(f"{path}: bad IDX magic 0x{found:08x}, expected 0x{magic:08x} for {kind}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    if is_images and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise DataError(
            f"{path}: header announces {dims[0]} items ({size} bytes) but the file holds "
            f"{len(data) - header} bytes; it is truncated or corrupt"
        )
    return np.frombuffer(data, np.uint8, size, header).reshape(dims)


def _split_from_arrays(
    arrays: Mapping[str, np.ndarray], paths: Mapping[str, Path], prefix: str
) -> Split:
    images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
    images_path, labels_path = paths[f"{prefix}_images"], paths[f"{prefix}_labels"]
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0..{NUM_CLASSES - 1}")
    images = images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1).copy()
    return Split(images=images, labels=labels.astype(np.int32))


def _verify_digests(
    digests: Mapping[str, str], expected: Mapping[str, str], paths: Mapping[str, Path]
) -> None:
    for key, digest in digests.items():
        if digest != expected[key]:
            raise DataError(
                f"{paths[key]} is not the official file: sha256 of its decompressed content is "
                f"{digest[:16]}..., expected {expected[key][:16]}...{_looks_like(key, digest)}; "
                "replace it with the official file"
            )


def _looks_like(key: str, digest: str) -> str:
    """Names the other dataset when the folder holds it: a common mix-up."""
    for name, pins in OFFICIAL_SHA256.items():
        if pins[key] == digest:
            return f" (that is {name}'s file)"
    return ""


IMAGES_MAGIC = 0x00000803


def read_images(path) -> np.ndarray:
    """One IDX images file (gzip or not) as uint8 (N, 28, 28); a DataError if it is not one."""
    path = Path(path)
    blob = _decompressed_bytes(path)
    if int.from_bytes(blob[:4], "big") != IMAGES_MAGIC:
        raise DataError(f"{path} is not an IDX images file")
    return _parse_idx(blob, path, "images")
