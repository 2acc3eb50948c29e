"""`python -m jaxmnist.export --workdir DIR --out model.jaxexport`: a checkpoint as one file to serve.

`--format jax` (the default) writes the eval-mode inference function serialised with
`jax.export`; `--format onnx` writes the same network as an ONNX graph
(`jaxmnist.use.onnx_graph`: uint8 input in `--layout nhwc` or `nchw`, dynamic batch,
normalisation inside, opset 17) for onnxruntime, TensorRT, OpenVINO or a browser.

The jax artifact is the eval-mode inference function serialised with `jax.export`:
input uint8 MNIST-format images (B, 28, 28, 1) with B symbolic, output (B, 10)
log-probabilities, the recipe's normalisation inside and the trained params and batch
statistics baked in as constants, lowered for CPU and CUDA. Loading it needs only jax
and numpy (`jaxmnist.use.exported.load`), not flax nor this package's network code, and
it computes exactly what the checkpoint computes.

Beside it goes `<out>.json`: arch, epoch, normalisation, parameter count, the test
accuracy recorded with the checkpoint, the jax version, and the artifact's sha256, which
the loader checks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

from jaxmnist import cli
from jaxmnist.files import atomic_write

PLATFORMS = ("cpu", "cuda")
FORMAT = "jaxmnist.jaxexport/1"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jaxmnist.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_checkpoint_args(parser)
    parser.add_argument("--out", required=True, help="artifact path, e.g. model.jaxexport or model.onnx")
    parser.add_argument("--format", choices=("jax", "onnx"), default="jax",
                        help="jax: a jax.export artifact (default); onnx: an ONNX graph")
    parser.add_argument("--layout", choices=("nhwc", "nchw"), default="nhwc",
                        help="ONNX input layout: (N, 28, 28, 1) uint8, or (N, 1, 28, 28) as PyTorch feeds")
    return parser.parse_args(argv)


def exported(model, platforms=PLATFORMS):
    """`jax.export.Exported` of the model's eval-mode function, batch dimension symbolic."""
    import jax
    import jax.numpy as jnp

    (b,) = jax.export.symbolic_shape("b")
    # `model.apply` closes over the restored arrays, so they are baked into the module.
    return jax.export.export(jax.jit(model.apply), platforms=platforms)(
        jax.ShapeDtypeStruct((b, 28, 28, 1), jnp.uint8))


def sidecar_path(path: str) -> str:
    return f"{path}.json"


def write(model, out: str, platforms=PLATFORMS) -> dict:
    """Writes the jax artifact and its sidecar (each atomically); returns the sidecar dict."""
    import jax

    blob = bytes(exported(model, platforms).serialize())
    return _write_with_sidecar(model, out, blob, {"format": FORMAT, "platforms": list(platforms),
                                                  "jax_version": jax.__version__})


def write_onnx(model, out: str, layout: str = "nhwc") -> dict:
    """Writes the ONNX graph (checked by onnx.checker) and its sidecar."""
    import onnx

    from jaxmnist.use import onnx_graph

    graph = onnx_graph.from_model(model, layout)
    onnx.checker.check_model(graph, full_check=True)
    shape = ["N", 28, 28, 1] if layout == "nhwc" else ["N", 1, 28, 28]
    return _write_with_sidecar(model, out, graph.SerializeToString(), {
        "format": f"onnx/opset{onnx_graph.OPSET}", "layout": layout, "input_shape": shape,
        "onnx_version": onnx.__version__})


def _write_with_sidecar(model, out: str, blob: bytes, extra: dict) -> dict:
    extra = dict(extra)
    shape = extra.pop("input_shape", ["b", 28, 28, 1])
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    atomic_write(out, blob)
    info = {
        **extra,
        "arch": model.arch,
        "epoch": model.epoch,
        "workdir": os.path.abspath(model.workdir),
        "input": {"shape": shape, "dtype": "uint8",
                  "meaning": "MNIST-format images: light ink on black, 20x20 box centred by mass"},
        "output": {"shape": ["b", 10], "dtype": "float32", "meaning": "log-probabilities"},
        "normalization": {"mean": model.recipe.mean, "std": model.recipe.std,
                          "applied": "inside the function: (x / 255 - mean) / std"},
        "params": model.params_count,
        "test_accuracy": model.test_accuracy,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
    }
    atomic_write(sidecar_path(out), (json.dumps(info, indent=1) + "\n").encode())
    return info


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    if args.format == "onnx":
        cli.require_extra("onnx", "onnx")
    else:
        cli.require_extra("export", "flatbuffers")
    from jaxmnist.use import inference

    model = inference.load(args.workdir, args.epoch, args.best, args.model, lowering="plain")
    info = write_onnx(model, args.out, args.layout) if args.format == "onnx" else write(model, args.out)
    acc = "" if info["test_accuracy"] is None else f", test accuracy {info['test_accuracy']:.2f}%"
    print(f"wrote {args.out} ({info['bytes']} bytes, {model.arch} epoch {model.epoch}{acc}) "
          f"and {sidecar_path(args.out)}", file=sys.stderr)
