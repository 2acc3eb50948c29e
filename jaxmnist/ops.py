"""Numerical primitives of the networks: convolution, 2x2 max pool, dropout, BN moments.

Each has a plain formulation (`*_reference`) and the one the networks use. Where they
differ, the difference is for speed on CPU and a test checks values and gradients agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def conv2d_reference(x, kernel, padding: int):
    return lax.conv_general_dilated(
        x, kernel, (1, 1), [(padding, padding)] * 2, dimension_numbers=_DN
    )


conv2d = conv2d_reference


def max_pool_reference(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


max_pool = max_pool_reference


def batch_moments(x):
    """Mean and biased variance over all but the channel axis, in one pass."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    mean_sq = jnp.mean(jnp.square(x), axes)
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0)


def dropout_reference(x, rate: float, key):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


dropout = dropout_reference
