"""Derived datasets for the translation families, built offline from the bundled mnist5k digits.

The paired-translation families (A -> B) and the segmentation-to-image
families (label map -> image) need data that no bundled source has. These
builders make it from the 5,000 mnist5k digits, with no download:

- ``edges2digits``: edge map (A) -> grey digit (B), the digit analogue of
  edges2shoes;
- ``colorize``: grey digit (A) -> the same digit in colour (B); the colour is
  fixed by the class and the texture by the image, so a generator must read
  the digit's identity from its shape;
- ``shapes`` / ``shapes64``: scene label maps (background, circle, square,
  triangle, digit) -> RGB scenes where every class has its own colour and
  texture, the analogue of Cityscapes / ADE20K label maps.

Every builder is a pure function of its arguments: each random choice comes
from ``numpy.random.default_rng`` with a fixed seed, and each float step is an
elementwise IEEE operation (+, -, *, /, floor, abs) rounded to uint8 at the
end; no sin/cos/exp (vectorised libm code may differ in the last bit between
CPUs), no BLAS and no reductions go into a pixel. So the same call returns
byte-identical arrays every time and on every machine with the same numpy and
Pillow (Pillow does the resizing, in fixed point).

Held-out rows. ``train_count`` splits every dataset: the first rows train,
the rest are held out for evaluation. For the digit datasets the mnist5k rows
are shuffled with a class-stratified split, so the last 500 rows are 50 of
each class; ``shapes`` scenes held out also paste only held-out digits, so no
digit instance is shared between the two parts.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from components.data.images import resize_images
from components.data.sources import RawImages, read_source

DIGIT_CLASSES = [str(d) for d in range(10)]
DIGIT_HELD_OUT = 500  # mnist5k rows held out: 50 of each class
DIGIT_SEED = 20240601  # the fixed seed of the mnist5k shuffle and of colorize's textures
INK_THRESHOLD = 128  # mid grey: a pixel at or above it is ink
# The pasted digit is binarised at quarter grey, not mid grey: bilinear downscaling to
# 11-16 px (at 32 px) averages mnist's 2-3 px strokes down to 100-150, so cutting at
# 128 breaks thin strokes apart (1% of scenes kept under 16 digit pixels, the worst 1);
# at 64 the worst scene keeps 17 and the digit stays one legible shape.
PASTE_THRESHOLD = 64

# -- palette and textures of colorize -------------------------------------------------------------


def _hsv_palette(count: int, saturation: float, value: float) -> np.ndarray:
    """``count`` colours with hues evenly spaced around the wheel, as uint8 (count, 3).

    The standard piecewise-linear HSV -> RGB formula, in exact arithmetic.
    """
    rows = []
    for k in range(count):
        h6 = 6.0 * k / count
        sextant = int(h6)
        f = h6 - sextant
        p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
        rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][sextant]
        rows.append([round(255 * c) for c in rgb])
    return np.array(rows, dtype=np.uint8)


# Hues 0, 36, ..., 324 degrees. Value 0.8 keeps the brightest channel at 204,
# so +20% texture tops out at 245 and never clips: the mean ink colour of a
# class stays its palette colour. Saturation 0.85 keeps every channel >= 31.
PALETTE = _hsv_palette(10, saturation=0.85, value=0.8)
COLORIZE_BACKGROUND = (16, 16, 20)  # a fixed dark colour, under faint luminance noise
COLORIZE_BACKGROUND_NOISE = 3.0  # sigma of that noise, in grey levels
COLORIZE_TEXTURE_AMPLITUDE = 0.2  # ink colour x (1 +- 0.2)

# Stripe directions, 22.5 degrees apart (cos, sin written out: no libm in a pixel).
_STRIPE_DIRECTIONS = np.array([
    (1.0, 0.0),
    (0.9238795325112867, 0.3826834323650898),
    (0.7071067811865476, 0.7071067811865476),
    (0.3826834323650898, 0.9238795325112867),
    (0.0, 1.0),
    (-0.3826834323650898, 0.9238795325112867),
    (-0.7071067811865476, 0.7071067811865476),
    (-0.9238795325112867, 0.3826834323650898),
])
_CHUNK = 500  # rows rendered at once: bounds the float working set (about 50 MB at 64 px)


def _triangle_wave(u: np.ndarray) -> np.ndarray:
    """Period-1 triangle wave in [-1, 1], mean zero: a sine-like stripe profile without libm."""
    return 4.0 * np.abs(u - np.floor(u) - 0.5) - 1.0


# -- the digits -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits and labels, read once (parsing takes ~2 s), read-only."""
    raw = read_source("mnist5k")
    images, labels = raw.images.copy(), raw.labels.copy()
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _stratified_order(labels: np.ndarray, held_out: int, rng: np.random.Generator) -> np.ndarray:
    """A shuffle of the rows whose last ``held_out`` rows hold each class in proportion.

    A plain shuffle would leave the held-out part's class counts to chance; here
    each class gives ``held_out * n_k / N`` random rows, and each part is then
    shuffled again (taking each class's first rows of one shuffle would put
    the classes that fill their quota late at the start of the training part).
    """
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    held = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        rows = np.flatnonzero(shuffled == k)
        held[rows[: round(held_out * len(rows) / len(labels))]] = True
    return np.concatenate([rng.permutation(order[~held]), rng.permutation(order[held])])


