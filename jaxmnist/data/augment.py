"""Random rotation on device, with torchvision's `RandomRotation` semantics.

The seeds rotate PIL images (torchvision calls `PIL.Image.rotate(angle, resample,
expand=False, center=None, fillcolor=fill)`), so this reproduces PIL's geometry: the
angle is counter-clockwise in degrees, the centre is (W/2, H/2) in pixel-edge
coordinates, and each output pixel centre (x+0.5, y+0.5) is mapped back through the
inverse rotation; nearest-neighbour then takes floor() of the source coordinate, and
anything outside the image gets `fill`. Everything is a gather, so a whole batch with
per-image angles costs one fused kernel inside the jitted train step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MODES = ("nearest", "bilinear")


def _source_coords(angles_deg, height: int, width: int):
    """Source (x, y) in pixel-edge coordinates for every output pixel, per angle."""
    theta = -jnp.deg2rad(angles_deg.astype(jnp.float32))[:, None, None]
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    cx, cy = width / 2.0, height / 2.0
    ys, xs = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32) + 0.5 - cy,
        jnp.arange(width, dtype=jnp.float32) + 0.5 - cx,
        indexing="ij",
    )
    src_x = cos * xs + sin * ys + cx
    src_y = -sin * xs + cos * ys + cy
    return src_x, src_y


def _gather(flat, ix, iy, height, width, fill):
    """flat: (N, H*W, C); ix, iy: (N, H, W) int; out-of-range -> fill."""
    inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    idx = jnp.where(inside, iy * width + ix, 0).reshape(ix.shape[0], -1, 1)
    vals = jnp.take_along_axis(flat, idx, axis=1)
    return jnp.where(inside.reshape(ix.shape[0], -1, 1), vals, jnp.asarray(fill, flat.dtype))


def rotate(images, angles_deg, mode: str = "nearest", fill: float = 0.0):
    """Rotates each image of (N, H, W, C) by its own angle (degrees, counter-clockwise).

    Returns float32 for bilinear; nearest keeps the input dtype (uint8 stays uint8, so
    the gather moves a quarter of the bytes).
    """
    if mode not in MODES:
        raise ValueError(f"unknown rotation mode {mode!r}; valid: {', '.join(MODES)}")
    n, h, w, c = images.shape
    src_x, src_y = _source_coords(angles_deg, h, w)
    flat = images.reshape(n, h * w, c)
    if mode == "nearest":
        # PIL's COORD(): negative -> -1 (outside), else truncation == floor.
        ix = jnp.floor(src_x).astype(jnp.int32)
        iy = jnp.floor(src_y).astype(jnp.int32)
        return _gather(flat, ix, iy, h, w, fill).reshape(n, h, w, c)
    flat = flat.astype(jnp.float32)
    fx, fy = src_x - 0.5, src_y - 0.5  # to pixel-centre coordinates
    x0, y0 = jnp.floor(fx), jnp.floor(fy)
    wx, wy = (fx - x0)[..., None], (fy - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)

    def at(dx, dy):
        return _gather(flat, x0 + dx, y0 + dy, h, w, fill).reshape(n, h, w, c)

    top = at(0, 0) * (1 - wx) + at(1, 0) * wx
    bottom = at(0, 1) * (1 - wx) + at(1, 1) * wx
    return top * (1 - wy) + bottom * wy


def random_rotate(key, images, max_degrees: float, mode: str = "nearest", fill: float = 0.0):
    """Per-image angle ~ U[-max_degrees, +max_degrees], like RandomRotation(max_degrees).
    max_degrees may be traced (a scheduled range); a Python 0 skips the rotation."""
    if isinstance(max_degrees, (int, float)) and max_degrees <= 0:
        return images
    angles = jax.random.uniform(
        key, (images.shape[0],), jnp.float32, -max_degrees, max_degrees
    )
    return rotate(images, angles, mode, fill)


def tta_views(images, degrees: float):
    """(V*N, ...) views for test-time augmentation, view-major: the images, then (degrees
    > 0) the images rotated by +degrees and by -degrees. One batch of views keeps the
    evaluation one network call."""
    if degrees <= 0:
        return images
    n = images.shape[0]
    angles = jnp.concatenate([jnp.full((n,), degrees), jnp.full((n,), -degrees)])
    rotated = rotate(jnp.concatenate([images, images]), angles)
    return jnp.concatenate([images, rotated])


def normalize(images_u8, mean: float, std: float):
    """uint8 pixels -> float32 (x/255 - mean)/std, as ToTensor() + Normalize((mean,), (std,))."""
    return (images_u8.astype(jnp.float32) * (1.0 / 255.0) - mean) * (1.0 / std)
