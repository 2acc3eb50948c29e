"""Preprocessing holds on the inputs people make: tight crops with ink touching the
edges, shadows and uneven light, coloured ink on coloured paper, JPEG and sensor noise,
a fine pen in a large photo, a small digit on a large page; each comes out close to the
clean scan's MNIST image, and a blank one is still refused in one line."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from jaxmnist.use import preprocess


def digit(size=(300, 300), box=(60, 40, 240, 260), width=18, ink=(0, 0, 0), paper=(255, 255, 255)):
    """A 4 drawn with strokes of `width` inside `box` on an RGB canvas."""
    im = Image.new("RGB", size, paper)
    d = ImageDraw.Draw(im)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    d.line([(x0 + 0.55 * w, y0), (x0, y0 + 0.65 * h), (x1, y0 + 0.65 * h)], fill=ink, width=width)
    d.line([(x0 + 0.7 * w, y0 + 0.3 * h), (x0 + 0.7 * w, y1)], fill=ink, width=width)
    return im


CLEAN = preprocess.to_mnist(digit())


def similar(image, threshold=0.9):
    out = preprocess.to_mnist(image)
    r = np.corrcoef(out.ravel().astype(float), CLEAN.ravel().astype(float))[0, 1]
    assert r > threshold, r
    return out


def tight(image):
    """Cropped to the ink's own bounding box: strokes touch every edge."""
    grey = np.asarray(image.convert("L"))
    rows, cols = np.nonzero(grey < 128)
    return image.crop((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))


def test_a_tight_crop_is_read_in_either_polarity():
    crop = tight(digit())
    similar(crop)
    similar(Image.fromarray(255 - np.asarray(crop)))


def test_uneven_light_and_a_soft_shadow_are_paper():
    a = np.asarray(digit(), np.float32)
    y, x = np.mgrid[0:300, 0:300] / 300.0
    light = 0.45 + 0.55 * x[..., None]  # dark on the left, bright on the right
    shadow = 1.0 - 0.35 * np.exp(-((x - 0.1) ** 2 + (y - 0.9) ** 2) / 0.08)[..., None]  # a hand's
    similar(Image.fromarray(np.clip(a * light * shadow, 0, 255).astype(np.uint8)))


def test_coloured_ink_on_coloured_paper():
    similar(digit(ink=(30, 60, 200), paper=(250, 230, 120)))  # blue biro on yellow notepaper
    similar(digit(ink=(200, 30, 30), paper=(200, 220, 240)))  # red ink on light blue
    similar(digit(ink=(240, 240, 240), paper=(30, 90, 40)))  # chalk on a green board


def test_jpeg_and_sensor_noise():
    rng = np.random.default_rng(0)
    noisy = np.asarray(digit(), np.float32) + rng.normal(0, 18, (300, 300, 1))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=35)
    similar(preprocess.open_image(buf.getvalue()), threshold=0.85)


def test_a_fine_pen_in_a_large_photo_keeps_a_visible_stroke():
    out = similar(digit(size=(1500, 1500), box=(300, 200, 1200, 1300), width=3), threshold=0.8)
    assert (out > 128).sum() >= 40  # an MNIST-like stroke, not a faint trace


def test_thick_marker():
    similar(digit(width=45), threshold=0.8)


def test_a_small_digit_on_a_large_page_with_specks():
    page = digit(size=(1600, 1200), box=(700, 500, 790, 610), width=8)
    d = ImageDraw.Draw(page)
    rng = np.random.default_rng(1)
    for x, y in rng.integers(0, 1150, (40, 2)):  # dust and pencil dots far from the digit
        d.ellipse([x, y, x + 2, y + 2], fill=(90, 90, 90))
    similar(page, threshold=0.85)


def test_a_slightly_rotated_scan():
    similar(digit().rotate(4, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255)),
            threshold=0.85)


def test_blank_and_noise_only_images_are_refused():
    rng = np.random.default_rng(2)
    for image in (Image.new("RGB", (200, 200), (250, 240, 200)),
                  Image.fromarray(np.clip(200 + rng.normal(0, 3, (200, 200)), 0, 255).astype(np.uint8))
                  .filter(ImageFilter.GaussianBlur(1))):
        with pytest.raises(preprocess.NoInk, match="no ink found"):
            preprocess.to_mnist(image)
