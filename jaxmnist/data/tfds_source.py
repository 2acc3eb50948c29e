"""MNIST and Fashion-MNIST through tensorflow-datasets, without TensorFlow, and the
decoded arrays' cache.

tfds's own MNIST / FashionMNIST builders cannot prepare data without TensorFlow (they
unzip and read through ``tf.io``), so ours subclass them, parse the IDX files with numpy
(`jaxmnist.data.idx`), encode PNGs with PIL, write ``array_record`` and are read back
through ``as_data_source()``. Decoding 70k PNGs takes seconds, so the decoded arrays are
cached next to the prepared dataset; a warm load neither imports tfds nor decodes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from jaxmnist.data.idx import FILES, FIX_HINT, idx_paths, read_idx_files
from jaxmnist.data.splits import IMAGE_SIZE, DataError, Split
from jaxmnist.files import atomic_write
from jaxmnist.messages import one_line

# Bump when the cached arrays' layout or meaning changes.
_CACHE_FORMAT = 1
_CACHE_FILE = "arrays.npz"
_PROBE_TIMEOUT_S = 5.0
_READ_BATCH = 4096

_log = logging.getLogger(__name__)

def load_tfds(
    name: str, folder: str | None, cache_root: Path, expected: Mapping[str, str] | None
) -> tuple[Split, Split]:
    """Arrays via tfds; `expected=None` accepts any content (tests only).

    The prepared dataset's folder is named after the content it holds (the
    pinned hashes when verifying), so a local folder and a download share it.
    The array cache is keyed on the source files themselves, so any change to
    them is re-verified before their arrays are used.
    """
    paths = idx_paths(folder) if folder is not None else None
    if paths is None and expected is None:
        raise ValueError("downloads are always verified")
    parsed = None
    if expected is None:  # the content, not a pin, names the prepared dataset
        parsed = read_idx_files(paths, None)
    home = cache_root / f"{name}-{_digest(expected or parsed[2])[:16]}"
    meta = {"format": _CACHE_FORMAT, "name": name, "source": _source_fingerprint(paths)}
    cached = _read_cache(home / _CACHE_FILE, meta)
    if cached is not None:
        return cached
    with _locked(home):
        cached = _read_cache(home / _CACHE_FILE, meta, warn=False)  # another process may have built it
        if cached is not None:
            return cached
        if paths is not None and parsed is None:
            parsed = read_idx_files(paths, expected)  # fail on bad files before importing tfds
        splits = _prepare_and_read(name, home, paths, expected)
        _check_prepared(home, splits, expected, parsed)
        _write_cache(home / _CACHE_FILE, meta, *splits)
    return splits


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _source_fingerprint(paths: Mapping[str, Path] | None) -> dict:
    """Hashes the raw files: exact and fast (~10 ms for MNIST) without decompressing."""
    if paths is None:
        return {"download": "tfds registered URLs"}
    return {key: [path.name, _file_sha256(path)] for key, path in paths.items()}


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialises cold builds so parallel runs don't prepare the same folder twice."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        handle = (home / ".lock").open("a")
    except OSError as err:
        reason = err.strerror or err
        raise DataError(f"cannot write the cache under {home}: {reason}; pass another cache_dir") from None
    with handle:
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: build unlocked
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _check_prepared(home: Path, splits: tuple[Split, Split], expected, parsed) -> None:
    """What tfds hands back must be the source, whole: never a silent partial dataset.

    Verified data is checked by rebuilding the IDX bytes from the arrays and
    hashing them, which also covers downloads, where no parsed copy is at hand.
    """
    if expected is not None:
        same = all(_idx_sha256(splits, key) == expected[key] for key in FILES)
    else:
        same = all(
            np.array_equal(getattr(a, field), getattr(b, field))
            for a, b in zip(splits, parsed[:2])
            for field in ("images", "labels")
        )
    if not same:
        raise DataError(
            f"the prepared tfds dataset under {home} differs from its source files; delete {home}"
        )


def _idx_sha256(splits: tuple[Split, Split], key: str) -> str:
    split = splits[0] if key.startswith("train") else splits[1]
    if key.endswith("images"):
        array, magic = split.images[..., 0], 0x00000803
    else:
        array, magic = split.labels.astype(np.uint8), 0x00000801
    header = np.array((magic, *array.shape), ">u4").tobytes()
    return hashlib.sha256(header + np.ascontiguousarray(array).tobytes()).hexdigest()


def _read_cache(path: Path, meta: dict, warn: bool = True) -> tuple[Split, Split] | None:
    """Any unreadable or foreign cache is a miss: it is only ever a copy."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if json.loads(npz["meta"].tobytes()) != meta:
                return None
            splits = tuple(_cached_split(npz, prefix) for prefix in ("train", "test"))
    except Exception as err:  # noqa: BLE001 - zip, zlib, json, shape errors alike
        if warn:
            _log.warning("ignoring unreadable cache %s (%s); rebuilding it", path, one_line(err))
        return None
    return splits


def _cached_split(npz, prefix: str) -> Split:
    images, labels = npz[f"{prefix}_images"], npz[f"{prefix}_labels"]
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
        raise ValueError(f"{prefix} images: {images.dtype} {images.shape}")
    if labels.dtype != np.int32 or labels.shape != (len(images),):
        raise ValueError(f"{prefix} labels: {labels.dtype} {labels.shape}")
    return Split(images=images, labels=labels)