def digit_split(size: int = 32) -> tuple[np.ndarray, np.ndarray, int]:
    """mnist5k resized to size x size in the fixed stratified order: (images, labels, train_count).

    The row order of ``edges2digits`` and ``colorize``; 4,500 rows train, the
    last 500 (50 of each class) are held out.
    """
    images, labels = _mnist5k()
    order = _stratified_order(labels, DIGIT_HELD_OUT, np.random.default_rng([DIGIT_SEED, 0]))
    return resize_images(images[order], size), labels[order].copy(), len(labels) - DIGIT_HELD_OUT


# -- edges2digits ---------------------------------------------------------------------------------


def edge_map(images: np.ndarray) -> np.ndarray:
    """uint8 N x 1 x H x W grey digits -> uint8 N x 1 x H x W edge maps (255 on 0).

    The digit is binarised at mid grey and its edge is the external
    morphological gradient: the 3 x 3 dilation minus the ink itself, a one-pixel
    outline just outside the stroke. Not the full gradient (dilation minus
    erosion), nor a thresholded Sobel magnitude: both are a two-pixel band
    straddling the boundary, and mnist strokes are only 2-3 px wide at 32 px,
    so that band covers ~80% of the ink (the 3 x 3 erosion keeps only 21% of
    it) and the "edge map" is just a bolder digit. The outline leaves the
    stroke interior black, so the generator has to fill the shape between the
    lines, as with edges2shoes sketches. On binary images it is exact integer
    logic, so it is the same on every machine.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"edge_map: expected uint8 N,1,H,W, got {images.dtype} {images.shape}")
    ink = images[:, 0] >= INK_THRESHOLD
    grown = ndimage.binary_dilation(ink, structure=np.ones((1, 3, 3), dtype=bool))
    return np.where(grown & ~ink, np.uint8(255), np.uint8(0))[:, None]


def edges2digits(size: int = 32) -> RawImages:
    """Paired data: ``inputs`` = edge maps of the digits, ``images`` = the grey digits.

    The edges are taken after resizing, so they are one pixel wide at every size.
    """
    images, labels, train_count = digit_split(size)
    return RawImages(images, labels, list(DIGIT_CLASSES), "edges2digits",
                     inputs=edge_map(images), train_count=train_count)


# -- colorize -------------------------------------------------------------------------------------


def colorize(size: int = 32) -> RawImages:
    """Paired data: ``inputs`` = the grey digit, ``images`` = the same digit in colour.

    Ink takes the palette colour of the digit's class (``PALETTE[label]``)
    times ``1 + 0.2 t``, t a stripe texture in [-1, 1] whose direction (one of
    8), period (15-25% of the image) and phase are drawn per row, so a model
    can predict the colour from the digit's shape but not the stripes; the
    background is a fixed dark colour under faint noise. The grey level is
    the blend weight between background and ink, so anti-aliased edges stay
    smooth.
    """
    grey, labels, train_count = digit_split(size)
    n = len(grey)
    rng = np.random.default_rng([DIGIT_SEED, 1])
    direction = _STRIPE_DIRECTIONS[rng.integers(0, len(_STRIPE_DIRECTIONS), n)]
    period = rng.uniform(0.15, 0.25, n) * size
    phase = rng.uniform(0.0, 1.0, n).astype(np.float32).reshape(-1, 1, 1)
    cx = (direction[:, 0] / period).astype(np.float32).reshape(-1, 1, 1)  # stripe cycles per pixel along x
    cy = (direction[:, 1] / period).astype(np.float32).reshape(-1, 1, 1)
    noise_rng = np.random.default_rng([DIGIT_SEED, 2])
    centre = np.arange(size, dtype=np.float32) + np.float32(0.5)
    x, y = centre.reshape(1, 1, -1), centre.reshape(1, -1, 1)
    palette = PALETTE.astype(np.float32)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        shade = np.float32(1) + np.float32(COLORIZE_TEXTURE_AMPLITUDE) * _triangle_wave(
            x * cx[rows] + y * cy[rows] + phase[rows])
        noise = noise_rng.standard_normal((shade.shape[0], size, size), dtype=np.float32)
        alpha = grey[rows, 0].astype(np.float32) / np.float32(255)
        for c in range(3):
            back = np.float32(COLORIZE_BACKGROUND[c]) + np.float32(COLORIZE_BACKGROUND_NOISE) * noise
            ink = palette[labels[rows], c].reshape(-1, 1, 1) * shade
            out[rows, c] = np.clip(np.rint(back + alpha * (ink - back)), 0, 255).astype(np.uint8)
    return RawImages(out, labels, list(DIGIT_CLASSES), "colorize", inputs=grey, train_count=train_count)


# -- shapes ---------------------------------------------------------------------------------------

MAP_CLASSES = ["background", "circle", "square", "triangle", "digit"]
BACKGROUND, CIRCLE, SQUARE, TRIANGLE, DIGIT = range(5)
# The mean colour of each class's rendering. Every texture below is zero-mean
# (over whole periods) around it, so the colour of a pixel tells its class.
SHAPE_COLOURS = np.array([
    (28, 40, 105),  # background: dark blue, a vertical gradient from (20, 28, 80) to (36, 52, 130)
    (200, 50, 50),  # circle: red with light dots
    (50, 170, 70),  # square: green with diagonal stripes
    (220, 200, 50),  # triangle: yellow, flat
    (230, 230, 230),  # digit: white with a checkerboard
], dtype=np.uint8)
_BACKGROUND_TOP, _BACKGROUND_BOTTOM = np.array([20, 28, 80.0]), np.array([36, 52, 130.0])
SHAPES_NOISE = 8.0  # sigma of the Gaussian pixel noise, in grey levels
_SHAPES_PER_SCENE = 3
# Shape sizes, as fractions of the scene side. At most 3 shapes of at most
# 0.48^2 = 23% of the scene each, plus a digit box of at most 25%: every
# scene keeps some background.
_RADIUS = (0.10, 0.26)  # circle radius
_HALF_SIDE = (0.10, 0.24)  # square half side
_TRIANGLE_HALF = (0.12, 0.28)  # triangle half height = half base
_DIGIT_SIDE = (1 / 3, 1 / 2)  # the digit's longer side


def _texture(kind: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The zero-mean float32 texture of circles, squares or digits, added to every channel.

    x, y are in units of a 32 px scene's pixels (so a 64 px scene shows the
    same pattern at twice the resolution) and already carry the scene's random
    offset; every period divides 12, the offset's range. The background's
    texture is its vertical gradient, applied by the caller; triangles are flat.
    """
    if kind == CIRCLE:  # 2 x 2 light dots on a 4 x 4 grid: +48 on a quarter of the pixels, -16 elsewhere
        dots = (_triangle_wave(x / np.float32(4)) >= 0) & (_triangle_wave(y / np.float32(4)) >= 0)
        return np.where(dots, np.float32(48), np.float32(-16))
    if kind == SQUARE:  # diagonal stripes, period 6 along x + y
        return np.float32(30) * _triangle_wave((x + y) / np.float32(6))
    if kind == DIGIT:  # a checkerboard of one-unit cells
        checker = (np.floor(x) + np.floor(y)) % 2
        return np.where(checker == 0, np.float32(14), np.float32(-14))
    raise ValueError(f"_texture: class {kind} has no additive texture")


