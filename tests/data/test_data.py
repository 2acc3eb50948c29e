"""jaxmnist.data: IDX parsing, bad input, the tfds route, its cache, and real MNIST.

Tiny IDX folders are generated per test; real MNIST comes from the `mnist_dir`
fixture (conftest.py) and is prepared once per session into a temporary cache.
"""

import gzip
import hashlib
import http.server
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jaxmnist import data
from jaxmnist.data import idx, splits, tfds_source

pytestmark = pytest.mark.xdist_group("real_mnist")  # its module fixtures once, in one process

REPO = Path(__file__).resolve().parents[2]
STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- helpers ------------------------------------------------------------------


def idx_bytes(array, magic=None) -> bytes:
    array = np.asarray(array, np.uint8)
    magic = magic if magic is not None else (0x803 if array.ndim == 3 else 0x801)
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    return struct.pack(">I", magic) + dims + array.tobytes()


def write_idx(folder: Path, key: str, blob: bytes, gz: bool = True) -> Path:
    path = folder / (STEMS[key] + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(blob, mtime=0) if gz else blob)
    return path


def make_folder(folder: Path, n_train=40, n_test=12, seed=0, gz=True) -> dict:
    """Writes four small, valid IDX files; returns the arrays they hold."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for key, array in arrays.items():
        write_idx(folder, key, idx_bytes(array), gz)
    return arrays


def pin_hashes(monkeypatch, folder: Path, name="mnist") -> None:
    """Stands in for the official hashes so load()'s verifying path runs on tiny data."""
    hashes = {
        key: hashlib.sha256(gzip.decompress((folder / f"{stem}.gz").read_bytes())).hexdigest()
        for key, stem in STEMS.items()
    }
    monkeypatch.setitem(idx.OFFICIAL_SHA256, name, hashes)


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(data.DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message, message
    return message


def assert_split_equal(a: data.Split, b: data.Split) -> None:
    assert a.images.dtype == b.images.dtype == np.uint8
    assert a.labels.dtype == b.labels.dtype == np.int32
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.fixture
def tiny(tmp_path):
    folder = tmp_path / "idx"
    return folder, make_folder(folder)


@pytest.fixture(autouse=True)
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)


# --- IDX parsing ----------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_folder_gives_the_files_arrays_in_order(tmp_path, gz):
    arrays = make_folder(tmp_path, gz=gz)
    train, test = data.read_idx_folder(tmp_path)
    assert train.images.shape == (40, 28, 28, 1) and len(train) == 40 and len(test) == 12
    np.testing.assert_array_equal(train.images[..., 0], arrays["train_images"])
    np.testing.assert_array_equal(train.labels, arrays["train_labels"])
    np.testing.assert_array_equal(test.images[..., 0], arrays["test_images"])
    np.testing.assert_array_equal(test.labels, arrays["test_labels"])
    assert train.labels.dtype == np.int32 and train.images.dtype == np.uint8


def test_missing_file_names_path_and_fix(tiny):
    folder, _ = tiny
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    message = error_of(data.read_idx_folder, folder)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in message
    assert "JAXMNIST_DATA_DIR" in message and "--data-dir" in message


def test_data_dir_that_is_not_a_folder(tmp_path):
    message = error_of(data.read_idx_folder, tmp_path / "nowhere")
    assert "nowhere" in message and "not a folder" in message


def test_truncated_gzip(tiny):
    folder, _ = tiny
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    message = error_of(data.read_idx_folder, folder)
    assert str(path) in message and "truncated or corrupt gzip" in message


def test_gzip_with_bad_crc(tiny):
    folder, _ = tiny
    path = folder / "train-labels-idx1-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[-8] ^= 0xFF  # the CRC32 of the gzip trailer
    path.write_bytes(bytes(blob))
    message = error_of(data.read_idx_folder, folder)
    assert str(path) in message and "gzip" in message


def test_gz_name_without_gzip_content(tiny):
    folder, arrays = tiny
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(arrays["train_labels"]))
    assert "is not a gzip file" in error_of(data.read_idx_folder, folder)


def test_wrong_magic(tiny):
    folder, arrays = tiny
    path = write_idx(folder, "test_images", idx_bytes(arrays["test_images"], magic=0x801))
    message = error_of(data.read_idx_folder, folder)
    assert str(path) in message and "magic 0x00000801" in message and "expected 0x00000803" in message


