"""Any photo or scan of one digit -> a 28x28 uint8 image in MNIST's own format.

MNIST was made from NIST's binary scans by (LeCun et al.): size-normalising each digit
to fit a 20x20 box with its aspect ratio kept, anti-aliasing (so the result has grey
levels), and centring it in a 28x28 field by its centre of mass. The nets only ever saw
that format, light ink on a black background, so an arbitrary image goes through the
same steps before it reaches them:

1. colour, transparent pixels counting as white paper; photos over MAX_SIDE pixels
   area-averaged down to it;
2. the paper's colour fitted as a smooth (quadratic) surface over the pixels that are
   paper, so a shadow or uneven lighting is paper too, and the ink taken as each pixel's
   colour distance from it: dark or light ink, on any paper colour, any ink colour, and
   the paper found wherever it is, not only on the border (a tightly cropped digit's ink
   touches every edge);
3. a noise floor (JPEG ringing, paper texture, sensor noise) and specks far smaller than
   the digit's largest stroke group removed, the contrast stretched to 0..1;
4. a stroke thinner than MIN_STROKE of the box after scaling thickened to it (a fine pen
   in a large photo would otherwise vanish in the averaging); then cropped to the
   bounding box of the ink;
5. the longer side scaled to 20 px, the aspect ratio kept (area-averaged when
   shrinking, so it is anti-aliased; bilinear when enlarging);
6. pasted into 28x28 so that the ink's centre of mass sits at the centre.

`predict` and `serve` both call `to_mnist`; arrays that already are MNIST-format images
(N, 28, 28) are fed to the nets as they are, like the test set.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxmnist.messages import one_line

SIZE = 28
BOX = 20
# Where the centre of mass lands, in pixel-centre index coordinates (row, column). The
# geometric centre of a 28-pixel axis is 13.5, but MNIST's digits sit at (14.0, 14.0)
# (mean over the 60k training images, std 0.3 px), so aim where the nets expect them.
CENTRE = (14.0, 14.0)
# After the stretch, levels below the noise floor are paper (JPEG ringing, paper
# texture, sensor noise) and neither count for the bounding box nor survive. The floor is
# measured on the border, which is mostly paper: three times the level that 90% of the
# border stays under (robust to a stroke that touches the edge). A clean scan (floor 0)
# keeps its faintest anti-aliased edge pixels, as MNIST's bounding boxes do (dropping
# them measured 0.3 points of accuracy), and a noisy photo does not grow its box to
# the noise.
NOISE_FACTOR = 3.0
NOISE_PERCENTILE = 90
# An image whose ink is fainter than this many grey levels above its background holds
# no digit at all (blank, uniformly grey, or only noise).
MIN_CONTRAST = 32
WORK_SIDE = 256  # the paper is fitted on a grid of at most this many points a side
MAX_SIDE = 1024  # larger photos are reduced to this first
# MNIST's strokes are 2-3 px wide in the 20 px box; a stroke that would come out under
# this width is thickened first.
MIN_STROKE = 1.6


class NoInk(ValueError):
    """The image holds nothing that looks like a digit (blank or uniform)."""


class NotAnImage(ValueError):
    """The bytes or file are not an image Pillow can decode."""


def open_image(source, max_pixels: int | None = None) -> Image.Image:
    """A decoded PIL image from a path or bytes; NotAnImage if it is none.

    `max_pixels` refuses an image before decoding it: a few kilobytes of PNG can
    announce a gigapixel canvas, which a server must not try to allocate.
    """
    name = "the data" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise NotAnImage(f"{name} is {image.width}x{image.height} pixels, more than the "
                             f"{max_pixels} allowed")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError,
            ValueError) as exc:
        if isinstance(exc, NotAnImage):
            raise
        raise NotAnImage(f"{name} is not a readable image ({one_line(exc)})") from None
    return ImageOps.exif_transpose(image)  # phone photos are stored rotated


def colour(image: Image.Image) -> np.ndarray:
    """float32 RGB 0..255 (H, W, 3); alpha is composited over white paper, grey images
    repeated in three channels, 16-bit and float scans scaled to 0..255."""
    if image.mode in ("RGBA", "LA", "PA", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(paper, rgba)
        return np.asarray(image.convert("RGB"), np.float32)
    return np.repeat(grey(image)[..., None], 3, -1)


def _reduced(rgb: np.ndarray) -> np.ndarray:
    """A photo larger than MAX_SIDE on its longer side, area-averaged down to it (in
    floating point, so both polarities reduce alike): the digit ends up 20 px anyway."""
    h, w = rgb.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c]), "F")
                                .resize(size, Image.Resampling.BOX)) for c in range(3)], -1)


def grey(image: Image.Image) -> np.ndarray:
    """float32 grey levels 0..255 (H, W); alpha is composited over white paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float scans
        a = np.asarray(image.convert("F"), np.float32)
        top = float(a.max()) or 1.0
        return a * (255.0 / (65535.0 if top > 255 else 255.0))
    return np.asarray(image.convert("L"), np.float32)


