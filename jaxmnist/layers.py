"""Layer specs and their Flax implementations.

An architecture is a tuple of the small frozen specs below. The same tuple drives the
Flax module (`models.Net`), the torchsummary-style table (`summary`), receptive-field and
MAC arithmetic, so the three can never disagree about what a network is.

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

from jaxmnist import ops


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


def _initializers(init: str, fan_in: int):
    if init == "torch":
        return torch_uniform(fan_in), torch_uniform(fan_in)
    if init == "flax":
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    raise ValueError(f"unknown init {init!r}: use 'torch' or 'flax'")


class ConvLayer(nn.Module):
    spec: Conv
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x, defer_bias: bool = False, blocks: str = ""):
        """defer_bias=True returns (conv without bias, bias) for a BatchNorm to absorb.

        blocks: "" pixels in and out; "out": pixels in, output left on 2x2 blocks
        (ops.conv2d_on_blocks); "in-out": input and output on blocks (a 1x1 conv, or
        ops.conv2d_blocks_to_blocks). On blocks a bias is only deferred, never added."""
        k = self.spec.kernel
        cin = x.shape[-1] // (4 if blocks == "in-out" else 1)
        kinit, binit = _initializers(self.init_scheme, cin * k * k)
        kernel = self.param("kernel", kinit, (k, k, cin, self.spec.features))
        if blocks == "out":
            y = ops.conv2d_on_blocks(x, kernel, self.spec.padding)
        elif blocks == "in-out" and k == 1:  # the same matmul on each block member
            y = (x.reshape(-1, cin) @ kernel[0, 0]).reshape(*x.shape[:-1], 4 * self.spec.features)
        elif blocks == "in-out":
            y = ops.conv2d_blocks_to_blocks(x, kernel)
        else:
            y = ops.conv2d(x, kernel, self.spec.padding)
        bias = self.param("bias", binit, (self.spec.features,)) if self.spec.bias else None
        if defer_bias:
            return y, bias
        if blocks and bias is not None:
            raise ValueError("a conv bias on 2x2 blocks must be deferred to a BatchNorm")
        return y if bias is None else y + bias


class DenseLayer(nn.Module):
    spec: Dense
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x):
        kinit, binit = _initializers(self.init_scheme, x.shape[-1])
        kernel = self.param("kernel", kinit, (x.shape[-1], self.spec.features))
        y = x @ kernel
        if self.spec.bias:
            y = y + self.param("bias", binit, (self.spec.features,))
        return y


class BatchNormLayer(nn.Module):
    """BatchNorm with PyTorch's semantics rather than flax's.

    Differences that matter for transferring recipes: the running variance is updated
    with the *unbiased* batch variance (torch does, flax does not), momentum 0.1 is the
    weight of the new batch (flax's momentum=0.9), eps=1e-5. Statistics are computed in
    one pass (E[x], E[x^2]) so the backward pass touches the activations once.

    `shift`: the input is really x + shift (a per-channel constant, e.g. the bias of the
    convolution before). In training mode a constant cancels in x - mean, so it only
    enters the running mean; adding it to every activation first would cost a full pass
    over the largest tensors of the network forward and another (its always-zero
    gradient) backward.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool, shift=None, groups: int = 1, apply: bool = True):
        """groups > 1: x's last axis holds that many side-by-side copies of the channels
        (2x2 blocks, ops.conv2d_on_blocks), normalised per channel over all of them.
        apply=False returns the per-channel (scale, offset) instead of x * scale + offset,
        for a consumer that applies them itself (ops.bn_relu_max_pool_on_blocks,
        ops.bn_relu_dropout_max_pool)."""
        c = x.shape[-1] // groups
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if train:
            mean, var = ops.batch_moments(x, groups)
            if not self.is_initializing():
                n = x.size // c
                m = self.momentum
                unbiased = var * (n / max(n - 1, 1))
                true_mean = mean if shift is None else mean + shift
                ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(true_mean)
                ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
        else:
            x = x if shift is None else x + shift
            mean, var = ra_mean.value, ra_var.value
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        offset = bias - mean * mul
        if not apply:
            return mul, offset
        if groups > 1:
            mul, offset = ops.spread_over_groups(mul, groups), ops.spread_over_groups(offset, groups)
        return x * mul + offset
