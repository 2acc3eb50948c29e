"""Numerical primitives of the networks: convolution, 2x2 max pool, dropout, BN moments.

Each has a plain formulation (`*_reference`) and the one the networks use. They differ
only for speed on CPU, where these 4-32 channel networks are bound by memory traffic and
by XLA's generic lowering of the backward passes, not by arithmetic; tests check that
values and gradients agree. What each replacement avoids (measured in benchmarks/):

* max pool: reduce_window's gradient is select-and-scatter, which XLA:CPU runs as a
  slow scalar loop; here the forward pass stores each window's winner (an int8 from an
  argmax) and the gradient is a select on it.
* convolution: XLA derives the input/weight gradients as convolutions with
  non-canonical dimension orders that hit slow paths; here both are written as ordinary
  NHWC/HWIO convolutions (flipped kernel; for the weight gradient the batch is the
  contraction dimension and the kernel is dilated across (width, channel)). The
  1-channel first layer is one matmul over shifted copies. Large layers with 4-12
  channels on a side run on 2x2 pixel blocks: four times the channels, which XLA's
  convolution handles far better than the few it would otherwise pack patch by patch.
* In training the activations stay on those blocks down to the next max pool where the
  layers between allow (net.STAGES_ON_BLOCKS: conv2d_on_blocks,
  conv2d_blocks_to_blocks, max_pool_on_blocks, and for conv -> BatchNorm -> ReLU -> pool
  bn_relu_max_pool_on_blocks), so neither pass converts the largest activations between
  blocks and pixels, and pool gradients come from a stored int8 winner.
* BatchNorm -> ReLU [-> dropout] -> max pool in training (bn_relu_max_pool_on_blocks,
  bn_relu_dropout_max_pool): the gradient reaches one member of each pool window, so
  BatchNorm's backward sums run over the pooled values and the input at each window's
  winner (both from the forward pass's one reduction), and the full-size gradient
  before BatchNorm is never stored: 8% (fc19k) and 15% (fc16k) fewer bytes per step,
  which a CPU with little memory bandwidth per core feels (2-core Intel Xeon: fc19k's
  step x1.03-1.12, fc16k's x1.06-1.08).
* zero padding: where a producer fuses into it (the rotated batch before the first layer,
  BatchNorm -> ReLU before a padded convolution on blocks), jnp.pad's loop ran several
  times slower than gathering the same values by index (_take_rows_cols).
* BatchNorm moments: column sums over 10- or 20-channel rows run at a fraction of memory
  speed; summing several rows side by side as one wider row does not.
* dropout: a threefry draw per element costs more than the layer it regularises; here a
  counter-based integer hash (two multiply-xorshift rounds) of the element index, seeded by one
  jax.random draw per layer, gives the keep mask.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


# --- convolution ----------------------------------------------------------------------


def conv2d_reference(x, kernel, padding: int):
    return lax.conv_general_dilated(
        x, kernel, (1, 1), [(padding, padding)] * 2, dimension_numbers=_DN
    )


@functools.lru_cache(maxsize=None)
def _model_batched_conv(padding: tuple, rhs_dilation: tuple = (1, 1)):
    """lax's convolution (padding: ((top, bottom), (left, right)); kernel dilated by
    rhs_dilation) with a batching rule for K independent models (vmap).

    vmap over both images and kernels would otherwise become one grouped convolution
    (feature_group_count=K), which XLA:CPU runs several times slower than K ordinary
    ones. The rule issues K ordinary convolutions instead, or one when only the
    images (fold K into the batch) or only the kernels (stack on output channels)
    carry the model axis.
    """

    @jax.custom_batching.custom_vmap
    def conv(x, kernel):
        return lax.conv_general_dilated(x, kernel, (1, 1), padding, rhs_dilation=rhs_dilation,
                                        dimension_numbers=_DN)

    @conv.def_vmap
    def rule(axis_size, in_batched, x, kernel):
        x_batched, k_batched = in_batched
        if x_batched and k_batched:
            outs = [conv(x[i], kernel[i]) for i in range(axis_size)]
            return jnp.stack(outs), True
        if x_batched:
            k, n = x.shape[:2]
            y = conv(x.reshape(k * n, *x.shape[2:]), kernel)
            return y.reshape(k, n, *y.shape[1:]), True
        cout = kernel.shape[-1]
        wide = jnp.concatenate([kernel[i] for i in range(axis_size)], axis=-1)
        y = conv(x, wide)
        return jnp.moveaxis(y.reshape(*y.shape[:-1], axis_size, cout), -2, 0), True

    return conv


def conv2d_batched_models(x, kernel, padding: int):
    return _model_batched_conv(((padding, padding), (padding, padding)))(x, kernel)


def _conv_fwd(x, kernel, padding):
    return conv2d_batched_models(x, kernel, padding), (x, kernel)


def _conv_bwd(padding, res, dy):
    x, kernel = res
    k = kernel.shape[0]
    # dx: full correlation of dy with the spatially flipped kernel, in/out swapped.
    dx = conv2d_batched_models(dy, _flipped(kernel), k - 1 - padding)
    if k == 1:
        dw = jnp.einsum("nhwc,nhwd->cd", x, dy)[None, None]
    else:
        dw = _weight_gradient(x, dy, padding)
    return dx, dw


# Weight gradients of at least this many multiply-adds run as two convolutions, one per
# half of the batch, summed. Eigen does not split a convolution whose output is as small
# as a weight gradient across threads, so the other thread idles for its duration unless
# independent work is at hand: fc19k's 28x28 layer on blocks (321M multiply-adds, ~7 ms
# on one core of the 2-core Intel Xeon), step x1.022-1.046 (paired in-process, three A/Bs
# of 14-20 rounds); with every weight gradient split, fc16k (largest 231M) measured x1.006
# and gap7k/gap8k/gap9k within +-2%. The sum in two parts rounds differently from one,
# hence a threshold rather than always.
WEIGHT_GRADIENT_SPLIT_MACS = 2 ** 28


def _weight_gradient(x, dy, padding: int):
    n, h, w, cin = x.shape
    ho, wo, cout = dy.shape[1:]
    macs = n * ho * wo * (h + 2 * padding - ho + 1) * (w + 2 * padding - wo + 1) * cin * cout
    if macs >= WEIGHT_GRADIENT_SPLIT_MACS and n % 2 == 0:
        half = n // 2
        return (_weight_gradient_whole(x[:half], dy[:half], padding)
                + _weight_gradient_whole(x[half:], dy[half:], padding))
    return _weight_gradient_whole(x, dy, padding)


def _weight_gradient_whole(x, dy, padding: int):
    """dw[i, j, ci, co] = sum_{n,h,w} xp[n, h+i, w+j, ci] dy[n, h, w, co], xp = x padded: a
    convolution with the images as the contraction (feature) axis on both sides.

    The input's width and channel axes form one spatial axis of W * Cin (padded by the
    convolution, Cin zeros per padding pixel), along which the kernel (dy) is dilated by
    Cin: output position j * Cin + ci of that axis is tap j of input channel ci, so the
    output is dw's own layout. The alternative, channels as the batch axis, needs x
    transposed to (Cin, H, W, N), a gather that reads each cache line of x once per
    channel; (H, W * Cin, N) keeps a pixel's channels together. fc16k's 28x28 16->16
    layer: transpose 1.14 -> 0.84 ms, train step x1.025 (paired, 12 rounds), fc19k and
    gap8k x1.015; the sums, and so the gradients, are bit-identical.
    """
    n, h, w, cin = x.shape
    ho, wo, cout = dy.shape[1:]
    lhs = jnp.transpose(x, (1, 2, 3, 0)).reshape(1, h, w * cin, n)
    rhs = jnp.transpose(dy, (1, 2, 0, 3))  # (Ho, Wo, N, Cout)
    pad = ((padding, padding), (padding * cin, padding * cin))
    dw = _model_batched_conv(pad, (1, cin))(lhs, rhs)  # (1, kh, kw * Cin, Cout)
    return dw.reshape(h + 2 * padding - ho + 1, w + 2 * padding - wo + 1, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_general(x, kernel, padding: int):
    return conv2d_batched_models(x, kernel, padding)


_conv_general.defvjp(_conv_fwd, _conv_bwd)


def _flipped(kernel):
    """The kernel of the input gradient: spatially flipped, input and output swapped."""
    return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


# --- the same convolution on 2x2 pixel blocks ------------------------------------------

# Layers at least this large with at most this many channels on one side run on 2x2
# pixel blocks (_conv_blocked). Measured in the train step (paired A/B, batch 128):
# fc19k +8%, gap7k +6%, gap8k +8%, gap9k +20% (its 4-channel layers were sums of shifted
# slices and zero-padding to 8 channels before: both retired); fc16k's 16-channel layers
# lost 9-13% on blocks.
BLOCKED_MIN_SIZE = 14
BLOCKED_MAX_CHANNELS = 12


def _space_to_depth(x):
    """(N, 2H, 2W, C) -> (N, H, W, 4C), block member (a, b) in channels [(2a+b)C, ...).

    Four strided slices side by side: 0.32 ms for (128, 30, 30, 10), where the
    reshape-transpose-reshape formulation takes 0.84 ms.
    """
    return jnp.concatenate([x[:, a::2, b::2] for a in (0, 1) for b in (0, 1)], axis=-1)


def _depth_to_space(y):
    """The inverse of _space_to_depth (reshape-transpose: 0.11 ms for (128, 14, 14, 80))."""
    n, h, w, c4 = y.shape
    c = c4 // 4
    return y.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c)


def _take_rows_cols(x, rows, cols):
    """x[:, rows][:, :, cols] for static index arrays, zero where an index falls outside x:
    zero padding (and a strided pick of rows and columns) as one gather.

    XLA:CPU fuses an elementwise producer into a gather by index but runs a padded copy
    (jnp.pad, or a pad followed by strided slices) of a fused producer far slower: the
    rotated batch padded for the first layer took 1.38 ms that way and 0.38 ms as this
    gather (batch 128, 2-core Intel Xeon), BatchNorm -> ReLU -> pad -> _space_to_depth
    for fc19k's 28x28 10-channel layer 1.32 vs 0.71 ms, with equal values.
    """
    rows, cols = np.asarray(rows), np.asarray(cols)
    h, w = x.shape[1:3]
    v = x[:, np.clip(rows, 0, h - 1)][:, :, np.clip(cols, 0, w - 1)]
    inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    if inside.all():
        return v
    return jnp.where(inside.reshape(inside.shape + (1,) * (x.ndim - 3)), v, jnp.zeros((), x.dtype))


def _padded_space_to_depth(x, top: int, bottom: int, left: int, right: int):
    """_space_to_depth(jnp.pad(x, ...)) as four gathers (see _take_rows_cols)."""
    h, w = x.shape[1] + top + bottom, x.shape[2] + left + right
    return jnp.concatenate([_take_rows_cols(x, np.arange(a, h, 2) - top, np.arange(b, w, 2) - left)
                            for a in (0, 1) for b in (0, 1)], axis=-1)


@functools.lru_cache(maxsize=None)
def _tap_placement(k: int):
    """p[I, a_in, a_out, t] = 1 where tap t of a k-tap kernel joins input row a_in of block
    I to output row a_out of block 0 (t = 2I + a_in - a_out), else 0."""
    kb = k // 2 + 1
    p = np.zeros((kb, 2, 2, k), np.float32)
    for block in range(kb):
        for a_in in range(2):
            for a_out in range(2):
                if 0 <= 2 * block + a_in - a_out < k:
                    p[block, a_in, a_out, 2 * block + a_in - a_out] = 1.0
    return p


def _block_kernel(kernel):
    """(k, k, Cin, Cout) -> (kb, kb, 4 Cin, 4 Cout), kb = k // 2 + 1: the kernel that maps
    2x2 input blocks to 2x2 output blocks (zeros where a tap does not reach)."""
    k, _, cin, cout = kernel.shape
    p = jnp.asarray(_tap_placement(k))
    kb = p.shape[0]
    big = jnp.einsum("Iapi,Jbqj,ijcd->IJabcpqd", p, p, kernel)
    return big.reshape(kb, kb, 4 * cin, 4 * cout)


def _blocks_to_blocks_fwd(xs, kernel):
    """The unpadded convolution of an input on blocks, output on blocks."""
    block_kernel = _block_kernel(kernel)
    return conv2d_batched_models(xs, block_kernel, 0), (xs, block_kernel, kernel)


def _blocks_to_blocks_bwd(res, dys):
    xs, block_kernel, kernel = res
    # On blocks it is an ordinary unpadded convolution: its gradients are _conv_bwd's.
    dxs, dblock_kernel = _conv_bwd(0, (xs, block_kernel), dys)
    return dxs, jax.vjp(_block_kernel, kernel)[1](dblock_kernel)[0]


def _blocked_fwd_on_blocks(x, kernel, padding):
    """The convolution on blocks, its output still on blocks (rounded up to an even size)."""
    k, h, w = kernel.shape[0], x.shape[1], x.shape[2]
    ho, wo = h + 2 * padding - k + 1, w + 2 * padding - k + 1
    # Pad to whole input blocks for the output rounded up to an even size: an odd k needs
    # no more rows than the symmetric padding gives, an even k one more.
    extra = 1 - k % 2
    bottom, right = padding + extra + ho % 2, padding + extra + wo % 2
    if padding:
        xs = _padded_space_to_depth(x, padding, bottom, padding, right)
    else:  # unpadded (gap7k, gap8k): strided slices measured as fast or faster
        xs = lax.optimization_barrier(_space_to_depth(
            jnp.pad(x, ((0, 0), (0, bottom), (0, right), (0, 0)))))
    return _blocks_to_blocks_fwd(xs, kernel)


def _blocked_fwd(x, kernel, padding):
    k = kernel.shape[0]
    ho, wo = x.shape[1] + 2 * padding - k + 1, x.shape[2] + 2 * padding - k + 1
    yb, res = _blocked_fwd_on_blocks(x, kernel, padding)
    y = lax.optimization_barrier(_depth_to_space(yb))
    return y[:, :ho, :wo], res


def _gradients_from_blocks(padding, res, dys, out_hw):
    """Input and kernel gradients from the output gradient on blocks, for an output of
    out_hw = (Ho, Wo) before rounding up to even."""
    k = res[2].shape[0]
    ho, wo = out_hw
    dxs, dkernel = _blocks_to_blocks_bwd(res, dys)
    dxp = lax.optimization_barrier(_depth_to_space(dxs))
    h, w = ho - 2 * padding + k - 1, wo - 2 * padding + k - 1
    return dxp[:, padding:padding + h, padding:padding + w], dkernel


def _blocked_bwd(padding, res, dy):
    ho, wo = dy.shape[1:3]
    dy = jnp.pad(dy, ((0, 0), (0, ho % 2), (0, wo % 2), (0, 0)))  # to the even size
    dys = lax.optimization_barrier(_space_to_depth(dy))
    return _gradients_from_blocks(padding, res, dys, (ho, wo))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_blocked(x, kernel, padding: int):
    """The convolution on 2x2 pixel blocks: (N, H, W, C) viewed as (N, H/2, W/2, 4C), the
    k x k kernel as a (k//2 + 1)^2 kernel from 4 Cin to 4 Cout channels.

    That does 1.8x the multiply-adds (the block kernel is 44% zeros for k = 3) but feeds
    XLA:CPU's convolution four times the channels, and with 8-20 channels that routine is
    bound by packing image patches, not by arithmetic: fc19k's 28x28 10->20 layer at batch
    128, forward 2.98 -> 1.58 ms, input gradient 3.58 -> 2.27 ms, weight gradient 3.77 ->
    3.19 ms (the layout changes cost 0.3 + 0.1 ms each way). The optimization barriers keep
    XLA from fusing the layout changes into their neighbours, which made the steps slower
    than without blocks (fc19k -1.4%; with the barriers +8.7%). Odd output sizes are
    computed one row/column larger and cropped.
    """
    return _blocked_fwd(x, kernel, padding)[0]


_conv_blocked.defvjp(_blocked_fwd, _blocked_bwd)


def runs_on_blocks(x_shape, kernel_shape) -> bool:
    """Whether conv2d runs this layer on 2x2 pixel blocks."""
    k, _, cin, cout = kernel_shape
    return (k > 1 and cin > 1 and min(x_shape[1:3]) >= BLOCKED_MIN_SIZE
            and min(cin, cout) <= BLOCKED_MAX_CHANNELS)


def output_on_blocks_possible(x_shape, kernel_shape, padding: int) -> bool:
    """Whether conv2d_on_blocks applies: a layer on blocks with an even output size."""
    k = kernel_shape[0]
    ho, wo = (s + 2 * padding - k + 1 for s in x_shape[1:3])
    return runs_on_blocks(x_shape, kernel_shape) and ho % 2 == 0 and wo % 2 == 0


def _on_blocks_bwd(padding, res, dys):
    return _gradients_from_blocks(padding, res, dys, (2 * dys.shape[1], 2 * dys.shape[2]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_on_blocks(x, kernel, padding: int):
    """conv2d's output left on 2x2 blocks: (N, Ho/2, Wo/2, 4 Cout), block member (a, b) in
    channels [(2a+b) Cout, ...) as _space_to_depth lays them out, for a consumer that
    works on blocks (bn_relu_max_pool_on_blocks); its gradient arrives on blocks too, so
    neither direction pays for a depth-to-space. Needs output_on_blocks_possible."""
    return _blocked_fwd_on_blocks(x, kernel, padding)[0]


conv2d_on_blocks.defvjp(_blocked_fwd_on_blocks, _on_blocks_bwd)


@jax.custom_vjp
def conv2d_blocks_to_blocks(xb, kernel):
    """An unpadded odd-k convolution of an input already on 2x2 blocks, output on blocks:
    without padding the input's blocks are the ones _blocked_fwd would make, so a chain
    of such layers never visits pixels. Needs blocks_to_blocks_possible."""
    return _blocks_to_blocks_fwd(xb, kernel)[0]


conv2d_blocks_to_blocks.defvjp(_blocks_to_blocks_fwd, _blocks_to_blocks_bwd)


def blocks_to_blocks_possible(x_shape, kernel_shape, padding: int) -> bool:
    """For x_shape on pixels: an unpadded, odd-k layer on blocks with an even output."""
    k = kernel_shape[0]
    return padding == 0 and k % 2 == 1 and output_on_blocks_possible(x_shape, kernel_shape, 0)


@jax.custom_vjp
def to_pixels(yb):
    """(N, H, W, 4C) on 2x2 blocks -> (N, 2H, 2W, C), both ways as _conv_blocked does it."""
    return lax.optimization_barrier(_depth_to_space(yb))


to_pixels.defvjp(lambda yb: (to_pixels(yb), None),
                 lambda _, dy: (lax.optimization_barrier(_space_to_depth(dy)),))


def _tap_rows(x, k: int, padding: int):
    """(k*k, N*H'*W'): row t holds the input shifted by tap t of a 1-channel k x k kernel."""
    h, w = x.shape[1:3]
    xp = x[..., 0]
    if padding:
        xp = _take_rows_cols(xp, np.arange(-padding, h + padding), np.arange(-padding, w + padding))
    h, w = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    return jnp.stack([xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]).reshape(k * k, -1)


def _first_fwd(x, kernel, padding):
    k, cout = kernel.shape[0], kernel.shape[3]
    rows = _tap_rows(x, k, padding)
    n, h, w = x.shape[0], x.shape[1] + 2 * padding - k + 1, x.shape[2] + 2 * padding - k + 1
    y = lax.dot_general(rows, kernel.reshape(k * k, cout), (((0,), (0,)), ((), ())))
    return y.reshape(n, h, w, cout), (rows, x, kernel)


def _first_bwd(padding, res, dy):
    rows, x, kernel = res
    k, cout = kernel.shape[0], kernel.shape[3]
    dw = (rows @ dy.reshape(-1, cout)).reshape(kernel.shape)
    dx = conv2d_batched_models(dy, _flipped(kernel), k - 1 - padding)  # unused by training: DCE'd
    return dx, dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_first(x, kernel, padding: int):
    """A 1-channel input (every network's first layer) as one (N*H*W, k*k) x (k*k, Cout)
    matmul over shifted copies of the image, built once and kept for the weight gradient.

    XLA's convolution vectorises over the single channel and runs ~4x slower; building
    the copies as a (k*k, N*H*W) stack costs one pass, where a channels-last patch tensor
    (nine 1-wide slices concatenated) cost more than the convolution itself in the step.
    """
    return _first_fwd(x, kernel, padding)[0]


_conv_first.defvjp(_first_fwd, _first_bwd)


def conv2d(x, kernel, padding: int):
    """Stride-1 NHWC convolution with symmetric zero padding."""
    k, _, cin, cout = kernel.shape
    if cin == 1 and k > 1:
        return _conv_first(x, kernel, padding)
    if runs_on_blocks(x.shape, kernel.shape):
        return _conv_blocked(x, kernel, padding)
    return _conv_general(x, kernel, padding)


# --- 2x2 max pool ---------------------------------------------------------------------


def max_pool_reference(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


@jax.custom_vjp
def max_pool(x):
    """2x2, stride 2 (even H and W, as in every seed network).

    The gradient goes to the first maximum of each window (as select-and-scatter and
    PyTorch do, so ties are not double counted) through an int8 winner that the forward
    pass stores, as max_pool_on_blocks does; re-deriving the winner in the backward pass
    from the input and the output cost one more pass over the input (fc16k's step with
    the stored winner: x1.012-1.016, paired, 16-30 rounds, bit-identical parameters).
    """
    quads = (x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2])
    return jnp.maximum(jnp.maximum(quads[0], quads[1]), jnp.maximum(quads[2], quads[3]))


def _window_members(x):
    """(N, 2H, 2W, C) -> (N, H, W, 4C): each window's members side by side in row-major
    window order, the layout of _space_to_depth. By reshape and transpose, which XLA
    materialises before the argmax; with _space_to_depth's four strided slices, which it
    fuses into the argmax instead, fc16k's step was slower (x0.935)."""
    n, h2, w2, c = x.shape
    return x.reshape(n, h2 // 2, 2, w2 // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(
        n, h2 // 2, w2 // 2, 4 * c)


max_pool.defvjp(lambda x: _members_max(_window_members(x)),
                lambda winner, dy: (_depth_to_space(_gradient_to_winner(winner, dy)),))


# --- 2x2 max pool on 2x2 blocks, alone and after BatchNorm's affine and a ReLU --------


def _members_max(xb):
    """The pool and its winner: the first maximum of each window (argmax's ties, in
    max_pool's window order)."""
    n, h, w, width = xb.shape
    members = xb.reshape(n, h, w, 4, width // 4)
    return jnp.max(members, axis=3), jnp.argmax(members, axis=3).astype(jnp.int8)


def _gradient_to_winner(winner, dy):
    n, h, w, c = dy.shape
    member = jnp.arange(4, dtype=jnp.int8)[:, None]
    return jnp.where(winner[:, :, :, None] == member, dy[:, :, :, None], 0.0).reshape(n, h, w, 4 * c)


@jax.custom_vjp
def max_pool_on_blocks(xb):
    """max_pool of the pixels whose 2x2 blocks xb holds: a maximum over the four channel
    groups, the gradient to the first maximum through a stored int8 winner (see
    bn_relu_max_pool_on_blocks)."""
    return _members_max(xb)[0]


max_pool_on_blocks.defvjp(_members_max, lambda winner, dy: (_gradient_to_winner(winner, dy),))


def _first_max_of_members(z, members):
    """The maximum of z >= 0 over axis 3 (a window's four members), its first winner (4
    where the window is all zeros) and `members` at the winner: one variadic reduce."""

    def first_max(a, b):
        take_a = (a[0] > b[0]) | ((a[0] == b[0]) & (a[1] < b[1]))
        return tuple(jnp.where(take_a, u, v) for u, v in zip(a, b))

    init = (jnp.float32(-jnp.inf), jnp.int8(4), jnp.float32(0.0))
    operands = (z, lax.broadcasted_iota(jnp.int8, z.shape, 3), members)
    y, winner, at_winner = lax.reduce(operands, init, first_max, (3,))
    return y, jnp.where(y > 0, winner, jnp.int8(4)), at_winner


def _pool_on_blocks(yb, scale, offset):
    """The pooled values, each window's winner (4 where the ReLU zeroed the whole window)
    and yb at the winner, from one reduction over the four block members.

    One variadic reduce carries (relu(yb * scale + offset), member index, yb) and keeps
    the first maximum, as argmax does; yb at the winner is what the backward pass needs
    for BatchNorm's sums (see bn_relu_max_pool_on_blocks), and taking it here costs no
    extra pass over yb."""
    n, h, w, width = yb.shape
    c = width // 4
    z = jnp.maximum(yb * spread_over_groups(scale, 4) + spread_over_groups(offset, 4), 0.0)
    return _first_max_of_members(z.reshape(n, h, w, 4, c), yb.reshape(n, h, w, 4, c))


@jax.custom_vjp
def bn_relu_max_pool_on_blocks(yb, scale, offset):
    """max_pool(relu(y * scale + offset)) for y on 2x2 blocks (conv2d_on_blocks' output,
    whose blocks are exactly the pool's windows), with BatchNorm's per-channel scale and
    offset (spread here over the four block members).

    The pool is a maximum over the four channel groups and its output is on plain pixels
    again. The backward pass reads one int8 per pooled value (the winning member; a
    reduction output, which XLA cannot re-derive inside its consumers as it does with
    elementwise masks) and writes the gradient on blocks, where the BatchNorm and
    convolution gradients want it. The gradient reaches one member per window, so the
    two sums BatchNorm's backward pass needs (of dz and of dz * y, per channel) run over
    the pooled values and y at the winners, a quarter of the data, and the full-size dz
    is never stored: its one consumer recomputes it from the winners. fc19k's step moves
    344 instead of 374 MB; paired in-process A/B against the sums over the full-size dz:
    x1.09, x1.12, x1.03, x1.03 (16 rounds each, 2-core Intel Xeon, the last two in a
    slower state of the VM); against conv -> BatchNorm -> ReLU -> max_pool on plain
    pixels: see docs/cpu-lowering.md ("Conv -> BatchNorm -> ReLU [-> dropout] -> pool as one op").
    """
    return _pool_on_blocks(yb, scale, offset)[0]


def _bn_pool_fwd(yb, scale, offset):
    y, winner, at_winner = _pool_on_blocks(yb, scale, offset)
    return y, (scale, winner, at_winner)


def _affine_gradients(passed, at_winner):
    """BatchNorm's scale and offset gradients, per channel, from the gradient at each
    window's winner (zero where none passes) and the input there: the full-size gradient
    is zero everywhere else."""
    c = passed.shape[-1]
    rows = passed.reshape(-1, c)
    return jnp.sum(rows * at_winner.reshape(-1, c), 0), jnp.sum(rows, 0)


def _bn_pool_bwd(res, dy):
    scale, winner, at_winner = res
    passed = jnp.where(winner < 4, dy, 0.0)  # dz at the winners
    # Spread over the members as four selects side by side on `passed`, which the sums
    # below need anyway: with _gradient_to_winner's (..., 4, C) select of dy, XLA
    # recomputed dy (dropout's hash, the next layer's gradient back to pixels) once per
    # member inside this full-size loop and indexed it through the reshape: 7.3% of
    # fc19k's CPU samples, 4.7% this way (perf, 2-core Intel Xeon).
    win = winner.astype(jnp.int32)
    dz = jnp.concatenate([jnp.where(win == m, passed, 0.0) for m in range(4)], axis=-1)
    return (dz * spread_over_groups(scale, 4), *_affine_gradients(passed, at_winner))


bn_relu_max_pool_on_blocks.defvjp(_bn_pool_fwd, _bn_pool_bwd)


def _pixel_stage(y, scale, offset, seed, rate: float):
    n, h2, w2, c = y.shape
    shape = (n, h2 // 2, w2 // 2, 4, c)
    members = _window_members(y).reshape(shape)
    z = jnp.maximum(members * scale + offset, 0.0)
    if rate > 0:  # dropout's mask: the counter is each member's index on pixels
        def iota(axis):
            return lax.broadcasted_iota(jnp.uint32, shape, axis)

        member = iota(3)
        counter = (((iota(0) * h2 + 2 * iota(1) + member // 2) * w2 + 2 * iota(2) + member % 2)
                   * c + iota(4))
        z = jnp.where(_keep_from_seed(seed, counter, rate), z * (1.0 / (1.0 - rate)), 0.0)
    return _first_max_of_members(z, members)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def bn_relu_dropout_max_pool(y, scale, offset, seed, rate: float):
    """max_pool(dropout(relu(y * scale + offset))) on pixels, with BatchNorm's per-channel
    scale and offset, dropout's mask from `seed` (dropout_seed: the same mask dropout
    draws) and rate 0 for no dropout: fc16k's conv -> BatchNorm -> ReLU -> dropout ->
    pool stages in training.

    What bn_relu_max_pool_on_blocks does on blocks: y is laid out window by window once,
    one reduction over each window's members gives the pooled value, the winner and y
    at the winner, and the backward pass takes BatchNorm's two sums over those (a winner
    that passes a gradient was kept by dropout and passed by the ReLU, so dropout's
    scale is all that applies to it) without storing the full-size gradient. fc16k's
    step moves 376 instead of 440 MB; paired in-process A/B against the four layers one by
    one: x1.083 (14 rounds, 2-core Intel Xeon), x1.057 (12 rounds, beside a training run).
    """
    return _pixel_stage(y, scale, offset, seed, rate)[0]


def _pixel_stage_fwd(y, scale, offset, seed, rate):
    pooled, winner, at_winner = _pixel_stage(y, scale, offset, seed, rate)
    return pooled, (scale, winner, at_winner, seed)


def _pixel_stage_bwd(rate, res, dy):
    scale, winner, at_winner, seed = res
    passed = jnp.where(winner < 4, dy * (1.0 / (1.0 - rate)) if rate > 0 else dy, 0.0)
    dz = _depth_to_space(_gradient_to_winner(winner, passed))
    return (dz * scale, *_affine_gradients(passed, at_winner),
            np.zeros(np.shape(seed), jax.dtypes.float0))


bn_relu_dropout_max_pool.defvjp(_pixel_stage_fwd, _pixel_stage_bwd)


# --- BatchNorm moments --------------------------------------------------------------


def batch_moments_reference(x, groups: int = 1):
    x = x.reshape(-1, x.shape[-1] // groups)
    return jnp.mean(x, 0), jnp.var(x, 0)


def _rows_side_by_side(m: int, c: int) -> int:
    """How many of the m rows of c channels to lay side by side for a column sum: the
    fewest that make a whole number of 16-float vectors (16 // gcd(c, 16)), if m allows.

    XLA:CPU sums the columns of an (m, c) array at a fraction of memory speed when c is
    not a multiple of 16; viewed as (m / g, g * c) (a free reshape) and finished with a
    tiny (g, c) sum, it runs 2-4x faster: (128, 28, 28, 10), both BatchNorm sums, 0.27 ->
    0.08 ms; (128, 26, 26, 8) 0.20 -> 0.05 ms. Multiples of 16 gain nothing (g = 1).
    """
    g = 16 // math.gcd(c, 16)
    while m % g:
        g //= 2
    return g


@functools.lru_cache(maxsize=None)
def _group_sum_matrix(groups: int, c: int):
    """(groups * c, c): sums `groups` side-by-side copies of c channels; its transpose
    spreads a per-channel vector over them."""
    return np.tile(np.eye(c, dtype=np.float32), (groups, 1))


def spread_over_groups(v, groups: int):
    """(c,) -> (groups * c,), the vector repeated, as a matmul: XLA fuses jnp.tile into
    every consumer as a per-element channel index modulo c, which made fc19k's BatchNorm
    backward on blocks 3x slower."""
    return v @ jnp.asarray(_group_sum_matrix(groups, v.shape[-1]).T)


def batch_moments(x, groups: int = 1):
    """Mean and biased variance over all but the channel axis, in one pass (E[x], E[x^2]).

    Both sums run on the same (m / g, g * c) view of x (_rows_side_by_side); squaring the
    view rather than x keeps the backward pass in that view too (measured: squaring x
    before the reshape loses the gain in fc19k's step). groups > 1: the last axis holds
    that many side-by-side copies of the channels (2x2 blocks, conv2d_on_blocks), summed
    per channel by a matmul (see spread_over_groups: the same holds for the backward
    pass of a reshape-and-sum).
    """
    width = x.shape[-1]
    m = x.size // width
    g = _rows_side_by_side(m, width)
    if groups > 1:
        rows = x.reshape(m // g, g * width)
        fold = jnp.asarray(_group_sum_matrix(g * groups, width // groups))
        n = m * groups
        mean, mean_sq = jnp.sum(rows, 0) @ fold / n, jnp.sum(jnp.square(rows), 0) @ fold / n
    elif g == 1:
        axes = tuple(range(x.ndim - 1))
        mean, mean_sq = jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)
    else:
        rows = x.reshape(m // g, g * width)

        def column_mean(a):
            return jnp.sum(a, 0).reshape(g, width).sum(0) / m

        mean, mean_sq = column_mean(rows), column_mean(jnp.square(rows))
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0)


# --- dropout --------------------------------------------------------------------------


def dropout_reference(x, rate: float, key):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _hash32(counter, seed):
    """Two multiply-xorshift rounds of the element counter offset by the seed.

    Enough mixing for a Bernoulli threshold (tests check rate, neighbour, channel and
    row correlations, and independence across keys); one round fewer than murmur3's
    finaliser, which measured 2.5% of gap9k's step (seven dropout layers) more.
    """
    h = (counter + seed) * jnp.uint32(0x9E3779B1)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x85EBCA6B)
    return h ^ (h >> 13)


def dropout_seed(key):
    """The one random word a dropout mask is drawn from."""
    return jax.random.bits(key, (), jnp.uint32)


def keep_mask(key, shape, rate: float):
    """Bernoulli(1 - rate) mask from one random word and the element counter."""
    counter = lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return _keep_from_seed(dropout_seed(key), counter, rate)


def _keep_from_seed(seed, counter, rate: float):
    threshold = jnp.uint32(min(int(round(rate * 2**32)), 2**32 - 1))
    return _hash32(counter, seed) >= threshold


def dropout(x, rate: float, key):
    keep = keep_mask(key, x.shape, rate)
    return jnp.where(keep, x * (1.0 / (1.0 - rate)), 0.0)
