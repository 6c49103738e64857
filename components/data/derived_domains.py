"""Derived datasets for the unpaired and multi-domain translation families, built from the mnist5k digits.

The unpaired families (CycleGAN, UNIT, ...: A <-> B without pairs) and the
multi-domain families (StarGAN, ...: one generator, many domains or binary
attributes) need data that no bundled source has. These builders make it from
the 5,000 mnist5k digits, with no download, in the row order and held-out split
of ``derived.digit_split``:

- ``digits2colored``: grey digits (domain A) and coloured digits (domain B),
  the colour rendering of ``derived.colorize``; A and B are disjoint halves of
  the digits, so no A image has its B counterpart in the data and a model has
  to learn the translation without pairs, as with horse2zebra;
- ``digit_domains``: every digit in one ink colour (red, green or blue: the
  domain), thin or bold strokes and a dark or light background, the digit
  analogue of CelebA's hair colour / attribute labels.

Determinism follows ``derived``: every random choice comes from
``numpy.random.default_rng`` with a fixed seed, the morphology is integer
(a max filter on uint8), and each float step is an elementwise IEEE operation
rounded to uint8 at the end, so every call returns byte-identical arrays.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from components.data.derived import (
    _CHUNK,
    _STRIPE_DIRECTIONS,
    COLORIZE_BACKGROUND,
    COLORIZE_BACKGROUND_NOISE,
    COLORIZE_TEXTURE_AMPLITUDE,
    DIGIT_CLASSES,
    DIGIT_HELD_OUT,
    DIGIT_SEED,
    _hsv_palette,
    _mnist5k,
    _stratified_order,
    _triangle_wave,
    colorize,
    digit_split,
)
from components.data.sources import RawImages

UNPAIRED_DOMAINS = ["grey", "colored"]  # domain 0 = A, 1 = B
COLOUR_DOMAINS = ["red", "green", "blue"]
STROKES = ["thin", "bold"]
BACKGROUNDS = ["dark", "light"]
ATTRIBUTE_NAMES = ["red", "green", "blue", "bold", "light_background"]
# Hues 0, 120 and 240 degrees at colorize's saturation and value: (204, 31, 31),
# (31, 204, 31), (31, 31, 204). The colour channel tops out at 204, so the +-20%
# texture never clips, and each ink keeps its channel dominant on both backgrounds.
INK_COLOURS = _hsv_palette(3, saturation=0.85, value=0.8)
DARK_BACKGROUND = COLORIZE_BACKGROUND  # (16, 16, 20)
LIGHT_BACKGROUND = (228, 228, 224)  # near white, under the same faint noise; ink keeps its colour
# The soft threshold that binarises a digit and keeps its edge anti-aliased:
# grey <= 64 is background, >= 192 full ink, linear in between (alpha = 2 (g - 64)).
SOFT_LOW = 64
# Bold strokes: the digit's soft ink grown by this many pixels per 32 px of image
# (a max filter over a digital disk of that radius), 1 px at 32 and 2 px at 64, the same relative
# weight at every size. Thin strokes are mnist's own (2-3 px at 32 px): eroding
# them would break the thinner digits apart.
BOLD_GROWTH_PER_32 = 1
_COMBOS = [(colour, stroke, background) for background in range(2) for stroke in range(2) for colour in range(3)]


# -- the digits -----------------------------------------------------------------------------------


def digit_rows() -> np.ndarray:
    """The mnist5k row of each ``digit_split`` row (int64, 5000): its fixed stratified shuffle."""
    _, labels = _mnist5k()
    return _stratified_order(labels, DIGIT_HELD_OUT, np.random.default_rng([DIGIT_SEED, 0]))


def _class_cycle(labels: np.ndarray, part: slice, period: int, rng: np.random.Generator) -> np.ndarray:
    """0..period-1 for each row of ``part``, balanced within every class and over the part.

    Rows are ranked by class, in a random order within the class, and take
    their rank modulo ``period``: each class, and the part as a whole, holds
    every value equally often, to within one, and which row of a class gets
    which value is left to ``rng`` (ranking in row order instead would give
    rows that come early in their class the same few values).
    """
    part_labels = labels[part]
    ranked = np.lexsort((rng.permutation(len(part_labels)), part_labels))
    cycle = np.empty(len(ranked), dtype=np.int64)
    cycle[ranked] = np.arange(len(ranked)) % period
    return cycle


# -- digits2colored -------------------------------------------------------------------------------


def unpaired_split() -> tuple[np.ndarray, np.ndarray, int]:
    """(mnist5k row, domain, train_count) of each ``digits2colored`` row.

    The rows are ``digit_split``'s (4,500 train, the last 500 held out, each
    part stratified by class); within each part each class's digits go half to A,
    half to B (which ones: seeded), so the two domains split every class and
    every part in halves (2,250 + 250 rows each: 10% of each domain held out)
    and share no mnist image.
    """
    _, mnist_labels = _mnist5k()
    rows = digit_rows()
    labels, train_count = mnist_labels[rows], len(rows) - DIGIT_HELD_OUT
    rng = np.random.default_rng([DIGIT_SEED, 10])
    domains = np.concatenate([_class_cycle(labels, part, 2, rng)
                              for part in (slice(0, train_count), slice(train_count, len(labels)))])
    return rows, domains, train_count


def digits2colored(size: int = 32) -> RawImages:
    """Unpaired data: ``images`` are grey digits (domain 0, "grey") or coloured digits (1, "colored").

    Domain A is the grey digit replicated to 3 channels (R = G = B), so both
    domains have one image shape; domain B is ``colorize``'s rendering: ink in
    the class's palette colour under a +-20% stripe texture, on a dark
    background. Each mnist digit appears once, in one domain (``unpaired_split``),
    so no A image has its B version in the data. ``labels`` are the digit classes.
    """
    _, domains, train_count = unpaired_split()
    paired = colorize(size)
    grey = np.repeat(paired.inputs, 3, axis=1)
    images = np.where((domains == 0).reshape(-1, 1, 1, 1), grey, paired.images)
    return RawImages(images, paired.labels, list(DIGIT_CLASSES), "digits2colored", train_count=train_count,
                     domains=domains, domain_names=list(UNPAIRED_DOMAINS))


# -- digit_domains --------------------------------------------------------------------------------


def bold_footprint(size: int) -> np.ndarray:
    """The digital disk that grows a bold stroke: radius r = size / 32 (at least 1), the pixels with
    dx^2 + dy^2 <= r^2 (a 3 x 3 plus at r = 1, 13 pixels at r = 2). The 3 x 3 square grows the
    diagonals by 1.4 px too and at 32 px fills the loops of 8s and 6s; the plus keeps them open."""
    r = max(1, round(BOLD_GROWTH_PER_32 * size / 32))
    d = np.arange(-r, r + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= r * r


def stroke_alpha(grey: np.ndarray, bold: np.ndarray | bool) -> np.ndarray:
    """uint8 N x 1 x H x W grey digits -> uint8 N x H x W ink weights (255 = full ink), thin or bold.

    The digit is binarised with a soft threshold (``SOFT_LOW``: the stroke's
    core becomes full ink, its one-pixel anti-aliased edge a ramp); bold rows
    are then dilated by a max filter over ``bold_footprint`` (a grey dilation,
    so the soft edge moves out with the stroke). Exact integer arithmetic.
    """
    if grey.dtype != np.uint8 or grey.ndim != 4 or grey.shape[1] != 1:
        raise ValueError(f"stroke_alpha: expected uint8 N,1,H,W, got {grey.dtype} {grey.shape}")
    soft = np.clip((grey[:, 0].astype(np.int16) - SOFT_LOW) * 2, 0, 255).astype(np.uint8)
    bold = np.broadcast_to(np.asarray(bold, dtype=bool), (len(grey),))
    if bold.any():
        footprint = bold_footprint(grey.shape[-1])[None]
        soft[bold] = ndimage.grey_dilation(soft[bold], footprint=footprint, mode="constant", cval=0)
    return soft


def domain_attributes(labels: np.ndarray, train_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(colour, bold, light) of each row, int64: the 12 (colour, stroke, background) combinations
    balanced within each part and each digit class of it (to within one), seeded."""
    rng = np.random.default_rng([DIGIT_SEED, 11])
    combos = np.array(_COMBOS, dtype=np.int64)
    cycle = np.concatenate([_class_cycle(labels, part, len(combos), rng)
                            for part in (slice(0, train_count), slice(train_count, len(labels)))])
    chosen = combos[cycle]
    return chosen[:, 0], chosen[:, 1], chosen[:, 2]


