"""The fast primitives equal the plain formulations, in value and gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import slow
from jaxmnist.nets.cpu import ops


def values_and_vjps(fast, plain, args, dy):
    """Both functions' outputs and their gradients (with respect to every argument) for
    cotangent dy, as one jitted program, as the train step runs them (run eagerly, every
    op compiles on its own: 2-4x the compile time, which is most of this module's)."""
    @jax.jit
    def run(args, dy):
        y_fast, vjp_fast = jax.vjp(fast, *args)
        y_plain, vjp_plain = jax.vjp(plain, *args)
        return y_fast, y_plain, vjp_fast(dy), vjp_plain(dy)

    return run(args, dy)


def assert_vjps_close(fast, plain, args, dy, rtol=1e-4, atol=1e-4):
    """The two functions' gradients (with respect to every argument) agree for cotangent dy."""
    for f, p in zip(*values_and_vjps(fast, plain, args, dy)[2:]):
        np.testing.assert_allclose(f, p, rtol=rtol, atol=atol)


def assert_convs_agree(fast, plain, args, dy):
    """Outputs within 1e-5 and gradients to every argument within 1e-4 of the plain ones."""
    y, ref, fast_grads, plain_grads = values_and_vjps(fast, plain, args, dy)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    for f, p in zip(fast_grads, plain_grads):
        np.testing.assert_allclose(f, p, rtol=1e-4, atol=1e-4)


def out_shape(fn, *args):
    return jax.eval_shape(fn, *args).shape


@pytest.mark.parametrize("k,pad,cin,cout,hw", [
    # a few shapes in the default run, every formulation's in the slow pass
    (3, 0, 1, 8, 28), slow(3, 1, 1, 10, 28),  # 1-channel input: shifted-copy matmul
    slow(3, 1, 16, 16, 14), slow(1, 0, 12, 10, 24), (3, 0, 16, 120, 3),  # XLA's convolution
    (3, 1, 10, 20, 28), slow(3, 1, 20, 10, 14), slow(3, 0, 4, 4, 26),  # 2x2 blocks
    slow(3, 0, 8, 12, 15),
    slow(3, 1, 8, 4, 11), slow(3, 0, 8, 8, 9), slow(3, 1, 4, 32, 9), slow(3, 0, 20, 4, 9),  # small, few channels
])
def test_conv_value_and_gradients(k, pad, cin, cout, hw):
    kx, kw, kd = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (4, hw, hw, cin))
    w = jax.random.normal(kw, (k, k, cin, cout)) * 0.3
    plain = functools.partial(ops.conv2d_reference, padding=pad)
    dy = jax.random.normal(kd, out_shape(plain, x, w))
    assert_convs_agree(functools.partial(ops.conv2d, padding=pad), plain, (x, w), dy)


@pytest.mark.parametrize("cin,cout,hw", [(1, 8, 10), slow(4, 4, 10), slow(4, 32, 10),
                                         slow(16, 16, 10), slow(10, 20, 14)])
def test_conv_vmapped_over_models_equals_each_model(cin, cout, hw):
    """K models' convolutions in one vmapped call (the multi-seed step) match each alone,
    in value and gradient, whichever formulation conv2d picks for the shape."""
    kx, kw, kd = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(kx, (2, 3, hw, hw, cin))
    w = jax.random.normal(kw, (2, 3, 3, cin, cout)) * 0.3
    dy = jax.random.normal(kd, (2, 3, hw, hw, cout))

    def value_and_grads(x, w, dy):
        y, vjp = jax.vjp(lambda a, b: ops.conv2d(a, b, 1), x, w)
        return (y, *vjp(dy))

    batched = jax.jit(jax.vmap(value_and_grads))(x, w, dy)
    for m in range(2):
        alone = jax.jit(value_and_grads)(x[m], w[m], dy[m])
        for b, a in zip(batched, alone):
            np.testing.assert_allclose(b[m], a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,pad,hw", [(3, 1, 16), slow(3, 0, 15), slow(3, 1, 17), (5, 2, 16),
                                      slow(5, 0, 14), slow(2, 0, 16)])
def test_blocked_conv_any_geometry(k, pad, hw):
    """The 2x2-block convolution for odd and even sizes, kernels of 2, 3 and 5 taps."""
    kx, kw, kd = jax.random.split(jax.random.PRNGKey(7), 3)
    x = jax.random.normal(kx, (3, hw, hw, 3))
    w = jax.random.normal(kw, (k, k, 3, 5)) * 0.3
    fast = functools.partial(ops._conv_blocked, padding=pad)
    plain = functools.partial(ops.conv2d_reference, padding=pad)
    assert out_shape(fast, x, w) == out_shape(plain, x, w)
    dy = jax.random.normal(kd, out_shape(plain, x, w))
    assert_convs_agree(fast, plain, (x, w), dy)


