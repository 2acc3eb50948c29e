"""MNIST and Fashion-MNIST as uint8 numpy arrays, with a fixed validation split.

Two routes give identical arrays:

* ``source='idx'``: a small numpy parser of the four IDX files.
* ``source='tfds'`` (and ``'auto'``): tensorflow-datasets builders that subclass
  tfds's own MNIST / FashionMNIST builders.  tfds's builders cannot prepare data
  without TensorFlow (they unzip and read through ``tf.io``), so ours parse the
  IDX files with numpy, encode PNGs with PIL, write ``array_record`` and are
  read back through ``as_data_source()``: TensorFlow is never imported.

Decoding 70k PNGs takes seconds, so the decoded arrays are cached next to the
prepared tfds dataset; a warm ``load()`` neither imports tfds nor decodes.

Every file is checked against the sha256 of its *decompressed* content: the
``.gz`` wrappers differ between mirrors (recompressed copies, Debian's repack)
while the IDX bytes are the same everywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import json
import logging
import os
import secrets
import shutil
import urllib.parse
import zlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

DATASETS = ("mnist", "fashion_mnist")
SOURCES = ("auto", "idx", "tfds")
ENV_DATA_DIR = "JAXMNIST_DATA_DIR"
IMAGE_SIZE = 28
NUM_CLASSES = 10

FIX_HINT = f"set --data-dir or {ENV_DATA_DIR} to a folder with the four IDX files"

# Which files a folder must hold; keys are shared by every table below.
_FILES = {
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
_OFFICIAL_SHA256 = {
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

# The validation split must not move when a user changes the training seed.
_VAL_SEED = 0
# Bump when the cached arrays' layout or meaning changes.
_CACHE_FORMAT = 1
_CACHE_FILE = "arrays.npz"
_PROBE_TIMEOUT_S = 5.0
_READ_BATCH = 4096

_log = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str  # 'mnist' | 'fashion_mnist'
    train: Split  # train minus the validation examples
    val: Split  # may have 0 examples
    test: Split  # the official 10,000 test examples, never used for selection


def data_dir_from_env_or(arg) -> str | None:
    """An explicit folder wins so that a CLI flag can override the environment."""
    if arg is not None and os.fspath(arg) != "":
        return os.fspath(arg)
    return os.environ.get(ENV_DATA_DIR) or None


def load(name="mnist", data_dir=None, val_examples=5000, source="auto", cache_dir=None) -> Dataset:
    """Loads a verified dataset; `data_dir` None means download through tfds."""
    _check_choice("dataset", name, DATASETS)
    _check_choice("source", source, SOURCES)
    _check_val_examples(val_examples)
    folder = data_dir_from_env_or(data_dir)
    expected = _OFFICIAL_SHA256[name]
    if source == "idx":
        if folder is None:
            raise DataError(f"source='idx' reads local files: {FIX_HINT}")
        train, test, _ = _read_idx_files(_idx_paths(folder), expected)
    else:
        train, test = _load_tfds(name, folder, _cache_root(cache_dir), expected)
    train, val = _carve_validation(train, val_examples)
    return Dataset(name=name, train=train, val=val, test=test)


def read_idx_folder(folder, name="mnist") -> tuple[Split, Split]:
    """Parses without checksum verification, so that any IDX folder can be read."""
    _check_choice("dataset", name, DATASETS)
    train, test, _ = _read_idx_files(_idx_paths(folder), expected=None)
    return train, test


# --- validation split -------------------------------------------------------


def _check_choice(what: str, value, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise DataError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _check_val_examples(val_examples) -> None:
    if isinstance(val_examples, bool) or not isinstance(val_examples, (int, np.integer)):
        raise DataError(f"val_examples must be an integer, got {val_examples!r}")
    if val_examples < 0:
        raise DataError(f"val_examples must be >= 0, got {val_examples}")


def _carve_validation(train: Split, val_examples: int) -> tuple[Split, Split]:
    """Train keeps file order so that runs differing only in val size stay comparable."""
    n = len(train)
    if not 0 <= val_examples < n:
        raise DataError(f"val_examples={val_examples} must be in [0, {n}): train has {n} examples")
    perm = np.random.default_rng(_VAL_SEED).permutation(n)
    val_idx, train_idx = perm[:val_examples], np.sort(perm[val_examples:])
    return _take(train, train_idx), _take(train, val_idx)


def _take(split: Split, idx: np.ndarray) -> Split:
    return Split(images=split.images[idx], labels=split.labels[idx])


# --- IDX files --------------------------------------------------------------


def _idx_paths(folder) -> dict[str, Path]:
    """Accepts .gz or uncompressed files, since people often gunzip them."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"data dir {root} is not a folder; {FIX_HINT}")
    return {key: _find_idx_file(root, stem) for key, stem in _FILES.items()}