def _paste_digit(scene: np.ndarray, digit: np.ndarray, side: int, top_frac: float, left_frac: float) -> None:
    """Paste one mnist digit, cropped to its ink, scaled to ``side`` px (longer side), binarised."""
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    dh, dw = max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w)))
    scaled = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((dw, dh), Image.Resampling.BILINEAR))
    mask = scaled >= min(PASTE_THRESHOLD, int(scaled.max()))  # never empty, even for a faint thin digit
    size = scene.shape[0]
    top, left = int(top_frac * (size - dh + 1)), int(left_frac * (size - dw + 1))
    window = scene[top : top + dh, left : left + dw]
    window[mask] = DIGIT


def _shape_masks(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, extent: np.ndarray, turn: np.ndarray,
                 x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, H, W) masks of one shape per scene; pixel centres x (1, 1, W), y (1, H, 1)."""
    masks = np.zeros((len(kind), y.shape[1], x.shape[2]), dtype=bool)
    for shape in (CIRCLE, SQUARE, TRIANGLE):
        at = np.flatnonzero(kind == shape)
        if not len(at):
            continue
        dx, dy = x - cx[at].reshape(-1, 1, 1), y - cy[at].reshape(-1, 1, 1)
        r = extent[at].reshape(-1, 1, 1)
        if shape == CIRCLE:
            masks[at] = dx * dx + dy * dy <= r * r
        elif shape == SQUARE:
            masks[at] = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        else:  # apex at v = -r, base of half-width r at v = +r, turned by a multiple of 90 degrees
            t = turn[at].reshape(-1, 1, 1)
            flip = np.where(t >= 2, -1.0, 1.0)
            u, v = np.where(t % 2 == 0, dx, dy) * flip, np.where(t % 2 == 0, dy, dx) * flip
            masks[at] = (v <= r) & (2.0 * np.abs(u) <= v + r)
    return masks


def _scene_digits(count: int, train_count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mnist row) of each scene's digit: classes balanced within each part, held-out
    scenes drawing only held-out digits."""
    _, mnist_labels = _mnist5k()
    order = _stratified_order(mnist_labels, DIGIT_HELD_OUT, np.random.default_rng([DIGIT_SEED, 0]))
    pools = (order[: len(order) - DIGIT_HELD_OUT], order[len(order) - DIGIT_HELD_OUT :])
    labels = np.concatenate([rng.permutation(np.arange(train_count) % 10),
                             rng.permutation(np.arange(count - train_count) % 10)])
    rows = np.empty(count, dtype=np.int64)
    for part, scenes in enumerate((slice(0, train_count), slice(train_count, count))):
        for k in range(10):
            pool = pools[part][mnist_labels[pools[part]] == k]
            at = np.flatnonzero(labels[scenes] == k) + scenes.start
            rows[at] = pool[rng.integers(0, len(pool), len(at))]
    return labels.astype(np.int64), rows