def test_image_label_count_mismatch(tiny):
    folder, arrays = tiny
    write_idx(folder, "train_labels", idx_bytes(arrays["train_labels"][:-1]))
    message = error_of(data.read_idx_folder, folder)
    assert "40 images" in message and "39 labels" in message and "train-labels-idx1-ubyte" in message


def test_wrong_image_size(tiny):
    folder, _ = tiny
    path = write_idx(folder, "test_images", idx_bytes(np.zeros((12, 32, 32))))
    message = error_of(data.read_idx_folder, folder)
    assert str(path) in message and "32x32, expected 28x28" in message


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_payload(tmp_path, gz):
    arrays = make_folder(tmp_path, gz=gz)
    path = write_idx(tmp_path, "train_images", idx_bytes(arrays["train_images"])[:-100], gz)
    message = error_of(data.read_idx_folder, tmp_path)
    assert str(path) in message and "truncated" in message


def test_truncated_header(tiny):
    folder, _ = tiny
    path = write_idx(folder, "test_labels", b"\x00\x00\x08")
    assert "shorter than the IDX header" in error_of(data.read_idx_folder, folder)
    assert path.name in error_of(data.read_idx_folder, folder)


def test_label_out_of_range(tiny):
    folder, arrays = tiny
    labels = arrays["test_labels"].copy()
    labels[3] = 17
    write_idx(folder, "test_labels", idx_bytes(labels))
    assert "label 17 outside 0..9" in error_of(data.read_idx_folder, folder)


def test_unknown_dataset_lists_valid_ones(tiny):
    folder, _ = tiny
    for message in (error_of(data.load, "kmnist", folder), error_of(data.read_idx_folder, folder, "kmnist")):
        assert "'kmnist'" in message and "mnist, fashion_mnist" in message


def test_unknown_source(tiny):
    folder, _ = tiny
    assert "idx, tfds" in error_of(data.load, "mnist", folder, source="torchvision")


def test_checksum_mismatch_names_the_file(tiny, monkeypatch, tmp_path):
    folder, arrays = tiny
    pin_hashes(monkeypatch, folder)
    path = write_idx(folder, "train_labels", idx_bytes((arrays["train_labels"] + 1) % 10))
    for source in ("idx", "tfds"):
        message = error_of(data.load, "mnist", folder, 5, source=source, cache_dir=tmp_path / "c")
        assert str(path) in message and "sha256" in message and "official" in message


def test_official_hashes_reject_tiny_data(tiny, tmp_path):
    folder, _ = tiny
    assert "sha256" in error_of(data.load, "mnist", folder, val_examples=5, source="idx")


# --- data dir resolution and offline ------------------------------------------


def test_data_dir_from_env_or(monkeypatch):
    assert data.data_dir_from_env_or(None) is None
    monkeypatch.setenv(data.ENV_DATA_DIR, "/from/env")
    assert data.data_dir_from_env_or(None) == "/from/env"
    assert data.data_dir_from_env_or("/explicit") == "/explicit"
    assert data.data_dir_from_env_or(Path("/p")) == "/p"


def test_env_data_dir_is_used_by_load(tiny, monkeypatch):
    folder, _ = tiny
    pin_hashes(monkeypatch, folder)
    monkeypatch.setenv(data.ENV_DATA_DIR, str(folder))
    assert len(data.load("mnist", val_examples=4, source="idx").train) == 36


def test_idx_source_without_folder():
    assert "JAXMNIST_DATA_DIR" in error_of(data.load, "mnist", source="idx")


