"""Which lowering of the networks runs, and how many train steps one call runs.

`plain` (jaxmnist.models.Net) is the definition: standard ops that XLA's GPU and TPU
compilers optimise (cuDNN convolutions, reduce_window pooling, fused BatchNorm, a plain
vmap for K models). `cpu` (jaxmnist.cpu) is the same network written for XLA:CPU on a
few cores: 1.6-2.6x PyTorch eager's train step on 2 cores, but measured on CPUs only.
`auto`, the default, is `cpu` on a CPU backend and `plain` everywhere else. Both take
the same parameter and batch_stats trees, so either restores the other's checkpoints.
"""

from __future__ import annotations

import argparse
import os

CHOICES = ("auto", "plain", "cpu")
ENV = "JAXMNIST_KERNELS"

# Train steps per jitted call on accelerators: a lax.scan over precomputed batches, so a
# ~1 ms step is not bound by one host dispatch each. On CPU one step per call: the scan
# measured slower there (a step takes tens of ms; dispatch costs microseconds).
ACCELERATOR_STEPS_PER_CALL = 25


def resolve(kernels: str | None = None, backend: str | None = None) -> str:
    """"plain" or "cpu" for `kernels` (None: $JAXMNIST_KERNELS, else "auto")."""
    choice = kernels or os.environ.get(ENV) or "auto"
    if choice not in CHOICES:
        source = f"${ENV}" if not kernels else "--kernels"
        raise ValueError(f"{source} must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice != "auto":
        return choice
    if backend is None:
        import jax

        backend = jax.default_backend()
    return "cpu" if backend == "cpu" else "plain"


def default_steps_per_call(backend: str | None = None) -> int:
    if backend is None:
        import jax

        backend = jax.default_backend()
    return 1 if backend == "cpu" else ACCELERATOR_STEPS_PER_CALL


def add_arguments(parser: argparse.ArgumentParser, steps_per_call: bool = True) -> None:
    parser.add_argument("--kernels", choices=CHOICES, default=None,
                        help=f"lowering of the network: plain (standard ops, for GPU/TPU), cpu "
                             f"(CPU-specific kernels) or auto: cpu on a CPU backend, else plain "
                             f"(default: ${ENV}, else auto)")
    if steps_per_call:
        parser.add_argument("--steps-per-call", type=int, default=None,
                            help=f"train steps per jitted call (lax.scan); default 1 on CPU, "
                                 f"{ACCELERATOR_STEPS_PER_CALL} on GPU/TPU")
