"""The CPU lowering's network: the spec of `jaxmnist.nets.archs` run with `ops`.

It plans, per layer and input shape, where activations stay on 2x2 pixel blocks, which
conv -> BatchNorm -> ReLU -> pool chains run as one fused op, and where a conv bias is
handed to the BatchNorm after it; the reasons and figures are in `jaxmnist.nets.cpu.ops` and
docs/cpu-lowering.md. Its parameter and batch_stats trees are the plain `Net`'s
(same names, shapes and dtypes), and it computes the same function: tests compare the two.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxmnist.nets.cpu import ops
from jaxmnist.nets.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LayerNames,
    MaxPool,
    ReLU,
    TorchBatchNormBase,
    initializers,
    torch_flatten,
)


class CpuConv(nn.Module):
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
        kinit, binit = initializers(self.init_scheme, cin * k * k)
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


class CpuDense(nn.Module):
    spec: Dense
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x):
        kinit, binit = initializers(self.init_scheme, x.shape[-1])
        y = x @ self.param("kernel", kinit, (x.shape[-1], self.spec.features))
        if self.spec.bias:
            y = y + self.param("bias", binit, (self.spec.features,))
        return y


class CpuBatchNorm(TorchBatchNormBase):
    """`layers.BatchNormLayer` for the CPU kernels: statistics in one pass (E[x], E[x^2],
    ops.batch_moments) so the backward pass touches the activations once.

    `shift`: the input is really x + shift (a per-channel constant, e.g. the bias of the
    convolution before). In training mode a constant cancels in x - mean, so it only
    enters the running mean; adding it to every activation first would cost a full pass
    over the largest tensors of the network forward and another (its always-zero
    gradient) backward.
    """

    @nn.compact
    def __call__(self, x, train: bool, shift=None, groups: int = 1, apply: bool = True):
        """groups > 1: x's last axis holds that many side-by-side copies of the channels
        (2x2 blocks, ops.conv2d_on_blocks), normalised per channel over all of them.
        apply=False returns the per-channel (scale, offset) instead of x * scale + offset,
        for a consumer that applies them itself (ops.bn_relu_max_pool_on_blocks,
        ops.bn_relu_dropout_max_pool)."""
        c = x.shape[-1] // groups
        scale, bias, ra_mean, ra_var = self.variables_for(c)
        if train:
            mean, var = ops.batch_moments(x, groups)
            true_mean = mean if shift is None else mean + shift
            self.update_running(ra_mean, ra_var, true_mean, var, x.size // c)
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


def _pixel_pool_stage(spec: tuple, i: int, x_shape) -> int:
    """How many layers from spec[i] form BatchNorm -> ReLU [-> Dropout] -> MaxPool on
    pixels of an even size; 0 if they do not."""
    ahead = list(spec[i:i + 4])
    if len(ahead) < 3 or not isinstance(ahead[0], BatchNorm) or not isinstance(ahead[1], ReLU):
        return 0
    n = 3 if isinstance(ahead[2], Dropout) else 2
    if n >= len(ahead) or not isinstance(ahead[n], MaxPool):
        return 0
    return n + 1 if x_shape[1] % 2 == 0 and x_shape[2] % 2 == 0 else 0


def _fused_pool_stage(spec: tuple, i: int, x_shape) -> bool:
    """conv -> BatchNorm -> ReLU -> MaxPool from pixels, the conv's blocks the pool windows."""
    if i + 3 >= len(spec):
        return False
    conv, bn, relu, pool = spec[i:i + 4]
    return (isinstance(conv, Conv) and isinstance(bn, BatchNorm) and isinstance(relu, ReLU)
            and isinstance(pool, MaxPool)
            and ops.output_on_blocks_possible(x_shape, _kernel_shape(conv, x_shape), conv.padding))


def _kernel_shape(conv: Conv, x_shape) -> tuple:
    return (conv.kernel, conv.kernel, x_shape[-1], conv.features)


def _bias_fits_blocks(spec: tuple, i: int) -> bool:
    """On blocks a conv bias can only be deferred to a BatchNorm right after the conv."""
    return not spec[i].bias or (i + 1 < len(spec) and isinstance(spec[i + 1], BatchNorm))


def _blocks_pay_off(spec: tuple, i: int, x_shape) -> bool:
    """Whether the conv at spec[i] (input on pixels of x_shape) should leave its output on
    blocks: the layers after it keep them (BatchNorm, ReLU, dropout, 1x1 convs) until a
    max pool or a blocks-to-blocks conv takes them."""
    conv = spec[i]
    h, w = (s + 2 * conv.padding - conv.kernel + 1 for s in x_shape[1:3])
    c = conv.features
    for j in range(i + 1, len(spec)):
        layer = spec[j]
        if isinstance(layer, MaxPool):
            return True
        if isinstance(layer, Conv):
            if not _bias_fits_blocks(spec, j):
                return False
            if layer.kernel == 1:
                c = layer.features
                continue
            shape = (1, h, w, c)
            return ops.blocks_to_blocks_possible(shape, _kernel_shape(layer, shape), layer.padding)
        if not isinstance(layer, (BatchNorm, ReLU, Dropout)):
            return False
    return False