def test_offline_without_folder_fails_fast(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    start = time.monotonic()
    message = error_of(data.load, "mnist", cache_dir=tmp_path)
    assert time.monotonic() - start < 30
    assert "set --data-dir or JAXMNIST_DATA_DIR to a folder with the four IDX files" in message


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_HEAD(self):
        self._reply(with_body=False)

    def do_GET(self):
        self._reply(with_body=True)

    def _reply(self, with_body):
        body = self.files.get(self.path.rsplit("/", 1)[-1])
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        if with_body and body:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def online(tiny, monkeypatch):
    """A loopback server stands in for the download site, with tfds-style registered checksums."""
    import tensorflow_datasets as tfds

    folder, _ = tiny
    pin_hashes(monkeypatch, folder)
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    handler = type("Files", (_Files,), {"files": {p.name: p.read_bytes() for p in folder.iterdir()}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    builder = tfds_source._builder_class("mnist")
    monkeypatch.setattr(builder, "URL", base)
    monkeypatch.setattr(builder, "url_infos", {
        base + name: tfds.download.checksums.UrlInfo(
            size=len(blob), checksum=hashlib.sha256(blob).hexdigest(), filename=name)
        for name, blob in handler.files.items()
    })
    yield handler.files
    server.shutdown()
    server.server_close()


def test_online_download_through_tfds(online, tiny, tmp_path):
    folder, _ = tiny
    downloaded = data.load("mnist", val_examples=5, cache_dir=tmp_path)
    local = data.load("mnist", folder, val_examples=5, source="idx")
    for split in ("train", "val", "test"):
        assert_split_equal(getattr(downloaded, split), getattr(local, split))
    assert list(tmp_path.glob("*/downloads/*"))


def test_online_download_with_a_wrong_checksum_is_refused(online, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    online[name] = online[name][:-4] + b"\0\0\0\0"
    message = error_of(data.load, "mnist", val_examples=5, cache_dir=tmp_path)
    assert "NonMatchingChecksumError" in message and "JAXMNIST_DATA_DIR" in message
    assert not list(tmp_path.rglob("arrays.npz"))


# --- validation split -----------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 40, 41, 2.5, True])
def test_bad_val_examples(tiny, monkeypatch, bad):
    folder, _ = tiny
    pin_hashes(monkeypatch, folder)
    assert "val_examples" in error_of(data.load, "mnist", folder, val_examples=bad, source="idx")


def test_validation_split_is_a_fixed_permutation(tiny, monkeypatch):
    folder, arrays = tiny
    pin_hashes(monkeypatch, folder)
    ds = data.load("mnist", folder, val_examples=7, source="idx")
    perm = np.random.default_rng(0).permutation(40)
    np.testing.assert_array_equal(ds.val.images[..., 0], arrays["train_images"][perm[:7]])
    np.testing.assert_array_equal(ds.train.images[..., 0], arrays["train_images"][np.sort(perm[7:])])
    assert (len(ds.train), len(ds.val), len(ds.test), ds.name) == (33, 7, 12, "mnist")
    np.random.seed(123)  # a user's global seed must not move the split
    assert_split_equal(data.load("mnist", folder, val_examples=7, source="idx").val, ds.val)
    empty = data.load("mnist", folder, val_examples=0, source="idx")
    assert len(empty.val) == 0 and empty.val.images.shape == (0, 28, 28, 1)
    np.testing.assert_array_equal(empty.train.labels, arrays["train_labels"])


def test_validation_permutation_is_pinned():
    """numpy does not promise Generator streams across releases: a move must fail here, not shift val."""
    index = np.arange(60000)
    train, val = splits.carve_validation(data.Split(images=index, labels=index), 5000)
    assert val.labels[:8].tolist() == [4013, 23840, 29603, 43011, 58703, 2290, 55984, 52800]
    digest = hashlib.sha256(val.labels.astype("<i8").tobytes()).hexdigest()
    assert digest == "cfd200f917d4cb9f2aa9fe283c2713c5841b1888ad943548a7ac4cf09ba75ff1"
    assert np.all(np.diff(train.labels) > 0) and len(np.union1d(train.labels, val.labels)) == 60000


# --- tfds route and cache -------------------------------------------------------


def test_tfds_route_matches_the_numpy_parser(tiny, tmp_path):
    folder, _ = tiny
    train, test = tfds_source.load_tfds("mnist", str(folder), tmp_path / "cache", expected=None)
    idx_train, idx_test = data.read_idx_folder(folder)
    assert_split_equal(train, idx_train)
    assert_split_equal(test, idx_test)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_load_sources_agree(tiny, monkeypatch, tmp_path):
    folder, _ = tiny
    pin_hashes(monkeypatch, folder)
    by_idx = data.load("mnist", folder, val_examples=5, source="idx")
    for source in ("tfds", "auto"):
        other = data.load("mnist", folder, val_examples=5, source=source, cache_dir=tmp_path)
        for split in ("train", "val", "test"):
            assert_split_equal(getattr(other, split), getattr(by_idx, split))


def cache_file(cache_root: Path) -> Path:
    (path,) = cache_root.glob("*/arrays.npz")
    return path


def forbid_rebuild(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("cache miss: tfds was asked to prepare or read")

    monkeypatch.setattr(tfds_source, "_prepare_and_read", fail)


def test_second_load_hits_the_cache(tiny, monkeypatch, tmp_path):
    folder, _ = tiny
    pin_hashes(monkeypatch, folder)
    first = data.load("mnist", folder, val_examples=5, cache_dir=tmp_path)
    forbid_rebuild(monkeypatch)
    start = time.monotonic()
    second = data.load("mnist", folder, val_examples=5, cache_dir=tmp_path)
    assert time.monotonic() - start < 1.0
    for split in ("train", "val", "test"):
        assert_split_equal(getattr(first, split), getattr(second, split))


def test_changed_source_invalidates_the_cache(tiny, tmp_path):
    folder, arrays = tiny
    tfds_source.load_tfds("mnist", str(folder), tmp_path, expected=None)
    new_labels = (arrays["train_labels"] + 3) % 10
    write_idx(folder, "train_labels", idx_bytes(new_labels))
    train, _ = tfds_source.load_tfds("mnist", str(folder), tmp_path, expected=None)
    np.testing.assert_array_equal(train.labels, new_labels)


def test_verified_cache_rechecks_a_changed_source(tiny, monkeypatch, tmp_path):
    folder, arrays = tiny
    pin_hashes(monkeypatch, folder)
    data.load("mnist", folder, val_examples=5, cache_dir=tmp_path)
    write_idx(folder, "test_images", idx_bytes(255 - arrays["test_images"]))
    message = error_of(data.load, "mnist", folder, val_examples=5, cache_dir=tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in message


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "foreign_meta"])
def test_corrupt_cache_is_rebuilt(tiny, tmp_path, caplog, damage):
    folder, _ = tiny
    expected = tfds_source.load_tfds("mnist", str(folder), tmp_path, expected=None)
    path = cache_file(tmp_path)
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF  # inside the train images: caught by the zip CRC
    elif damage == "truncate":
        del blob[len(blob) // 3:]
    elif damage == "garbage":
        blob = bytearray(b"not a zip file")
    path.write_bytes(bytes(blob))
    if damage == "foreign_meta":  # a valid file from another cache format
        with np.load(path) as npz:
            arrays = dict(npz)
        arrays["meta"] = np.frombuffer(json.dumps({"format": -1}).encode(), np.uint8)
        np.savez(path, **arrays)
    got = tfds_source.load_tfds("mnist", str(folder), tmp_path, expected=None)
    for a, b in zip(got, expected):
        assert_split_equal(a, b)
    assert tfds_source._read_cache(path, meta_of(folder)) is not None, "cache was not rewritten"
    warned = [r.getMessage() for r in caplog.records if "ignoring unreadable cache" in r.getMessage()]
    assert len(warned) == (0 if damage == "foreign_meta" else 1), warned
    if damage == "flip":
        assert "CRC" in warned[0]


def meta_of(folder: Path) -> dict:
    source = tfds_source._source_fingerprint(idx.idx_paths(folder))
    return {"format": tfds_source._CACHE_FORMAT, "name": "mnist", "source": source}


def test_damaged_prepared_dataset_is_prepared_again(tiny, tmp_path, caplog):
    folder, _ = tiny
    expected = tfds_source.load_tfds("mnist", str(folder), tmp_path, expected=None)
    cache_file(tmp_path).unlink()
    shards = list(tmp_path.rglob("*.array_record*"))
    assert shards
    for shard in shards:
        shard.write_bytes(shard.read_bytes()[:40])
    got = tfds_source.load_tfds("mnist", str(folder), tmp_path, expected=None)
    for a, b in zip(got, expected):
        assert_split_equal(a, b)
    assert any("preparing it again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("pinned", [True, False])
def test_partial_read_back_is_an_error_not_a_dataset(tiny, monkeypatch, tmp_path, pinned):
    folder, _ = tiny
    if pinned:
        pin_hashes(monkeypatch, folder)
    real_read = tfds_source._read_prepared

    def drop_last_test_example(builder):
        train, test = real_read(builder)
        return train, data.Split(test.images[:-1], test.labels[:-1])

    monkeypatch.setattr(tfds_source, "_read_prepared", drop_last_test_example)
    expected = idx.OFFICIAL_SHA256["mnist"] if pinned else None
    message = error_of(tfds_source.load_tfds, "mnist", str(folder), tmp_path, expected)
    assert "differs from its source files" in message
    assert not list(tmp_path.rglob("arrays.npz"))


_SUBPROCESS_LOAD = """
import json, sys
from jaxmnist import data
from jaxmnist.data import idx

idx.OFFICIAL_SHA256['mnist'] = json.loads(sys.argv[3])
ds = data.load('mnist', sys.argv[1], val_examples=5, source='tfds', cache_dir=sys.argv[2])
print(json.dumps({'n': len(ds.train), 'tensorflow': 'tensorflow' in sys.modules,
                  'tfds': 'tensorflow_datasets' in sys.modules}))
"""


def test_tfds_route_never_imports_tensorflow(tiny, monkeypatch, tmp_path):
    folder, _ = tiny
    pin_hashes(monkeypatch, folder)
    args = [str(folder), str(tmp_path / "cache"), json.dumps(idx.OFFICIAL_SHA256["mnist"])]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", _SUBPROCESS_LOAD, *args], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert run() == {"n": 35, "tensorflow": False, "tfds": True}  # cold: prepared through tfds
    assert run() == {"n": 35, "tensorflow": False, "tfds": False}  # warm: tfds not even imported


# --- real MNIST -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jaxmnist-cache")


@pytest.fixture(scope="module")
def real(mnist_dir, real_cache):
    """The cold tfds route: prepares, decodes and caches real MNIST once for this module."""
    return data.load("mnist", mnist_dir, cache_dir=real_cache)


def test_real_mnist_sizes_and_class_counts(real):
    assert (len(real.train), len(real.val), len(real.test)) == (55000, 5000, 10000)
    train_labels = np.concatenate([real.train.labels, real.val.labels])
    assert np.bincount(train_labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(real.test.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert real.train.images.shape == (55000, 28, 28, 1) and real.train.images.dtype == np.uint8
    pixels = np.concatenate([real.train.images, real.val.images])
    assert abs(pixels.mean() / 255 - 0.1307) < 5e-4


def test_real_mnist_tfds_equals_numpy_parser(real, mnist_dir):
    by_idx = data.load("mnist", mnist_dir, source="idx")
    for split in ("train", "val", "test"):
        assert_split_equal(getattr(real, split), getattr(by_idx, split))


def test_real_mnist_validation_split(real, mnist_dir):
    full_train, test = data.read_idx_folder(mnist_dir)
    assert_split_equal(real.test, test)
    perm = np.random.default_rng(0).permutation(60000)
    val_idx, train_idx = perm[:5000], np.sort(perm[5000:])
    assert not set(val_idx.tolist()) & set(train_idx.tolist())
    assert len(set(val_idx.tolist()) | set(train_idx.tolist())) == 60000
    np.testing.assert_array_equal(real.val.images, full_train.images[val_idx])
    np.testing.assert_array_equal(real.train.labels, full_train.labels[train_idx])


def test_real_mnist_warm_load_is_fast_and_deterministic(real, mnist_dir, real_cache, monkeypatch):
    forbid_rebuild(monkeypatch)
    start = time.monotonic()
    again = data.load("mnist", mnist_dir, cache_dir=real_cache)
    assert time.monotonic() - start < 1.0
    for split in ("train", "val", "test"):
        assert_split_equal(getattr(again, split), getattr(real, split))
    no_val = data.load("mnist", mnist_dir, val_examples=0, cache_dir=real_cache)
    assert len(no_val.train) == 60000 and len(no_val.val) == 0


def test_real_mnist_folder_is_not_fashion_mnist(mnist_dir):
    message = error_of(data.load, "fashion_mnist", mnist_dir, source="idx")
    assert "train-images-idx3-ubyte" in message and "that is mnist's file" in message


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="optional: apt-get install dataset-fashion-mnist")
def test_fashion_mnist_official_files_match_the_pins():
    ds = data.load("fashion_mnist", FASHION_DIR, source="idx")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55000, 5000, 10000)
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