def shapes(size: int = 32, count: int = 5000, seed: int = 0) -> RawImages:
    """Segmentation data: scenes of 1-3 shapes and one digit, their label maps and the digit's class.

    Per scene: 1-3 shapes (circle, square or triangle: type, position, size
    and, for triangles, a 90-degree turn at random; later shapes are drawn
    over earlier ones and may leave the frame) and then, on top, one mnist5k
    digit, binarised (``PASTE_THRESHOLD``), its longer side a third to a half
    of the scene, at a random place inside it. ``label_maps`` holds the class (``MAP_CLASSES``)
    drawn last at each pixel; ``images`` colour each class by its own colour
    and texture (``SHAPE_COLOURS``, ``_texture``) plus Gaussian noise of sigma
    8 levels. ``labels`` is the digit's class, so a digit classifier can be
    trained on the scenes. The first ``int(0.9 * count)`` scenes train.
    ``source`` is the read_source spec: ``shapes64`` at 64 px, else ``shapes``.
    """
    if count < 1 or size < 8:
        raise ValueError(f"shapes: expected count >= 1 and size >= 8, got count={count}, size={size}")
    train_count = int(0.9 * count)
    rng = np.random.default_rng([seed, 2])
    labels, digit_rows = _scene_digits(count, train_count, rng)
    n_shapes = rng.integers(1, _SHAPES_PER_SCENE + 1, count)
    kind = rng.integers(CIRCLE, TRIANGLE + 1, (count, _SHAPES_PER_SCENE))
    centre = rng.uniform(0.1, 0.9, (count, _SHAPES_PER_SCENE, 2)) * size
    unit = rng.uniform(0.0, 1.0, (count, _SHAPES_PER_SCENE))
    low = np.select([kind == CIRCLE, kind == SQUARE], [_RADIUS[0], _HALF_SIDE[0]], _TRIANGLE_HALF[0])
    high = np.select([kind == CIRCLE, kind == SQUARE], [_RADIUS[1], _HALF_SIDE[1]], _TRIANGLE_HALF[1])
    extent = (low + unit * (high - low)) * size
    turn = rng.integers(0, 4, (count, _SHAPES_PER_SCENE))
    digit_side = np.rint(rng.uniform(*_DIGIT_SIDE, count) * size).astype(int)
    digit_place = rng.uniform(0.0, 1.0, (count, 2))
    offset = rng.uniform(0.0, 12.0, (count, 2))  # texture phase of each scene
    noise_rng = np.random.default_rng([seed, 3])

    mnist, _ = _mnist5k()
    pixel = np.arange(size, dtype=np.float64) + 0.5
    x, y = pixel.reshape(1, 1, -1), pixel.reshape(1, -1, 1)
    units = (pixel * (32.0 / size)).astype(np.float32)
    maps = np.zeros((count, size, size), dtype=np.uint8)
    images = np.empty((count, 3, size, size), dtype=np.uint8)
    colours = SHAPE_COLOURS.astype(np.float32)
    ramp = (pixel / size).astype(np.float32).reshape(1, -1, 1)  # 0 at the top, 1 at the bottom
    for start in range(0, count, _CHUNK):
        rows = slice(start, min(start + _CHUNK, count))
        block = maps[rows]  # a view: drawing into it draws into maps
        for j in range(_SHAPES_PER_SCENE):
            mask = _shape_masks(kind[rows, j], centre[rows, j, 0], centre[rows, j, 1], extent[rows, j],
                                turn[rows, j], x, y)
            mask &= (n_shapes[rows] > j).reshape(-1, 1, 1)
            np.copyto(block, kind[rows, j].astype(np.uint8).reshape(-1, 1, 1), where=mask)
        for i in range(rows.start, rows.stop):
            _paste_digit(maps[i], mnist[digit_rows[i], 0], digit_side[i], *digit_place[i])
        tx = units.reshape(1, 1, -1) + offset[rows, 0].astype(np.float32).reshape(-1, 1, 1)
        ty = units.reshape(1, -1, 1) + offset[rows, 1].astype(np.float32).reshape(-1, 1, 1)
        shade = np.zeros(block.shape, dtype=np.float32)
        for k in (CIRCLE, SQUARE, DIGIT):
            shade = np.where(block == k, _texture(k, tx, ty), shade)
        background = block == BACKGROUND
        noise = noise_rng.standard_normal((block.shape[0], 3, size, size), dtype=np.float32)
        for c in range(3):
            # the background's vertical gradient, as an offset from its mean colour
            step = np.float32(_BACKGROUND_BOTTOM[c] - _BACKGROUND_TOP[c])
            gradient = np.where(background, (ramp - np.float32(0.5)) * step, np.float32(0.0))
            rgb = colours[:, c][block] + shade + gradient + noise[:, c] * np.float32(SHAPES_NOISE)
            images[rows, c] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    source = "shapes64" if size == 64 else "shapes"
    return RawImages(images, labels, list(DIGIT_CLASSES), source,
                     label_maps=maps, map_classes=list(MAP_CLASSES), train_count=train_count)