class CpuNet(nn.Module):
    """The spec run with the CPU kernels; returns log-probabilities (N, 10) as `plain.Net`.

    Three fields choose the training-mode formulation; each default is the measured faster
    one (docs/cpu-lowering.md), and False gives the literal formulation, which tests
    compare against it:

    * defer_conv_bias: a conv bias followed by training-mode BatchNorm cancels in
      x - mean, so it is handed to the BatchNorm (for its running mean) instead of being
      added to every activation.
    * stages_on_blocks: activations stay on 2x2 pixel blocks from a convolution that runs
      on blocks anyway (ops.runs_on_blocks) through BatchNorm, ReLU, dropout, 1x1
      convolutions and unpadded convolutions whose blocks line up, down to a max pool
      over the block members, whenever the chain reaches such a pool or convolution;
      conv -> BatchNorm -> ReLU -> MaxPool (fc19k) is one fused stage
      (ops.bn_relu_max_pool_on_blocks). Evaluation always runs on pixels. Dropout on
      blocks draws its mask in block order: the same distribution, other masks.
    * fused_pixel_pool_stages: BatchNorm -> ReLU [-> Dropout] -> MaxPool on pixels
      (fc16k's two stages) is one op (ops.bn_relu_dropout_max_pool), whose backward pass
      takes BatchNorm's sums over the pooled values.
    """

    spec: tuple
    init_scheme: str = "torch"
    defer_conv_bias: bool = True
    stages_on_blocks: bool = True
    fused_pixel_pool_stages: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        name = LayerNames()

        spec = self.spec
        shift = None  # a conv bias deferred to the BatchNorm right after it
        blocks = False  # x is on 2x2 pixel blocks
        i = 0
        while i < len(spec):
            layer = spec[i]
            if train and self.stages_on_blocks and not blocks and _fused_pool_stage(spec, i, x.shape):
                conv = CpuConv(layer, self.init_scheme, name=name("conv"))
                yb, bias = conv(x, defer_bias=True, blocks="out")
                scale, offset = CpuBatchNorm(name=name("bn"))(yb, train, bias, groups=4,
                                                                apply=False)
                x = ops.bn_relu_max_pool_on_blocks(yb, scale, offset)
                i += 4
                continue
            if blocks and not isinstance(layer, (Conv, BatchNorm, ReLU, Dropout, MaxPool)):
                x, blocks = ops.to_pixels(x), False
            if isinstance(layer, Conv):
                defer = (train and self.defer_conv_bias and layer.bias and i + 1 < len(spec)
                         and isinstance(spec[i + 1], BatchNorm))
                n, h, w, c = x.shape
                on_pixels = (n, 2 * h, 2 * w, c // 4) if blocks else x.shape
                kernel_shape = _kernel_shape(layer, on_pixels)
                mode = ""
                if blocks and _bias_fits_blocks(spec, i) and (
                        layer.kernel == 1
                        or ops.blocks_to_blocks_possible(on_pixels, kernel_shape, layer.padding)):
                    mode = "in-out"
                elif (train and self.stages_on_blocks and not blocks and _bias_fits_blocks(spec, i)
                      and ops.output_on_blocks_possible(x.shape, kernel_shape, layer.padding)
                      and _blocks_pay_off(spec, i, x.shape)):
                    mode = "out"
                elif blocks:
                    x, blocks = ops.to_pixels(x), False
                defer = defer or bool(mode and layer.bias)
                out = CpuConv(layer, self.init_scheme, name=name("conv"))(x, defer, mode)
                x, shift = out if defer else (out, None)
                blocks = bool(mode)
            elif isinstance(layer, Dense):
                x = CpuDense(layer, self.init_scheme, name=name("dense"))(x)
            elif (isinstance(layer, BatchNorm) and train and self.fused_pixel_pool_stages and not blocks
                  and (n_layers := _pixel_pool_stage(spec, i, x.shape))):
                scale, offset = CpuBatchNorm(name=name("bn"))(x, train, shift, apply=False)
                rate = spec[i + 2].rate if n_layers == 4 else 0.0
                seed = ops.dropout_seed(self.make_rng("dropout")) if rate > 0 else jnp.uint32(0)
                x, shift = ops.bn_relu_dropout_max_pool(x, scale, offset, seed, rate), None
                i += n_layers
                continue
            elif isinstance(layer, BatchNorm):
                bn = CpuBatchNorm(name=name("bn"))
                x, shift = bn(x, train, shift, groups=4 if blocks else 1), None
            elif isinstance(layer, ReLU):
                x = jax.nn.relu(x)
            elif isinstance(layer, MaxPool):
                x, blocks = (ops.max_pool_on_blocks(x) if blocks else ops.max_pool(x)), False
            elif isinstance(layer, Dropout):
                if train and layer.rate > 0:
                    x = ops.dropout(x, layer.rate, self.make_rng("dropout"))
            elif isinstance(layer, GlobalAvgPool):
                x = jnp.mean(x, axis=(1, 2), keepdims=True)
            elif isinstance(layer, Flatten):
                x = torch_flatten(x)
            else:  # pragma: no cover - specs are closed
                raise TypeError(f"unknown layer spec {layer!r}")
            i += 1
        if blocks:
            x = ops.to_pixels(x)
        return jax.nn.log_softmax(x, axis=-1)


