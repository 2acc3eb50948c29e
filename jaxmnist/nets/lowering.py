"""Which lowering of the networks runs, and how many train steps one call runs.

`plain` (`jaxmnist.nets.plain.Net`) is the definition: standard ops that XLA's GPU and
TPU compilers optimise. `cpu` (`jaxmnist.nets.cpu`) is the same network written for
XLA:CPU on a few cores: 1.6-2.6x PyTorch eager's train step on 2 cores, but measured on
CPUs only. `auto`, the default, is `cpu` on a CPU backend and `plain` everywhere else.
Both take the same parameter and batch_stats trees, so either restores the other's
checkpoints.

Chosen by `--lowering` or $JAXMNIST_LOWERING; the older spellings `--kernels` and
$JAXMNIST_KERNELS are still read, with a deprecation warning.
"""

from __future__ import annotations

import argparse
import os
import warnings

CHOICES = ("auto", "plain", "cpu")
ENV = "JAXMNIST_LOWERING"
OLD_ENV = "JAXMNIST_KERNELS"  # deprecated spelling of ENV

# Train steps per jitted call on accelerators: a lax.scan over precomputed batches, so a
# ~1 ms step is not bound by one host dispatch each. On CPU one step per call: the scan
# measured slower there (a step takes tens of ms; dispatch costs microseconds).
ACCELERATOR_STEPS_PER_CALL = 25


def requested(choice: str | None = None) -> str:
    """The choice as asked: `choice`, else $JAXMNIST_LOWERING (or the deprecated
    $JAXMNIST_KERNELS), else "auto"; an unknown value is a ValueError naming its source."""
    source = "--lowering"
    if not choice:
        source, choice = ENV, os.environ.get(ENV)
    if not choice and os.environ.get(OLD_ENV):
        warnings.warn(f"${OLD_ENV} is deprecated; set ${ENV}", FutureWarning, stacklevel=2)
        source, choice = OLD_ENV, os.environ[OLD_ENV]
    choice = choice or "auto"
    if choice not in CHOICES:
        where = source if source.startswith("--") else f"${source}"
        raise ValueError(f"{where} must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice


def resolve(choice: str | None = None, backend: str | None = None) -> str:
    """"plain" or "cpu": what `choice` (see `requested`) means on `backend`."""
    choice = requested(choice)
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
    parser.add_argument("--lowering", choices=CHOICES, default=None,
                        help=f"lowering of the network: plain (standard ops, for GPU/TPU), cpu "
                             f"(CPU-specific kernels) or auto: cpu on a CPU backend, else plain "
                             f"(default: ${ENV}, else auto)")
    from jaxmnist.cli import DeprecatedAlias

    parser.add_argument("--kernels", choices=CHOICES, dest="lowering", action=DeprecatedAlias,
                        const="--lowering",
                        help=argparse.SUPPRESS)
    if steps_per_call:
        parser.add_argument("--steps-per-call", type=int, default=None,
                            help=f"train steps per jitted call (lax.scan); default 1 on CPU, "
                                 f"{ACCELERATOR_STEPS_PER_CALL} on GPU/TPU")
