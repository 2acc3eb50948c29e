"""The five seed networks and their two lowerings, from one definition.

`archs` holds each network as a tuple of layer specs (`layers`); `plain.Net` is the
definition in standard Flax ops (GPU/TPU), `cpu.CpuNet` the same function written for
XLA:CPU; `lowering` picks one. `build(arch, lowering)` is how everything else gets a
network; both lowerings take the same variables, initialised by the plain definition.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxmnist.nets import lowering as lowering_lib
from jaxmnist.nets.archs import ARCHS, EXPECTED_PARAMS, UnknownArch, check_arch, spec_of
from jaxmnist.nets.plain import Net

__all__ = ["ARCHS", "EXPECTED_PARAMS", "UnknownArch", "check_arch", "spec_of", "Net", "build",
           "network_class", "init_variables", "count_params"]


def build(arch: str, init: str = "torch", dropout: float | None = None,
          lowering: str | None = None) -> nn.Module:
    """The arch's network in a lowering: "plain" (`Net`), "cpu" (`cpu.CpuNet`), "auto",
    or None ($JAXMNIST_LOWERING, else auto; see `lowering.resolve`). Every lowering takes
    the same variables."""
    return network_class(lowering)(spec_of(arch, dropout), init)


def network_class(lowering: str | None = None) -> type[nn.Module]:
    if lowering_lib.resolve(lowering) == "cpu":
        from jaxmnist.nets.cpu import CpuNet

        return CpuNet
    return Net


def init_variables(model: nn.Module, key, batch: int = 1):
    """Parameters and batch statistics for (batch, 28, 28, 1) inputs.

    Always initialised by the plain definition, whatever lowering `model` is, so every
    lowering starts a seed from the same values.

    lazy_init traces the forward pass for shapes only; under jit the initialisers form
    one small program that lands in the persistent compilation cache, where eager or
    un-jitted lazy init dispatches (and compiles) each initialiser separately on every
    start (1.7 s for gap8k, against 0.1 s from the cache).
    """
    return _jitted_init(model.spec, model.init_scheme, batch)(key)


@functools.lru_cache(maxsize=None)
def _jitted_init(spec: tuple, init_scheme: str, batch: int):
    x = jax.ShapeDtypeStruct((batch, 28, 28, 1), jnp.float32)
    net = Net(spec, init_scheme)
    return jax.jit(lambda key: net.lazy_init({"params": key}, x, train=False))


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
