"""Loads a `python -m jaxmnist.export` artifact: jax and numpy only, no flax, no jaxmnist nets.

    from jaxmnist.use.exported import load
    net = load("model.jaxexport")
    log_probs = net(images_uint8)  # (B, 28, 28, 1) or (B, 28, 28), MNIST format -> (B, 10)

A serving machine needs nothing of the training stack: the module holds the whole
network with its weights. When `<path>.json` (the sidecar) is present its sha256 is
checked first, so a truncated or swapped artifact fails loudly instead of answering.
Keep this module free of imports beyond jax, numpy and the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np


class ArtifactError(ValueError):
    """The artifact is missing, unreadable, or does not match its sidecar."""


class ExportedModel:
    """Callable: uint8 MNIST-format images -> (B, 10) float32 log-probabilities (numpy).

    Each distinct batch size compiles once (the batch dimension is symbolic).
    """

    def __init__(self, exported: jax.export.Exported, info: dict | None):
        self.exported = exported
        self.info = info or {}
        self._call = jax.jit(exported.call)

    def __call__(self, images) -> np.ndarray:
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
            raise ValueError(f"expected images (B, 28, 28, 1), got shape {x.shape}")
        if x.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels 0..255 in MNIST format, got {x.dtype}")
        return np.asarray(self._call(x))


def load(path: str, verify: bool = True) -> ExportedModel:
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None
    info = None
    sidecar = f"{path}.json"
    if os.path.exists(sidecar):
        try:
            with open(sidecar) as f:
                info = json.load(f)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{sidecar} is unreadable ({exc})") from None
        digest = hashlib.sha256(blob).hexdigest()
        if verify and info.get("sha256") != digest:
            raise ArtifactError(
                f"{path} does not match {sidecar} (sha256 {digest[:12]}... vs "
                f"{str(info.get('sha256'))[:12]}...); the artifact is damaged or was replaced")
    try:
        exported = jax.export.deserialize(bytearray(blob))
    except Exception as exc:  # flatbuffer / MLIR parse errors come in many types
        raise ArtifactError(f"{path} is not a jax.export artifact ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    return ExportedModel(exported, info)
