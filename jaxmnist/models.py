"""The five seed networks (../shared/seeds/00x_*.txt) and the registry that names them.

Each architecture is a tuple of layer specs (see `layers`); `Net` interprets it. The
per-architecture functions below carry the reasoning wherever a seed document leaves
something out, so a reader can check every choice against the seed.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxmnist.layers import (
    BatchNorm,
    BatchNormLayer,
    Conv,
    ConvLayer,
    Dense,
    DenseLayer,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    ReLU,
)
from jaxmnist import ops


def _block(features, kernel=3, padding=0, bias=False, dropout=None, relu_first=False):
    """conv -> BN -> ReLU (or conv -> ReLU -> BN) [-> dropout]."""
    conv = Conv(features, kernel, padding, bias)
    act = (ReLU(), BatchNorm()) if relu_first else (BatchNorm(), ReLU())
    return (conv, *act) + ((Dropout(dropout),) if dropout else ())


def fc19k():
    """Seed 000: 18,970 parameters, seven biased 3x3 convs with BatchNorm, then a 120->10 FC.

    The seed lists the layers and the forward pass as "Convolution -> BatchNorm -> ReLU
    -> Pooling" with "dropout 0.1 after each major operation". Reconstructed as
    conv-BN-ReLU for all seven convs (conv1-4 padded, conv5-7 unpadded, which takes
    7x7 -> 5 -> 3 -> 1 so conv7's 120 channels sit at 1x1 and feed the FC), dropout 0.1
    after each pooling and after conv5 and conv6. Convs carry biases: 18,970 only adds up
    with them (BN after a biased conv makes the bias redundant, but the count is the count).
    """
    d = 0.1
    return (
        *_block(10, padding=1, bias=True),
        *_block(20, padding=1, bias=True),
        MaxPool(),
        Dropout(d),
        *_block(10, padding=1, bias=True),
        *_block(10, padding=1, bias=True),
        MaxPool(),
        Dropout(d),
        *_block(10, bias=True, dropout=d),
        *_block(10, bias=True, dropout=d),
        *_block(120, bias=True),
        Flatten(),
        Dense(10),
    )


def gap7k():
    """Seed 001: 7,416 parameters, bias-free convs, GAP then a 1x1 conv to 10 classes.

    Layer order follows the seed's table exactly: the first conv has ReLU but no BN; the
    next blocks are conv -> ReLU -> BN -> dropout. The table lists 1,152 parameters for the
    16->8 transition conv at 24x24, but the stated total 7,416 only adds up if that conv is
    1x1 (16*8 = 128 weights; with 1,152 the sum would be 8,440), and a 1x1 conv is what
    keeps 24x24 unchanged without padding; so it is 1x1, with no BN or ReLU after it, as in
    the table. The seed does not state the dropout rate: 0.05, the rate of seed 004 (same
    course, same size class), checked on the validation split with the seed's recipe
    (experiments/search/SEARCH.md, final-epoch validation accuracy, 3 seeds each):
    0.0 -> 99.06%, 0.05 -> 99.15%, 0.1 -> 99.11%; 0.05 is kept. `--dropout` overrides it.
    """
    d = 0.05
    return (
        Conv(8),
        ReLU(),
        *_block(16, dropout=d, relu_first=True),
        Conv(8, kernel=1),
        MaxPool(),
        *_block(16, dropout=d, relu_first=True),
        *_block(8, dropout=d, relu_first=True),
        *_block(16, dropout=d, relu_first=True),
        *_block(16, dropout=d, relu_first=True),
        GlobalAvgPool(),
        Conv(10, kernel=1),
        Flatten(),
    )


def fc16k():
    """Seed 002: 16,146 parameters, biased padded 3x3 convs, 1x1 transition to 8, FC 392->10.

    The torchsummary table fixes every conv, BN, dropout and pool position; ReLUs do not
    appear there because the seed applies them functionally, so they go after each BN
    (conv -> BN -> ReLU) and after the 1x1 transition. The dropout rate is not given:
    0.1, seed 000's rate for a network of the same size. The Linear layer reads the
    transition output flattened in PyTorch's (C, H, W) order (8*7*7 = 392).
    """
    d = 0.1
    return (
        *_block(16, padding=1, bias=True),
        *_block(16, padding=1, bias=True, dropout=d),
        MaxPool(),
        *_block(16, padding=1, bias=True),
        *_block(16, padding=1, bias=True, dropout=d),
        MaxPool(),
        *_block(32, padding=1, bias=True),
        Conv(8, kernel=1, bias=True),
        ReLU(),
        Flatten(),
        Dense(10),
    )


def gap8k():
    """Seed 003: 7,776 parameters; only the channel progression 8->12->10->12->16 is given.

    What the seed fixes: an 8-channel input conv, then 12, 10, 12, 16 channels, BatchNorm
    after every conv, dropout 0.01, global average pooling, 7,776 parameters, and (from
    its lineage) bias-free convs. The one reconstruction that hits 7,776 exactly with the
    conventional shapes of this course's networks:

        1->8 3x3 (72) +BN 16 | 8->12 3x3 (864) +BN 24 | 12->10 1x1 transition (120) +BN 20
        | maxpool | 10->12 3x3 (1,080) +BN 24 | 12->16 3x3 (1,728) +BN 32
        | 16->16 3x3 (2,304) +BN 32 | 16->10 3x3 (1,440) +BN 20 | GAP

    = 3,980 + 2,336 + 1,460 = 7,776. A 3x3 transition, an extra 1x1 head, or biases all
    miss the total. The last block maps straight to the 10 classes, so GAP is the whole
    head (as the issue table says); it has BN (the seed: "after each convolution") but no
    ReLU or dropout, so the logits can be negative. Spatial path, all unpadded:
    28 -> 26 -> 24 -> 24 -> pool 12 -> 10 -> 8 -> 6 -> 4 -> GAP.
    """
    d = 0.01
    return (
        *_block(8, dropout=d),
        *_block(12, dropout=d),
        Conv(10, kernel=1),
        BatchNorm(),
        MaxPool(),
        *_block(12, dropout=d),
        *_block(16, dropout=d),
        *_block(16, dropout=d),
        Conv(10),
        BatchNorm(),
        GlobalAvgPool(),
        Flatten(),
    )


def gap9k():
    """Seed 004: 8,932 parameters; the torchsummary table gives every layer.

    conv -> BN -> ReLU -> dropout(0.05) for each 3x3 conv and the 1x1 after the pool, the
    last two 16->16 convs padded (7x7 stays 7x7), then a 1x1 conv to 10 with nothing after
    it, and AvgPool2d over 7x7. All convs bias-free (the counts say so).
    """
    d = 0.05
    return (
        *_block(4, dropout=d),
        *_block(4, dropout=d),
        *_block(8, dropout=d),
        MaxPool(),
        *_block(8, kernel=1, dropout=d),
        *_block(16, dropout=d),
        *_block(16, dropout=d),
        *_block(16, padding=1, dropout=d),
        *_block(16, padding=1, dropout=d),
        Conv(10, kernel=1),
        GlobalAvgPool(),
        Flatten(),
    )


ARCHS: dict[str, Callable[[], tuple]] = {
    "fc19k": fc19k,
    "gap7k": gap7k,
    "fc16k": fc16k,
    "gap8k": gap8k,
    "gap9k": gap9k,
}

# Trainable parameters as PyTorch counts them (BN running statistics excluded).
EXPECTED_PARAMS = {"fc19k": 18970, "gap7k": 7416, "fc16k": 16146, "gap8k": 7776, "gap9k": 8932}


class UnknownArch(ValueError):
    pass


def check_arch(name: str) -> str:
    if name not in ARCHS:
        raise UnknownArch(f"unknown architecture {name!r}; valid: {', '.join(ARCHS)}")
    return name


# A conv bias followed by training-mode BatchNorm cancels in x - mean: hand it to the
# BatchNorm (for its running mean) instead of adding it to every activation. False gives
# the literal formulation (tests compare the two).
DEFER_CONV_BIAS = True

# In training, activations stay on 2x2 pixel blocks from a convolution that runs on blocks
# anyway (ops.runs_on_blocks) through BatchNorm, ReLU, dropout, 1x1 convolutions and
# unpadded convolutions whose blocks line up, down to a max pool over the block members,
# whenever the chain reaches such a pool or convolution; conv -> BatchNorm -> ReLU ->
# MaxPool (fc19k) is one fused stage (ops.bn_relu_max_pool_on_blocks). No activation then
# crosses between blocks and pixels in between. False runs every layer on pixels (tests
# compare the two). Evaluation always runs on pixels. Dropout on blocks draws its mask in
# block order: the same distribution, other masks than on pixels.
STAGES_ON_BLOCKS = True


# In training, BatchNorm -> ReLU [-> Dropout] -> MaxPool on pixels (fc16k's two stages)
# is one op (ops.bn_relu_dropout_max_pool), whose backward pass takes BatchNorm's sums
# over the pooled values. False runs the layers one by one (tests compare the two).
FUSED_PIXEL_POOL_STAGES = True


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


class Net(nn.Module):
    """Runs a spec tuple; returns log-probabilities (N, 10) like the seeds' log_softmax."""

    spec: tuple
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x, train: bool = False):
        counters: dict[str, int] = {}

        def name(kind):
            counters[kind] = counters.get(kind, 0) + 1
            return f"{kind}{counters[kind]}"

        spec = self.spec
        shift = None  # a conv bias deferred to the BatchNorm right after it
        blocks = False  # x is on 2x2 pixel blocks
        i = 0
        while i < len(spec):
            layer = spec[i]
            if train and STAGES_ON_BLOCKS and not blocks and _fused_pool_stage(spec, i, x.shape):
                conv = ConvLayer(layer, self.init_scheme, name=name("conv"))
                yb, bias = conv(x, defer_bias=True, blocks="out")
                scale, offset = BatchNormLayer(name=name("bn"))(yb, train, bias, groups=4,
                                                                apply=False)
                x = ops.bn_relu_max_pool_on_blocks(yb, scale, offset)
                i += 4
                continue
            if blocks and not isinstance(layer, (Conv, BatchNorm, ReLU, Dropout, MaxPool)):
                x, blocks = ops.to_pixels(x), False
            if isinstance(layer, Conv):
                defer = (train and DEFER_CONV_BIAS and layer.bias and i + 1 < len(spec)
                         and isinstance(spec[i + 1], BatchNorm))
                n, h, w, c = x.shape
                on_pixels = (n, 2 * h, 2 * w, c // 4) if blocks else x.shape
                kernel_shape = _kernel_shape(layer, on_pixels)
                mode = ""
                if blocks and _bias_fits_blocks(spec, i) and (
                        layer.kernel == 1
                        or ops.blocks_to_blocks_possible(on_pixels, kernel_shape, layer.padding)):
                    mode = "in-out"
                elif (train and STAGES_ON_BLOCKS and not blocks and _bias_fits_blocks(spec, i)
                      and ops.output_on_blocks_possible(x.shape, kernel_shape, layer.padding)
                      and _blocks_pay_off(spec, i, x.shape)):
                    mode = "out"
                elif blocks:
                    x, blocks = ops.to_pixels(x), False
                defer = defer or bool(mode and layer.bias)
                out = ConvLayer(layer, self.init_scheme, name=name("conv"))(x, defer, mode)
                x, shift = out if defer else (out, None)
                blocks = bool(mode)
            elif isinstance(layer, Dense):
                x = DenseLayer(layer, self.init_scheme, name=name("dense"))(x)
            elif (isinstance(layer, BatchNorm) and train and FUSED_PIXEL_POOL_STAGES and not blocks
                  and (n_layers := _pixel_pool_stage(spec, i, x.shape))):
                scale, offset = BatchNormLayer(name=name("bn"))(x, train, shift, apply=False)
                rate = spec[i + 2].rate if n_layers == 4 else 0.0
                seed = ops.dropout_seed(self.make_rng("dropout")) if rate > 0 else jnp.uint32(0)
                x, shift = ops.bn_relu_dropout_max_pool(x, scale, offset, seed, rate), None
                i += n_layers
                continue
            elif isinstance(layer, BatchNorm):
                bn = BatchNormLayer(name=name("bn"))
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
                x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
            else:  # pragma: no cover - specs are closed
                raise TypeError(f"unknown layer spec {layer!r}")
            i += 1
        if blocks:
            x = ops.to_pixels(x)
        return jax.nn.log_softmax(x, axis=-1)


def build(arch: str, init: str = "torch", dropout: float | None = None) -> Net:
    """The arch's network; `dropout` replaces the rate of every Dropout layer."""
    spec = ARCHS[check_arch(arch)]()
    if dropout is not None:
        spec = tuple(Dropout(dropout) if isinstance(layer, Dropout) else layer for layer in spec)
    return Net(spec, init)


def init_variables(model: Net, key, batch: int = 1):
    """Parameters and batch statistics for (batch, 28, 28, 1) inputs.

    lazy_init traces the forward pass for shapes only; under jit the initialisers form
    one small program that lands in the persistent compilation cache, where eager or
    un-jitted lazy init dispatches (and compiles) each initialiser separately on every
    start (1.7 s for gap8k, against 0.1 s from the cache).
    """
    return _jitted_init(model, batch)(key)


@functools.lru_cache(maxsize=None)
def _jitted_init(model: Net, batch: int):
    x = jax.ShapeDtypeStruct((batch, 28, 28, 1), jnp.float32)
    return jax.jit(lambda key: model.lazy_init({"params": key}, x, train=False))


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