def test_conv2d_picks_blocks_for_large_narrow_layers():
    """The routing the step relies on: fc19k's 28x28 10->20 layer runs on blocks,
    fc16k's 16->16 and the small late layers do not."""
    def blocked(hw, cin, cout):
        x = jnp.zeros((2, hw, hw, cin))
        w = jnp.zeros((3, 3, cin, cout))
        return "optimization_barrier" in str(jax.make_jaxpr(ops.conv2d, static_argnums=2)(x, w, 1))
    assert blocked(28, 10, 20) and blocked(14, 20, 10) and blocked(26, 4, 4)
    assert not blocked(28, 16, 16) and not blocked(7, 10, 10)


@pytest.mark.parametrize("split", [slow(False), True])
def test_weight_gradient_whole_or_over_batch_halves(split, monkeypatch):
    """Both ways the kernel gradient equals the plain convolution's, alone and vmapped
    over models (the threshold set so that these small layers take the tested path)."""
    monkeypatch.setattr(ops, "WEIGHT_GRADIENT_SPLIT_MACS", 1 if split else 2 ** 62)
    kx, kw, kd = jax.random.split(jax.random.PRNGKey(5), 3)
    for shape, cout in [((4, 14, 14, 10), 20), ((4, 9, 9, 16), 16)]:  # blocks, pixels
        x = jax.random.normal(kx, (2, *shape))
        w = jax.random.normal(kw, (2, 3, 3, shape[-1], cout)) * 0.3
        dy = jax.random.normal(kd, (2, *shape[:3], cout))

        def kernel_gradient(conv, x, w, dy):
            return jax.vjp(lambda b: conv(x, b, 1), w)[1](dy)[0]

        fast = jax.jit(jax.vmap(lambda *a: kernel_gradient(ops.conv2d, *a)))(x, w, dy)
        plain = jax.jit(functools.partial(kernel_gradient, ops.conv2d_reference))
        for m in range(2):
            np.testing.assert_allclose(fast[m], plain(x[m], w[m], dy[m]), rtol=1e-4, atol=1e-4)
    jaxpr = str(jax.make_jaxpr(lambda *a: kernel_gradient(ops.conv2d, *a))(x[0], w[0], dy[0]))
    assert jaxpr.count("conv_general_dilated") == (4 if split else 3)  # forward, input gradient, 1 or 2


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), slow((1, 2, 1, 2)), (2, 3, 0, 1), slow((0, 1, 0, 1))])
def test_padding_by_gather_equals_jnp_pad(pads):
    """_take_rows_cols and _padded_space_to_depth (padding as gathers, for XLA's fusion)
    give exactly jnp.pad's zeros, strided picks and _space_to_depth's layout, also
    vmapped over models."""
    top, bottom, left, right = pads
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 9, 11, 5)) + 3.0  # no zeros inside
    padded = jnp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right), (0, 0)))
    h, w = padded.shape[2:4]
    rows, cols = np.arange(h) - top, np.arange(w) - left
    np.testing.assert_array_equal(jax.vmap(ops._take_rows_cols, (0, None, None))(x, rows, cols), padded)
    np.testing.assert_array_equal(ops._take_rows_cols(x[0, ..., 0], rows[1::2], cols[::3]),
                                  padded[0, :, 1::2, ::3, 0])
    if h % 2 == 0 and w % 2 == 0:
        blocks = jax.vmap(lambda a: ops._padded_space_to_depth(a, top, bottom, left, right))(x)
        np.testing.assert_array_equal(blocks, jax.vmap(ops._space_to_depth)(padded))


@pytest.mark.parametrize("k,pad,hw", [(3, 1, 28), slow(3, 1, 14), slow(3, 0, 16), (5, 2, 14)])
def test_conv2d_on_blocks_is_the_convolution_on_blocks(k, pad, hw):
    """Output and both gradients equal the plain convolution's, laid out as 2x2 blocks."""
    kx, kw, kd = jax.random.split(jax.random.PRNGKey(8), 3)
    x = jax.random.normal(kx, (3, hw, hw, 4))
    w = jax.random.normal(kw, (k, k, 4, 6)) * 0.3
    assert ops.output_on_blocks_possible(x.shape, w.shape, pad)

    def plain(a, b):
        return ops._space_to_depth(ops.conv2d_reference(a, b, pad))

    assert_convs_agree(lambda a, b: ops.conv2d_on_blocks(a, b, pad), plain, (x, w),
                       jax.random.normal(kd, out_shape(plain, x, w)))


