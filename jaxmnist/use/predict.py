"""`python -m jaxmnist.predict --workdir DIR PATH...`: classify your own digit images.

PATH is an image file (PNG, JPEG, ... any size, colour or grey, dark ink on light paper
or light on dark), a folder of them, or an array already in MNIST format: `.npy` of
shape (N, 28, 28) / (N, 28, 28, 1) / (28, 28) uint8, or an IDX images file (.gz or not)
like MNIST's own. Images go through `jaxmnist.use.preprocess.to_mnist` (MNIST's own
size-normalisation and centring); arrays are used as they are. Prints the top three
classes per image, or with --json one JSON object. An input that cannot be read, or an
image with no ink, prints one `error:` line and the rest are still classified; the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from jaxmnist import cli

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
EXIT_SOME_FAILED = 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jaxmnist.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_checkpoint_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument("--save-preprocessed", metavar="DIR", default=None,
                        help="write each 28x28 input the net saw as a PNG into DIR")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, .npy or IDX files")
    return parser.parse_args(argv)


def expand(paths) -> list[Path]:
    """Files as given; folders contribute their image/array files, sorted, recursively."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                              and (f.suffix.lower() in IMAGE_SUFFIXES | {".npy"} or _looks_idx(f))))
        else:
            out.append(p)
    return out


def _looks_idx(path: Path) -> bool:
    return "idx3" in path.name or path.suffix.lower() == ".idx"


def read_input(path: Path) -> list[tuple[str, np.ndarray]]:
    """[(name, (28, 28) uint8)]: one entry for an image, N for an array file.

    Raises ValueError / DataError subclasses with a one-line message on bad input.
    """
    from jaxmnist.data import idx
    from jaxmnist.use import preprocess

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    try:
        head = path.open("rb").read(8)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(b"\x93NUMPY"):
        return _named(path, _mnist_array(np.load(path, allow_pickle=False), path))
    if head[:2] == b"\x1f\x8b" or int.from_bytes(head[:4], "big") == idx.IMAGES_MAGIC:
        return _named(path, idx.read_images(path))
    try:
        return [(str(path), preprocess.to_mnist(preprocess.open_image(path)))]
    except preprocess.NoInk as exc:
        raise preprocess.NoInk(f"{path}: {exc}") from None


def _mnist_array(a: np.ndarray, path: Path) -> np.ndarray:
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (28, 28) or a.dtype != np.uint8:
        raise ValueError(f"{path}: expected MNIST-format uint8 (N, 28, 28), got {a.dtype} {a.shape}")
    return a


def _named(path: Path, images: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [(f"{path}[{i}]", img) for i, img in enumerate(images)]


def top_k(log_probs: np.ndarray, k: int = 3) -> list[tuple[int, float]]:
    p = np.exp(np.asarray(log_probs, np.float64))
    order = np.argsort(-p, kind="stable")[:k]
    return [(int(c), float(p[c])) for c in order]


def predict_paths(model, paths, save_dir: str | None = None, log=None):
    """(results, n_failed): one result dict per image (or failed input), in input order.

    Failures are reported through `log` (one `error:` line each) as they happen.
    """
    from jaxmnist import data

    log = log or (lambda line: print(line, file=sys.stderr))
    entries: list[dict] = []
    images: list[np.ndarray] = []
    for path in expand(paths):
        try:
            items = read_input(path)
        except (ValueError, OSError, data.DataError) as exc:
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            log(f"error: {msg}")
            entries.append({"source": str(path), "error": msg})
            continue
        for name, img in items:
            entries.append({"source": name, "index": len(images)})
            images.append(img)
    if not entries:
        raise ValueError("no image or array files in the given paths")
    log_probs = model.log_probs(np.stack(images)[..., None]) if images else np.zeros((0, 10))
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    results = []
    for e in entries:
        if "error" in e:
            results.append(e)
            continue
        i = e["index"]
        lp = log_probs[i]
        result = {"source": e["source"], "prediction": int(np.argmax(lp)),
                  "top3": [{"class": c, "probability": p} for c, p in top_k(lp)],
                  "probabilities": np.exp(lp.astype(np.float64)).tolist()}
        if save_dir:
            result["preprocessed"] = _save_png(images[i], save_dir, e["source"], i)
        results.append(result)
    return results, sum("error" in r for r in results)


def _save_png(image: np.ndarray, folder: str, source: str, i: int) -> str:
    from PIL import Image

    stem = Path(source.split("[")[0]).stem or "image"
    suffix = source[len(source.split("[")[0]):].strip("[]")
    name = f"{i:05d}-{stem}{'-' + suffix if suffix else ''}.png"
    dest = os.path.join(folder, name)
    Image.fromarray(image, "L").save(dest)
    return dest


def format_result(r: dict) -> str:
    if "error" in r:
        return f"{r['source']}: error"
    tops = "  ".join(f"{t['class']} {100 * t['probability']:5.1f}%" for t in r["top3"])
    return f"{r['source']}: {r['prediction']}   ({tops})"


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    from jaxmnist.use import inference

    model = inference.load(args.workdir, args.epoch, args.best, args.model)
    results, failed = predict_paths(model, args.paths, args.save_preprocessed)
    if args.json:
        json.dump({"workdir": args.workdir, "arch": model.arch, "epoch": model.epoch,
                   "results": results, "failed": failed}, sys.stdout)
        print()
    else:
        for r in results:
            if "error" not in r:
                print(format_result(r))
    if failed:
        sys.exit(EXIT_SOME_FAILED)
