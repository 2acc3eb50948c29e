"""Layer specs, PyTorch-style initialisers and the torch-semantics BatchNorm.

An architecture is a tuple of the small frozen specs below. The same tuple drives the
plain Flax network (`nets.Net`, the definition), the CPU lowering (`jaxmnist.nets.cpu`),
the torchsummary-style table (`summary`), receptive-field and MAC arithmetic, so none of
them can disagree about what a network is.

Initialisation follows PyTorch's defaults so the seeds' recipes transfer unchanged:
Conv2d/Linear weights are kaiming-uniform with a=sqrt(5), i.e. U(+-1/sqrt(fan_in)), and
biases U(+-1/sqrt(fan_in)); BatchNorm starts at scale 1, bias 0. `init="flax"` swaps in
flax's defaults (lecun-normal kernels, zero biases) for comparison.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Conv:
    features: int
    kernel: int = 3
    padding: int = 0
    bias: bool = False


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    pass


@dataclasses.dataclass(frozen=True)
class ReLU:
    pass


@dataclasses.dataclass(frozen=True)
class MaxPool:
    """2x2 max pool with stride 2 (every seed uses exactly this)."""


@dataclasses.dataclass(frozen=True)
class Dropout:
    rate: float


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool:
    pass


@dataclasses.dataclass(frozen=True)
class Flatten:
    """Flattens in PyTorch's (C, H, W) order, so a Dense layer sees torch's feature order."""


@dataclasses.dataclass(frozen=True)
class Dense:
    features: int
    bias: bool = True


def torch_uniform(fan_in: int):
    """U(+-1/sqrt(fan_in)): PyTorch's default for both weights (kaiming a=sqrt(5)) and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def initializers(init: str, fan_in: int):
    """(kernel_init, bias_init) of a conv or dense layer with `fan_in` inputs per output."""
    if init == "torch":
        return torch_uniform(fan_in), torch_uniform(fan_in)
    if init == "flax":
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    raise ValueError(f"unknown init {init!r}: use 'torch' or 'flax'")


def torch_flatten(x):
    """(N, H, W, C) -> (N, C*H*W) in PyTorch's order."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


class LayerNames:
    """conv1, conv2, bn1, ...: the parameter tree's names, shared by every lowering."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{kind}{self.counts[kind]}"


class TorchBatchNormBase(nn.Module):
    """Parameters, running statistics and their update with PyTorch's semantics.

    Differences from flax's BatchNorm that matter for transferring recipes: the running
    variance is updated with the *unbiased* batch variance (torch does, flax does not),
    momentum 0.1 is the weight of the new batch (flax's momentum=0.9), eps=1e-5.
    Subclasses (this module's `BatchNormLayer`, the CPU lowering's) differ only in how
    they compute the batch moments and apply the normalisation; the trees are the same.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    def variables_for(self, c: int):
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        return scale, bias, ra_mean, ra_var

    def update_running(self, ra_mean, ra_var, mean, var, n: int) -> None:
        """mean/var: the batch's (biased) moments over n values per channel."""
        if self.is_initializing():
            return
        m = self.momentum
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)


class BatchNormLayer(TorchBatchNormBase):
    """BatchNorm2d / BatchNorm1d over every axis but the last, as PyTorch computes it."""

    @nn.compact
    def __call__(self, x, train: bool):
        scale, bias, ra_mean, ra_var = self.variables_for(x.shape[-1])
        if train:
            axes = tuple(range(x.ndim - 1))
            mean, var = jnp.mean(x, axes), jnp.var(x, axes)
            self.update_running(ra_mean, ra_var, mean, var, x.size // x.shape[-1])
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