@pytest.mark.parametrize("k,hw", [(3, 24), slow(3, 26), slow(5, 16)])
def test_conv2d_blocks_to_blocks_and_back_to_pixels(k, hw):
    """Blocks in, blocks out: the plain unpadded convolution, value and gradients; and
    to_pixels is depth-to-space both ways."""
    kx, kw, kd = jax.random.split(jax.random.PRNGKey(9), 3)
    x = jax.random.normal(kx, (3, hw, hw, 4))
    w = jax.random.normal(kw, (k, k, 4, 6)) * 0.3
    assert ops.blocks_to_blocks_possible(x.shape, w.shape, 0)
    assert not ops.blocks_to_blocks_possible(x.shape, w.shape, 1)

    def fast(a, b):
        return ops.to_pixels(ops.conv2d_blocks_to_blocks(ops._space_to_depth(a), b))

    assert_convs_agree(fast, lambda a, b: ops.conv2d_reference(a, b, 0), (x, w),
                       jax.random.normal(kd, (3, hw - k + 1, hw - k + 1, 6)))


def test_max_pool_on_blocks_value_and_gradient_with_ties():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    x = x.at[0, 0:2, 0:2, 0].set(1.5)  # a window of four equal maxima
    x = jax.nn.relu(x)  # and many windows of zeros
    dy = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 4, 3))
    # fast on blocks, plain on the pixels those blocks hold
    y, ref, (g_fast,), (g_plain,) = values_and_vjps(
        ops.max_pool_on_blocks, lambda b: ops.max_pool_reference(ops.to_pixels(b)),
        (ops._space_to_depth(x),), dy)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(g_fast, g_plain)


def test_output_on_blocks_needs_blocks_and_an_even_output():
    assert ops.output_on_blocks_possible((2, 28, 28, 10), (3, 3, 10, 20), 1)
    assert ops.output_on_blocks_possible((2, 28, 28, 10), (3, 3, 10, 20), 0)  # 26 x 26
    assert not ops.output_on_blocks_possible((2, 27, 27, 10), (3, 3, 10, 20), 0)  # 25: odd
    assert not ops.output_on_blocks_possible((2, 15, 15, 10), (3, 3, 10, 20), 1)  # 15: odd
    assert not ops.output_on_blocks_possible((2, 28, 28, 16), (3, 3, 16, 16), 1)  # not blocked


def _pool_stage_inputs(width: int):
    """(2, 8, width, 3) activations with a window of four equal maxima and a window the
    ReLU turns to zeros, and BatchNorm's per-channel scale and offset."""
    y = jax.random.normal(jax.random.PRNGKey(1), (2, 8, width, 3))
    y = y.at[0, 0:2, 0:2, 0].set(1.5)
    y = y.at[1, 2:4, 4:6, 1].set(-1.0)
    return y, jnp.array([1.0, 0.5, 2.0]), jnp.array([0.1, -0.2, 0.0])


def assert_pool_stages_agree(fast, plain, args, pooled_shape):
    """Exactly equal outputs, some pooled to zero, and gradients to every argument close."""
    out, ref, fast_grads, plain_grads = values_and_vjps(
        fast, plain, args, jax.random.normal(jax.random.PRNGKey(2), pooled_shape))
    np.testing.assert_array_equal(out, ref)
    assert np.sum(np.asarray(ref) == 0) > 0
    for f, p in zip(fast_grads, plain_grads):
        np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-6)


def test_bn_relu_max_pool_on_blocks_value_and_gradient_with_ties():
    """Equals max_pool(relu(y * scale + offset)) on the plain pixels, gradients to yb,
    scale and offset included; ties go to the first maximum, all-zero windows pass none."""
    y, scale, offset = _pool_stage_inputs(8)
    yb = ops._space_to_depth(y)

    def plain(yb, s, o):
        return ops.max_pool_reference(jax.nn.relu(ops._depth_to_space(yb) * s + o))

    def fast(yb, s, o):
        return ops.bn_relu_max_pool_on_blocks(yb, s, o)

    assert_pool_stages_agree(fast, plain, (yb, scale, offset), (2, 4, 4, 3))


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_bn_relu_dropout_max_pool_value_and_gradient(rate):
    """Equals max_pool(dropout(relu(y * scale + offset))) with dropout's own mask, gradients
    to y, scale and offset included; ties go to the first maximum, all-zero windows
    (ReLU or dropout) pass none."""
    y, scale, offset = _pool_stage_inputs(12)
    key = jax.random.PRNGKey(7)

    def plain(y, s, o):
        z = jax.nn.relu(y * s + o)
        return ops.max_pool_reference(ops.dropout(z, rate, key) if rate else z)

    def fast(y, s, o):
        return ops.bn_relu_dropout_max_pool(y, s, o, ops.dropout_seed(key), rate)

    assert_pool_stages_agree(fast, plain, (y, scale, offset), (2, 4, 6, 3))