def _write_cache(path: Path, meta: dict, train: Split, test: Split) -> None:
    """Atomic, so a killed run never leaves a half-written cache behind."""
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
        "train_images": train.images, "train_labels": train.labels,
        "test_images": test.images, "test_labels": test.labels,
    }
    try:  # uncompressed: loading must stay fast
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as err:
        _log.warning("could not write cache %s (%s); the next load rebuilds it", path, one_line(err))


def _prepare_and_read(
    name: str, home: Path, paths: Mapping[str, Path] | None, expected: Mapping[str, str] | None
) -> tuple[Split, Split]:
    """Prepares again, once, a dataset that can't be read back (e.g. a damaged shard)."""
    for attempt in (1, 2):
        builder = _builder_class(name)(data_dir=str(home), idx_files=paths, expected=expected)
        _prepare(builder, home)
        try:
            return _read_prepared(builder)
        except Exception as err:  # noqa: BLE001 - tfds/array_record raise many kinds
            if attempt == 2:
                raise DataError(f"cannot read the prepared dataset {builder.data_dir} ({one_line(err)}); "
                                f"delete {home}") from None
            _log.warning(
                "prepared dataset %s unreadable (%s); preparing it again", builder.data_dir, one_line(err)
            )
            shutil.rmtree(builder.data_dir, ignore_errors=True)


def _prepare(builder, home: Path) -> None:
    import tensorflow_datasets as tfds

    config = tfds.download.DownloadConfig(try_download_gcs=False, force_checksums_validation=True)
    try:
        builder.download_and_prepare(download_config=config, file_format="array_record")
    except OSError as err:
        reason = one_line(err)
        raise DataError(f"cannot prepare the dataset under {home} ({reason}); pass another cache_dir") from None


def _read_prepared(builder) -> tuple[Split, Split]:
    sources = builder.as_data_source()
    return _read_source(sources["train"]), _read_source(sources["test"])


def _read_source(source) -> Split:
    n = len(source)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)
    labels = np.empty((n,), np.int32)
    for start in range(0, n, _READ_BATCH):
        batch = source.__getitems__(list(range(start, min(n, start + _READ_BATCH))))
        for i, example in enumerate(batch, start):
            images[i] = example["image"]
            labels[i] = example["label"]
    return Split(images=images, labels=labels)


def _png(image: np.ndarray) -> bytes:
    """PIL, because tfds's own numpy-to-PNG encoder runs TensorFlow."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0]).save(buf, format="PNG")
    return buf.getvalue()


def _check_online(url: str) -> None:
    """tfds's downloader sets no timeout; a bounded probe turns offline into a fast error."""
    import requests

    try:
        requests.head(url, timeout=_PROBE_TIMEOUT_S, allow_redirects=True)
    except requests.RequestException as err:
        host = urllib.parse.urlsplit(url).hostname
        raise DataError(f"cannot reach {host} ({type(err).__name__}); offline? {FIX_HINT}") from None


def _download(dl_manager, base_url: str) -> dict[str, Path]:
    urls = {key: urllib.parse.urljoin(base_url, f"{stem}.gz") for key, stem in FILES.items()}
    _check_online(urls["train_labels"])
    try:
        return {key: Path(p) for key, p in dl_manager.download(urls).items()}
    except Exception as err:  # noqa: BLE001 - network, HTTP and checksum errors alike
        reason = f"{type(err).__name__}: {one_line(err)}"
        raise DataError(f"downloading {base_url} failed ({reason}); {FIX_HINT}") from None


@functools.cache
def _builder_class(name: str):
    """Built on first use so that importing this module never imports tfds."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    parent = {"mnist": tfds_mnist.MNIST, "fashion_mnist": tfds_mnist.FashionMNIST}[name]

    class LocalInfo(tfds.core.DatasetInfo):
        def initialize_from_bucket(self):
            """Skipped: our datasets are never in tfds's bucket, and tfds's version leaks a temp dir."""

    class Builder(parent, skip_registration=True):
        """tfds's builder with numpy parsing and PIL encoding instead of TensorFlow."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "IDX parsed with numpy, PNG by PIL, array_record, file order kept."}
        # tfds finds checksums next to a builder's module; ours lives elsewhere.
        url_infos = parent.url_infos

        def __init__(self, *, idx_files=None, expected=None, **kwargs):
            self._idx_files = idx_files
            self._expected = expected
            super().__init__(file_format="array_record", **kwargs)

        def _info(self):
            base = super()._info()
            return LocalInfo(
                builder=self,
                description=base.description,
                features=base.features,
                supervised_keys=base.supervised_keys,
                homepage=base.homepage,
                citation=base.citation,
                disable_shuffling=True,  # keep the files' order: the val split indexes into it
            )

        def _split_generators(self, dl_manager):
            paths = self._idx_files or _download(dl_manager, self.URL)
            train, test, _ = read_idx_files(paths, self._expected)
            return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

        def _generate_examples(self, split):
            for index in range(len(split)):
                yield index, {"image": _png(split.images[index]), "label": int(split.labels[index])}

    Builder.name = f"jaxmnist_{name}"
    Builder.__name__ = Builder.__qualname__ = f"Jaxmnist{parent.__name__}"
    return Builder