def digit_domains(size: int = 32) -> RawImages:
    """Multi-domain data: each digit in one ink colour, thin or bold, on a dark or light background.

    ``domains`` is the ink colour (0 red, 1 green, 2 blue: ``INK_COLOURS``);
    ``attributes`` are [red, green, blue, bold, light_background] as 0/1, the
    colour one-hot, so attribute-conditioned families (StarGAN) and
    domain-conditioned ones see the same labels. Strokes: ``stroke_alpha``;
    backgrounds: ``DARK_BACKGROUND`` or ``LIGHT_BACKGROUND`` under faint noise;
    the ink carries colorize's +-20% stripe texture (direction, period and
    phase per row). Rows, labels and the 4,500 / 500 split are ``digit_split``'s,
    and every (colour, stroke, background) combination appears about equally
    often in each part and each digit class (``domain_attributes``).
    """
    grey, labels, train_count = digit_split(size)
    colour, bold, light = domain_attributes(labels, train_count)
    alpha = stroke_alpha(grey, bold.astype(bool))
    n = len(grey)
    rng = np.random.default_rng([DIGIT_SEED, 12])
    direction = _STRIPE_DIRECTIONS[rng.integers(0, len(_STRIPE_DIRECTIONS), n)]
    period = rng.uniform(0.15, 0.25, n) * size
    phase = rng.uniform(0.0, 1.0, n).astype(np.float32).reshape(-1, 1, 1)
    cx = (direction[:, 0] / period).astype(np.float32).reshape(-1, 1, 1)
    cy = (direction[:, 1] / period).astype(np.float32).reshape(-1, 1, 1)
    noise_rng = np.random.default_rng([DIGIT_SEED, 13])
    centre = np.arange(size, dtype=np.float32) + np.float32(0.5)
    x, y = centre.reshape(1, 1, -1), centre.reshape(1, -1, 1)
    inks = INK_COLOURS.astype(np.float32)
    backgrounds = np.array([DARK_BACKGROUND, LIGHT_BACKGROUND], dtype=np.float32)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        shade = np.float32(1) + np.float32(COLORIZE_TEXTURE_AMPLITUDE) * _triangle_wave(
            x * cx[rows] + y * cy[rows] + phase[rows])
        noise = noise_rng.standard_normal((shade.shape[0], size, size), dtype=np.float32)
        weight = alpha[rows].astype(np.float32) / np.float32(255)
        for c in range(3):
            back = backgrounds[light[rows], c].reshape(-1, 1, 1) + np.float32(COLORIZE_BACKGROUND_NOISE) * noise
            ink = inks[colour[rows], c].reshape(-1, 1, 1) * shade
            out[rows, c] = np.clip(np.rint(back + weight * (ink - back)), 0, 255).astype(np.uint8)
    attributes = np.zeros((n, len(ATTRIBUTE_NAMES)), dtype=np.uint8)
    attributes[np.arange(n), colour] = 1
    attributes[:, 3] = bold
    attributes[:, 4] = light
    return RawImages(out, labels, list(DIGIT_CLASSES), "digit_domains", train_count=train_count,
                     domains=colour.astype(np.int64), domain_names=list(COLOUR_DOMAINS),
                     attributes=attributes, attribute_names=list(ATTRIBUTE_NAMES))