@pytest.mark.slow
def test_fused_pool_stages_vmapped_over_models_equal_each_model():
    """The multi-seed step vmaps both fused stages over a leading model axis (K = 2)."""
    scale = jnp.array([[1.0, 0.5, 2.0], [0.7, 1.2, 0.3]])
    offset = jnp.array([[0.1, -0.2, 0.0], [0.0, 0.3, -0.1]])
    seeds = jax.vmap(ops.dropout_seed)(jax.random.split(jax.random.PRNGKey(3), 2))
    on_blocks = ops.bn_relu_max_pool_on_blocks
    cases = [  # (op, y, pooled shape, extra per-model argument)
        (lambda y, s, o, _: on_blocks(y, s, o), (2, 2, 8, 8, 12), (2, 2, 8, 8, 3)),
        (lambda y, s, o, seed: ops.bn_relu_dropout_max_pool(y, s, o, seed, 0.25),
         (2, 2, 8, 16, 3), (2, 2, 4, 8, 3)),
    ]
    for op, y_shape, out_shape in cases:
        y = jax.random.normal(jax.random.PRNGKey(1), y_shape)
        dy = jax.random.normal(jax.random.PRNGKey(2), out_shape)

        def vmapped(y, s, o):
            return jax.vmap(op)(y, s, o, seeds)

        def one_by_one(y, s, o):
            return jnp.stack([op(y[i], s[i], o[i], seeds[i]) for i in range(2)])

        np.testing.assert_array_equal(vmapped(y, scale, offset), one_by_one(y, scale, offset))
        assert_vjps_close(vmapped, one_by_one, (y, scale, offset), dy, 1e-6, 1e-6)


def test_max_pool_value_and_gradient_with_ties():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    x = x.at[0, 0:2, 0:2, 0].set(1.5)  # a window of four equal maxima
    x = jax.nn.relu(x)  # and many windows of zeros
    dy = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 4, 3))
    y, ref, (g_fast,), (g_plain,) = values_and_vjps(ops.max_pool, ops.max_pool_reference, (x,), dy)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(g_fast, g_plain)


@pytest.mark.parametrize("shape,g,groups", [
    ((6, 28, 28, 10), 8, 1), slow((6, 14, 14, 20), 4, 1), slow((6, 26, 26, 8), 2, 1),
    slow((6, 9, 9, 12), 2, 1), slow((3, 5, 5, 10), 1, 1), slow((6, 7, 7, 16), 1, 1),
    slow((6, 1, 1, 120), 2, 1),
    ((6, 14, 14, 80), 1, 4), slow((6, 7, 7, 40), 2, 4), slow((3, 5, 5, 12), 1, 4),  # on 2x2 blocks
])
def test_batch_moments_value_and_gradient(shape, g, groups):
    """The side-by-side row sums (g rows per vector; fewer when the row count is odd)
    equal the plain mean and variance, in value and gradient; with `groups` copies of
    the channels side by side (2x2 blocks), per channel over all copies."""
    m, c = int(np.prod(shape[:-1])), shape[-1]
    assert ops._rows_side_by_side(m, c) == g
    kx, kd = jax.random.split(jax.random.PRNGKey(3))
    x = jax.random.normal(kx, shape) * 2.0 + 0.5
    dmean, dvar = jax.random.normal(kd, (2, c // groups))
    moments, ref, (fast,), (plain,) = values_and_vjps(
        lambda a: ops.batch_moments(a, groups), lambda a: ops.batch_moments_reference(a, groups),
        (x,), (dmean, dvar))
    for f, p in zip(moments, ref):
        np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rate", [0.01, slow(0.05), slow(0.1), 0.5])
def test_hash_dropout_statistics(rate):
    x = jnp.ones((64, 28, 28, 16))
    y = ops.dropout(x, rate, jax.random.PRNGKey(3))
    kept = np.asarray(y != 0)
    n = kept.size
    assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / (1 - rate), rtol=1e-6)
    # neighbouring elements and channels are uncorrelated; keys give different masks
    flat = kept.reshape(-1).astype(float)
    for lag in (1, 2, 16, 28 * 16, 28 * 28 * 16):  # neighbour, channel, row, image strides
        assert abs(np.corrcoef(flat[:-lag], flat[lag:])[0, 1]) < 0.01, lag
    other = np.asarray(ops.dropout(x, rate, jax.random.PRNGKey(4)) != 0)
    p_differ = 2 * rate * (1 - rate)  # independent masks
    assert abs((other != kept).mean() - p_differ) < 5 * np.sqrt(p_differ / n) + 1e-4