def _find_idx_file(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing {root / stem}.gz (or uncompressed {stem}); {FIX_HINT}")


def _read_idx_files(
    paths: Mapping[str, Path], expected: Mapping[str, str] | None
) -> tuple[Split, Split, dict[str, str]]:
    """Returns (train, test, decompressed sha256 per file); all checks before any use."""
    blobs = {key: _decompressed_bytes(path) for key, path in paths.items()}
    arrays = {key: _parse_idx(blobs[key], paths[key], key) for key in _FILES}
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
        reason = _one_line(err)
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
    for name, pins in _OFFICIAL_SHA256.items():
        if pins[key] == digest:
            return f" (that is {name}'s file)"
    return ""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --- tfds route and its cache -----------------------------------------------


def _cache_root(cache_dir) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from jaxmnist import cache_root

    return Path(cache_root()) / "tfds"


def _load_tfds(
    name: str, folder: str | None, cache_root: Path, expected: Mapping[str, str] | None
) -> tuple[Split, Split]:
    """Arrays via tfds; `expected=None` accepts any content (tests only).

    The prepared dataset's folder is named after the content it holds (the
    pinned hashes when verifying), so a local folder and a download share it.
    The array cache is keyed on the source files themselves, so any change to
    them is re-verified before their arrays are used.
    """
    paths = _idx_paths(folder) if folder is not None else None
    if paths is None and expected is None:
        raise ValueError("downloads are always verified")
    parsed = None
    if expected is None:  # the content, not a pin, names the prepared dataset
        parsed = _read_idx_files(paths, None)
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
            parsed = _read_idx_files(paths, expected)  # fail on bad files before importing tfds
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
        same = all(_idx_sha256(splits, key) == expected[key] for key in _FILES)
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
            _log.warning("ignoring unreadable cache %s (%s); rebuilding it", path, _one_line(err))
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)  # uncompressed: loading must stay fast
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _log.warning("could not write cache %s (%s); the next load rebuilds it", path, _one_line(err))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


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
                raise DataError(f"cannot read the prepared dataset {builder.data_dir} ({_one_line(err)}); "
                                f"delete {home}") from None
            _log.warning(
                "prepared dataset %s unreadable (%s); preparing it again", builder.data_dir, _one_line(err)
            )
            shutil.rmtree(builder.data_dir, ignore_errors=True)


def _prepare(builder, home: Path) -> None:
    import tensorflow_datasets as tfds

    config = tfds.download.DownloadConfig(try_download_gcs=False, force_checksums_validation=True)
    try:
        builder.download_and_prepare(download_config=config, file_format="array_record")
    except OSError as err:
        reason = _one_line(err)
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
    urls = {key: urllib.parse.urljoin(base_url, f"{stem}.gz") for key, stem in _FILES.items()}
    _check_online(urls["train_labels"])
    try:
        return {key: Path(p) for key, p in dl_manager.download(urls).items()}
    except Exception as err:  # noqa: BLE001 - network, HTTP and checksum errors alike
        reason = f"{type(err).__name__}: {_one_line(err)}"
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
            train, test, _ = _read_idx_files(paths, self._expected)
            return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

        def _generate_examples(self, split):
            for index in range(len(split)):
                yield index, {"image": _png(split.images[index]), "label": int(split.labels[index])}

    Builder.name = f"jaxmnist_{name}"
    Builder.__name__ = Builder.__qualname__ = f"Jaxmnist{parent.__name__}"
    return Builder
