"""Derived unpaired / multi-domain datasets (digits2colored, digit_domains): determinism, layout,
the split, and that each renders what its labels say."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from components.data import derived
from components.data.derived import PALETTE, colorize, digit_split
from components.data.derived_domains import (
    ATTRIBUTE_NAMES,
    COLOUR_DOMAINS,
    DARK_BACKGROUND,
    INK_COLOURS,
    LIGHT_BACKGROUND,
    UNPAIRED_DOMAINS,
    bold_footprint,
    digit_domains,
    digit_rows,
    digits2colored,
    domain_attributes,
    stroke_alpha,
    unpaired_split,
)
from components.data.images import resize_images

DIGITS = [str(d) for d in range(10)]
TRAIN = 4500


def _fingerprint(raw) -> list:
    arrays = (raw.images, raw.labels, raw.domains, raw.attributes)
    return [*(hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays if a is not None),
            raw.train_count, raw.source, raw.domain_names, raw.attribute_names]


@pytest.fixture(scope="module")
def unpaired():
    return digits2colored()


@pytest.fixture(scope="module")
def multi():
    return digit_domains()


@pytest.fixture(scope="module")
def grey32():
    return digit_split(32)[0]


# -- the digits -----------------------------------------------------------------------------------


def test_digit_rows_are_the_digit_split_order(grey32):
    rows = digit_rows()
    images, labels = derived._mnist5k()
    assert sorted(rows.tolist()) == list(range(5000))
    np.testing.assert_array_equal(resize_images(np.asarray(images)[rows], 32), grey32)
    np.testing.assert_array_equal(labels[rows], digit_split(32)[1])


# -- digits2colored -------------------------------------------------------------------------------


def test_digits2colored_layout(unpaired):
    assert unpaired.images.shape == (5000, 3, 32, 32) and unpaired.images.dtype == np.uint8
    assert unpaired.labels.dtype == np.int64 and unpaired.labels.shape == (5000,)
    assert unpaired.domains.dtype == np.int64 and set(np.unique(unpaired.domains).tolist()) == {0, 1}
    assert unpaired.domain_names == UNPAIRED_DOMAINS == ["grey", "colored"]
    assert unpaired.class_names == DIGITS and unpaired.source == "digits2colored"
    assert unpaired.task == "unpaired" and unpaired.train_count == TRAIN
    assert unpaired.inputs is None and unpaired.attributes is None and unpaired.label_maps is None


def test_digits2colored_domains_are_balanced_in_each_part_and_class(unpaired):
    d, k = unpaired.domains, unpaired.labels
    assert np.bincount(d).tolist() == [2500, 2500]
    assert np.bincount(d[:TRAIN]).tolist() == [2250, 2250]
    assert np.bincount(d[TRAIN:]).tolist() == [250, 250]  # 10% of each domain held out
    for part, per_class in ((slice(0, TRAIN), 225), (slice(TRAIN, None), 25)):
        counts = np.zeros((2, 10), dtype=int)
        np.add.at(counts, (d[part], k[part]), 1)
        assert (counts == per_class).all()
    assert 0 < d[:100].mean() < 1  # mixed from the first rows on


def test_digits2colored_domains_draw_disjoint_digits(unpaired):
    rows, domains, train_count = unpaired_split()
    np.testing.assert_array_equal(domains, unpaired.domains)
    assert train_count == unpaired.train_count
    a, b = set(rows[domains == 0].tolist()), set(rows[domains == 1].tolist())
    assert not a & b and len(a) == len(b) == 2500 and a | b == set(range(5000))
    images, labels = derived._mnist5k()
    np.testing.assert_array_equal(labels[rows], unpaired.labels)
    grey = resize_images(np.asarray(images)[rows[domains == 0]], 32)
    np.testing.assert_array_equal(unpaired.images[domains == 0, :1], grey)  # A is the mnist digit itself


def test_digits2colored_grey_and_coloured_domains(unpaired, grey32):
    a, b = unpaired.images[unpaired.domains == 0], unpaired.images[unpaired.domains == 1]
    assert (a[:, 0] == a[:, 1]).all() and (a[:, 1] == a[:, 2]).all()  # R = G = B
    spread = (b.max(axis=1).astype(int) - b.min(axis=1)).max(axis=(1, 2))
    assert (spread >= 100).all()  # every B image has clearly coloured pixels
    np.testing.assert_array_equal(b, colorize(32).images[unpaired.domains == 1])  # colorize's rendering
    # the ink colour of B follows the class (colorize's palette)
    solid = grey32[unpaired.domains == 1, 0] == 255
    pixels = b.transpose(0, 2, 3, 1)
    for k in range(10):
        ink = pixels[solid & (unpaired.labels[unpaired.domains == 1] == k)[:, None, None]].astype(float)
        np.testing.assert_allclose(ink.mean(axis=0), PALETTE[k], atol=6)


def test_digits2colored_is_deterministic_and_sized(unpaired):
    assert _fingerprint(digits2colored()) == _fingerprint(unpaired)
    big = digits2colored(64)
    assert big.images.shape == (5000, 3, 64, 64) and big.images.dtype == np.uint8
    np.testing.assert_array_equal(big.domains, unpaired.domains)
    np.testing.assert_array_equal(big.labels, unpaired.labels)
    a = big.images[big.domains == 0]
    assert (a[:, 0] == a[:, 2]).all() and big.train_count == TRAIN


# -- digit_domains --------------------------------------------------------------------------------


def test_digit_domains_layout(multi):
    assert multi.images.shape == (5000, 3, 32, 32) and multi.images.dtype == np.uint8
    assert multi.attributes.shape == (5000, 5) and multi.attributes.dtype == np.uint8
    assert multi.attribute_names == ATTRIBUTE_NAMES == ["red", "green", "blue", "bold", "light_background"]
    assert multi.domain_names == COLOUR_DOMAINS == ["red", "green", "blue"]
    assert multi.domains.dtype == np.int64 and multi.labels.dtype == np.int64
    assert multi.class_names == DIGITS and multi.source == "digit_domains"
    assert multi.task == "multi_domain" and multi.train_count == TRAIN
    assert multi.attribute_mask is None and multi.inputs is None
    np.testing.assert_array_equal(multi.labels, digit_split(32)[1])


def test_digit_domains_colour_is_one_hot_and_the_domain(multi):
    att = multi.attributes
    assert set(np.unique(att).tolist()) == {0, 1}
    assert (att[:, :3].sum(axis=1) == 1).all()
    np.testing.assert_array_equal(att[:, :3].argmax(axis=1), multi.domains)
    assert np.bincount(multi.domains).tolist() in ([1667, 1667, 1666], [1667, 1666, 1667], [1666, 1667, 1667])


def test_every_combination_appears_in_both_parts(multi):
    colour, bold, light = multi.domains, multi.attributes[:, 3], multi.attributes[:, 4]
    combo = colour * 4 + bold * 2 + light
    assert np.bincount(combo[:TRAIN], minlength=12).tolist() == [375] * 12
    held = np.bincount(combo[TRAIN:], minlength=12)
    assert held.min() >= 41 and held.max() <= 42 and held.sum() == 500
    assert np.bincount(multi.labels[TRAIN:]).tolist() == [50] * 10  # every digit held out
    for part in (slice(0, TRAIN), slice(TRAIN, None)):  # and every combination within every class, balanced
        counts = np.zeros((10, 12), dtype=int)
        np.add.at(counts, (multi.labels[part], combo[part]), 1)
        assert counts.max() - counts.min() <= 1 and counts.min() >= 4
    assert len(set(combo[:100].tolist())) == 12  # mixed from the first rows on


def test_domain_attributes_are_seeded_and_independent_of_row_order():
    labels = digit_split(32)[1]
    assert all(np.array_equal(x, y) for x, y in zip(domain_attributes(labels, TRAIN),
                                                     domain_attributes(labels, TRAIN)))
    colour, bold, _ = domain_attributes(labels, TRAIN)
    # neighbouring rows of a class do not get a fixed sequence of combinations
    first = [np.flatnonzero(labels == k)[:2] for k in range(10)]
    assert len({(int(colour[i]), int(bold[i])) for pair in first for i in pair}) > 3


def test_bold_footprint_grows_one_pixel_per_32():
    np.testing.assert_array_equal(bold_footprint(32), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert bold_footprint(64).shape == (5, 5) and bold_footprint(64).sum() == 13
    assert bold_footprint(16).shape == (3, 3)


def test_bold_strokes_cover_more_than_thin_and_thin_stays_visible(grey32):
    thin, bold = stroke_alpha(grey32, False), stroke_alpha(grey32, True)
    assert thin.shape == bold.shape == (5000, 32, 32) and thin.dtype == np.uint8
    assert (bold >= thin).all()  # a dilation
    thin_ink, bold_ink = (thin >= 128).sum(axis=(1, 2)), (bold >= 128).sum(axis=(1, 2))
    assert (bold_ink >= thin_ink + 20).all() and bold_ink.mean() > 1.3 * thin_ink.mean()
    assert thin_ink.min() >= 20 and (thin.max(axis=(1, 2)) == 255).all()  # thin (the mnist stroke) stays visible
    mixed = stroke_alpha(grey32[:4], np.array([False, True, False, True]))
    np.testing.assert_array_equal(mixed, np.stack([thin[0], bold[1], thin[2], bold[3]]))
    with pytest.raises(ValueError, match="N,1,H,W"):
        stroke_alpha(np.zeros((1, 3, 8, 8), dtype=np.uint8), False)


def test_ink_colour_and_stroke_follow_the_attributes(multi, grey32):
    bold, light = multi.attributes[:, 3].astype(bool), multi.attributes[:, 4].astype(bool)
    alpha = stroke_alpha(grey32, bold)
    solid = (alpha == 255)[:, None]
    pixels = multi.images.astype(np.float64)
    ink_mean = (pixels * solid).sum(axis=(2, 3)) / solid.sum(axis=(2, 3))
    np.testing.assert_array_equal(ink_mean.argmax(axis=1), multi.domains)  # the dominant channel
    for c in range(3):  # the ink is the palette colour under a zero-mean texture
        np.testing.assert_allclose(ink_mean[multi.domains == c].mean(axis=0), INK_COLOURS[c], atol=4)
    # Measured in the image, the ink area is that of the row's own stroke, not the other one.
    # A pixel is counted as ink when it is at least half-way from the background to the ink colour.
    background = np.where(light[:, None], np.array(LIGHT_BACKGROUND), np.array(DARK_BACKGROUND)).astype(float)
    contrast = np.abs(INK_COLOURS[multi.domains] - background).max(axis=1)
    distance = np.abs(pixels - background[:, :, None, None]).max(axis=1)
    measured = (distance >= 0.5 * contrast[:, None, None]).sum(axis=(1, 2))
    own = (alpha >= 128).sum(axis=(1, 2))
    other = (stroke_alpha(grey32, ~bold) >= 128).sum(axis=(1, 2))
    assert (np.abs(measured - own) < np.abs(measured - other)).all()


def test_light_background_rows_have_a_bright_border(multi):
    images = multi.images.astype(np.float64)
    border = np.concatenate([images[:, :, :2].reshape(5000, -1), images[:, :, -2:].reshape(5000, -1),
                             images[:, :, :, :2].reshape(5000, -1), images[:, :, :, -2:].reshape(5000, -1)], axis=1)
    light = multi.attributes[:, 4].astype(bool)
    assert border[light].mean(axis=1).min() > 200
    assert border[~light].mean(axis=1).max() < 40


def test_digit_domains_is_deterministic_and_sized(multi):
    assert _fingerprint(digit_domains()) == _fingerprint(multi)
    big = digit_domains(64)
    assert big.images.shape == (5000, 3, 64, 64) and big.images.dtype == np.uint8
    np.testing.assert_array_equal(big.attributes, multi.attributes)
    np.testing.assert_array_equal(big.domains, multi.domains)
    assert big.train_count == TRAIN
    alpha = stroke_alpha(digit_split(64)[0], big.attributes[:, 3].astype(bool))
    solid = (alpha == 255)[:, None]
    ink_mean = (big.images.astype(np.float64) * solid).sum(axis=(2, 3)) / solid.sum(axis=(2, 3))
    np.testing.assert_array_equal(ink_mean.argmax(axis=1), big.domains)