def to_mnist(image: Image.Image | np.ndarray) -> np.ndarray:
    """(28, 28) uint8, light ink on black, in MNIST's geometry; NoInk when blank.

    Takes a PIL image (any size, mode, polarity) or a 2-D grey array 0..255.
    """
    if isinstance(image, Image.Image):
        rgb = _reduced(colour(image))
    else:
        a = np.asarray(image, np.float32)
        if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
            a = a[..., :3] if a.shape[-1] >= 3 else a[..., 0]
        if a.ndim not in (2, 3) or a.size == 0:
            raise ValueError(f"expected a 2-D grey image, got shape {np.shape(a)}")
        rgb = np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a
    ink = _light_on_dark(rgb)
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        raise NoInk("no ink found: the image is blank or of uniform colour")
    crop = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    return _centre(_fit_box(_thickened(crop)))


def from_bytes(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    return to_mnist(open_image(data, max_pixels))


def _coordinates(h: int, w: int, stride: int = 1):
    y = np.arange(0, h, stride, dtype=np.float32) / max(h - 1, 1) - 0.5
    x = np.arange(0, w, stride, dtype=np.float32) / max(w - 1, 1) - 0.5
    return y[:, None], x[None, :]


def _paper_surface(rgb: np.ndarray, paper: np.ndarray, stride: int) -> np.ndarray:
    """Least-squares quadratic in (y, x) per channel, fitted over the `paper` pixels of
    the grid `rgb[::stride, ::stride]` and evaluated at every pixel: the paper's colour
    everywhere, shading and lighting gradients included."""
    h, w = rgb.shape[:2]
    y, x = _coordinates(h, w, stride)
    terms = [np.ones_like(y * x), x + 0 * y, y + 0 * x, x * x + 0 * y, x * y, y * y + 0 * x]
    basis = np.stack([t[paper] for t in terms], -1)
    values = rgb[::stride, ::stride][paper]
    step = max(1, len(basis) // 8192)  # a regular subsample is plenty for six coefficients
    basis, values = basis[::step].astype(np.float64), values[::step].astype(np.float64)
    coef = np.linalg.solve(basis.T @ basis + 1e-9 * np.eye(6), basis.T @ values)
    y, x = _coordinates(h, w)
    c = coef[:, None, None, :]  # (6, 1, 1, channels)
    return (c[0] + c[1] * x[..., None] + c[2] * y[..., None] + c[3] * (x * x)[..., None]
            + c[4] * (x * y)[..., None] + c[5] * (y * y)[..., None])


def _otsu(values: np.ndarray) -> float:
    """The threshold that best splits `values` into two groups (Otsu, 256 bins)."""
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    between = (m0[-1] * w0 - m0 * w0[-1]) ** 2 / np.maximum(w0 * w1, 1)
    return float(centres[int(np.argmax(between))])


def _light_on_dark(rgb: np.ndarray) -> np.ndarray:
    """Ink in 0..1 on a 0 background, whatever the paper's and the ink's colours. The
    paper is fitted on a grid of at most WORK_SIDE points a side; the ink is measured at
    every pixel."""
    stride = max(1, max(rgb.shape[:2]) // WORK_SIDE)
    grid = rgb[::stride, ::stride]
    distance = np.linalg.norm(grid - np.median(grid.reshape(-1, grid.shape[-1]), 0), axis=-1)
    few = min(8, max(1, distance.size // 4096))  # ink must be more than a stray pixel or two
    if float(np.sort(distance, axis=None)[-few]) < MIN_CONTRAST:
        raise NoInk("no ink found: the image is blank or of uniform colour")
    paper = distance < _otsu(distance)
    for _ in range(2):  # refit the paper on what is paper, then re-split
        surface = _paper_surface(rgb, paper, stride)
        # relative to the paper's own brightness: light falling off across the page dims
        # ink and paper alike (floored, so that dark paper's noise is not magnified)
        brightness = np.maximum(np.linalg.norm(surface, axis=-1), 64.0) / np.sqrt(3.0) / 255.0
        distance = np.linalg.norm(rgb - surface, axis=-1) / brightness
        grid_distance = distance[::stride, ::stride]
        paper = grid_distance < max(_otsu(grid_distance), MIN_CONTRAST / 2)
    ink_levels = grid_distance[~paper]
    peak = float(np.percentile(ink_levels, 99)) if ink_levels.size else 0.0
    floor = NOISE_FACTOR * float(np.percentile(grid_distance[paper], NOISE_PERCENTILE))
    if peak - floor < MIN_CONTRAST:
        raise NoInk("no ink found: the image is blank or of uniform colour")
    ink = np.clip((distance - floor) / (peak - floor), 0.0, 1.0)
    return _without_specks(ink)


def _without_specks(ink: np.ndarray) -> np.ndarray:
    """Drops connected ink smaller than 2% of the largest piece (noise, dust, specks)."""
    from scipy import ndimage

    labels, n = ndimage.label(ink > 0, structure=np.ones((3, 3)))
    if n <= 1:
        return ink
    mass = ndimage.sum(ink, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], mass >= 0.02 * mass.max()])
    return np.where(keep[labels], ink, 0.0)


def _thickened(crop: np.ndarray) -> np.ndarray:
    """`crop` with its strokes widened (grey dilation) when they would come out thinner
    than MIN_STROKE pixels in the 20 px box. The stroke width is estimated as twice the
    ink's mean distance to paper (scipy's Euclidean distance transform)."""
    from scipy import ndimage

    mask = crop > 0.5
    if not mask.any():
        return crop
    width = 2.0 * float(ndimage.distance_transform_edt(mask)[mask].mean())
    scale = BOX / max(crop.shape)
    if width * scale >= MIN_STROKE:
        return crop
    grow = int(np.ceil((MIN_STROKE / scale - width) / 2.0))
    size = 2 * grow + 1
    return ndimage.grey_dilation(crop, footprint=np.ones((size, size), bool))


def _fit_box(crop: np.ndarray) -> np.ndarray:
    """The longer side to BOX pixels, aspect ratio kept, anti-aliased."""
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (width, height)
    # BOX averages every source pixel a target pixel covers (true anti-aliasing for
    # any reduction factor); enlarging a tiny digit needs interpolation instead.
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(crop.astype(np.float32), "F").resize(size, method), np.float32)


def _centre(patch: np.ndarray) -> np.ndarray:
    """Pastes `patch` into 28x28 with its centre of mass at CENTRE (whole-pixel shift).

    The shift is clamped so the whole patch stays inside: for a very lopsided digit the
    centre of mass then sits a little off centre rather than ink being cut away.
    """
    patch = np.clip(patch, 0.0, 1.0)
    h, w = patch.shape
    total = patch.sum()
    cy = (patch.sum(1) @ np.arange(h)) / total
    cx = (patch.sum(0) @ np.arange(w)) / total
    top = int(np.clip(round(CENTRE[0] - cy), 0, SIZE - h))
    left = int(np.clip(round(CENTRE[1] - cx), 0, SIZE - w))
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top: top + h, left: left + w] = patch
    return np.round(out * 255.0).astype(np.uint8)
