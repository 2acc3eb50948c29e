"""`python -m jaxmnist.export --workdir DIR --out model.jaxexport`: a checkpoint as one file to serve.

The artifact is the eval-mode inference function serialised with `jax.export`:
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
    parser.add_argument("--out", required=True, help="artifact path, e.g. model.jaxexport")
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
    """Writes the artifact and its sidecar (each atomically); returns the sidecar dict."""
    import jax

    blob = bytes(exported(model, platforms).serialize())
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    atomic_write(out, blob)
    info = {
        "format": FORMAT,
        "arch": model.arch,
        "epoch": model.epoch,
        "workdir": os.path.abspath(model.workdir),
        "input": {"shape": ["b", 28, 28, 1], "dtype": "uint8",
                  "meaning": "MNIST-format images: light ink on black, 20x20 box centred by mass"},
        "output": {"shape": ["b", 10], "dtype": "float32", "meaning": "log-probabilities"},
        "normalization": {"mean": model.recipe.mean, "std": model.recipe.std,
                          "applied": "inside the function: (x / 255 - mean) / std"},
        "params": model.params_count,
        "test_accuracy": model.test_accuracy,
        "platforms": list(platforms),
        "jax_version": jax.__version__,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
    }
    atomic_write(sidecar_path(out), (json.dumps(info, indent=1) + "\n").encode())
    return info


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    cli.require_extra("export", "flatbuffers")
    from jaxmnist.use import inference

    model = inference.load(args.workdir, args.epoch, args.best, args.model, lowering="plain")
    info = write(model, args.out)
    acc = "" if info["test_accuracy"] is None else f", test accuracy {info['test_accuracy']:.2f}%"
    print(f"wrote {args.out} ({info['bytes']} bytes, {model.arch} epoch {model.epoch}{acc}) "
          f"and {sidecar_path(args.out)}", file=sys.stderr)
