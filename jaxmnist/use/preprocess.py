"""Any photo or scan of one digit -> a 28x28 uint8 image in MNIST's own format.

MNIST was made from NIST's binary scans by (LeCun et al.): size-normalising each digit
to fit a 20x20 box with its aspect ratio kept, anti-aliasing (so the result has grey
levels), and centring it in a 28x28 field by its centre of mass. The nets only ever saw
that format, light ink on a black background, so an arbitrary image goes through the
same steps before it reaches them:

1. grey levels (transparent pixels count as white paper);
2. inverted when the background (the median of the border pixels) is light;
3. the background level subtracted and the contrast stretched to 0..255;
4. cropped to the bounding box of the ink;
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
    a = grey(image) if isinstance(image, Image.Image) else np.asarray(image, np.float32)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        a = a[..., :3].mean(-1) if a.shape[-1] >= 3 else a[..., 0]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected a 2-D grey image, got shape {np.shape(a)}")
    ink = _light_on_dark(a)
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        raise NoInk("no ink found: the image is blank or of uniform colour")
    crop = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    return _centre(_fit_box(crop))


def from_bytes(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    return to_mnist(open_image(data, max_pixels))


def _light_on_dark(a: np.ndarray) -> np.ndarray:
    """Ink in 0..1 on a 0 background, whatever the paper's polarity and level."""
    border = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    if np.median(border) > 127.5:
        a = 255.0 - a
        border = 255.0 - border
    background = float(np.median(border))
    peak = float(a.max())
    if peak - background < MIN_CONTRAST:
        raise NoInk("no ink found: the image is blank or of uniform colour")
    ink = np.clip((a - background) / (peak - background), 0.0, 1.0)
    paper = np.clip((border - background) / (peak - background), 0.0, 1.0)
    ink[ink <= NOISE_FACTOR * float(np.percentile(paper, NOISE_PERCENTILE))] = 0.0
    return ink


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
