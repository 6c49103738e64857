"""Derived datasets (edges2digits, colorize, shapes): determinism, layout, and that each renders what it says."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from components.data import derived
from components.data.derived import (
    COLORIZE_BACKGROUND,
    MAP_CLASSES,
    PALETTE,
    SHAPE_COLOURS,
    colorize,
    digit_split,
    edge_map,
    edges2digits,
    shapes,
)
from components.data.images import resize_images

DIGITS = [str(d) for d in range(10)]


def _sha(*arrays: np.ndarray | None) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays if a is not None]


def _fingerprint(raw) -> list:
    return [*_sha(raw.images, raw.inputs, raw.label_maps, raw.labels), raw.train_count, raw.source]


@pytest.fixture(scope="module")
def edges():
    return edges2digits()


@pytest.fixture(scope="module")
def colour():
    return colorize()


@pytest.fixture(scope="module")
def scenes():
    return shapes(count=200)


# -- edge_map -------------------------------------------------------------------------------------


def test_edge_map_of_a_square_is_the_ring_just_outside_it():
    image = np.zeros((1, 1, 9, 9), dtype=np.uint8)
    image[0, 0, 2:7, 2:7] = 200  # a 5 x 5 square of ink
    image[0, 0, 2, 2] = 128  # mid grey is ink
    expected = np.zeros((9, 9), dtype=np.uint8)
    expected[1:8, 1:8] = 255  # the 3 x 3 dilation: rows and columns 1..7
    expected[2:7, 2:7] = 0  # minus the ink
    out = edge_map(image)
    assert out.shape == (1, 1, 9, 9) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], expected)


def test_edge_map_ignores_ink_below_mid_grey_and_clips_at_the_border():
    image = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    image[0] = 127  # all below mid grey: no ink, no edges
    image[1, 0, 0, 0] = 255  # a corner pixel: its ring is cut by the border
    out = edge_map(image)
    assert not out[0].any()
    np.testing.assert_array_equal(out[1, 0, :2, :2], [[0, 255], [255, 255]])
    assert out[1, 0].sum() == 3 * 255


def test_edge_map_rejects_colour_and_floats():
    with pytest.raises(ValueError, match="N,1,H,W"):
        edge_map(np.zeros((1, 3, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="N,1,H,W"):
        edge_map(np.zeros((1, 1, 4, 4), dtype=np.float32))


# -- the digit split ------------------------------------------------------------------------------


def test_digit_split_is_a_stratified_shuffle_of_mnist5k():
    images, labels, train_count = digit_split()
    raw, raw_labels = derived._mnist5k()
    assert train_count == 4500
    assert np.bincount(labels[train_count:]).tolist() == [50] * 10  # every class held out
    assert np.bincount(labels[:train_count]).tolist() == [450] * 10
    assert len(set(labels[:100].tolist())) == 10  # mixed from the first rows on, not grouped by class
    resized = resize_images(np.asarray(raw), 32)
    by_pixels = {(row.tobytes(), int(k)) for row, k in zip(resized, raw_labels)}
    assert {(row.tobytes(), int(k)) for row, k in zip(images, labels)} == by_pixels  # same digits, same labels


# -- edges2digits ---------------------------------------------------------------------------------


def test_edges2digits_layout(edges):
    assert edges.images.shape == edges.inputs.shape == (5000, 1, 32, 32)
    assert edges.images.dtype == edges.inputs.dtype == np.uint8
    assert edges.labels.dtype == np.int64 and edges.labels.shape == (5000,)
    assert edges.class_names == DIGITS and edges.source == "edges2digits" and edges.task == "paired"
    assert edges.train_count == 4500 and edges.label_maps is None
    np.testing.assert_array_equal(edges.images, digit_split()[0])
    np.testing.assert_array_equal(edges.inputs, edge_map(edges.images))
    assert set(np.unique(edges.inputs).tolist()) == {0, 255}
    assert not (edges.inputs[:, 0].astype(bool) & (edges.images[:, 0] >= 128)).any()  # edges lie off the ink


def test_edges2digits_is_deterministic_and_resizes(edges):
    assert _fingerprint(edges2digits()) == _fingerprint(edges)
    big = edges2digits(size=20)
    assert big.images.shape == big.inputs.shape == (5000, 1, 20, 20) and big.source == "edges2digits"


# -- colorize -------------------------------------------------------------------------------------


def test_colorize_layout_and_grey_input(colour, edges):
    assert colour.images.shape == (5000, 3, 32, 32) and colour.images.dtype == np.uint8
    assert colour.inputs.shape == (5000, 1, 32, 32) and colour.inputs.dtype == np.uint8
    assert colour.source == "colorize" and colour.task == "paired" and colour.train_count == 4500
    assert colour.class_names == DIGITS
    np.testing.assert_array_equal(colour.inputs, edges.images)  # the grey digit, in the same row order
    np.testing.assert_array_equal(colour.labels, edges.labels)


def test_colorize_ink_is_the_class_palette_colour_and_textured(colour):
    pixels = colour.images.transpose(0, 2, 3, 1)
    solid = colour.inputs[:, 0] == 255
    for k in range(10):
        ink = pixels[solid & (colour.labels == k)[:, None, None]].astype(np.float64)
        assert len(ink) > 300
        np.testing.assert_allclose(ink.mean(axis=0), PALETTE[k], atol=3)
        brightest = int(np.argmax(PALETTE[k]))
        assert ink[:, brightest].std() > 0.08 * PALETTE[k, brightest]  # the +-20% texture is there
    background = pixels[colour.inputs[:, 0] == 0].astype(np.float64)
    np.testing.assert_allclose(background.mean(axis=0), COLORIZE_BACKGROUND, atol=1)
    assert 1 < background.std(axis=0).min() < 6  # faint noise


def test_palette_colours_are_distinct():
    gaps = np.abs(PALETTE[:, None].astype(int) - PALETTE[None].astype(int)).sum(axis=2)
    assert gaps[~np.eye(10, dtype=bool)].min() >= 60
    assert PALETTE.max() * 1.2 <= 255  # textured ink never clips


def test_colorize_is_deterministic(colour):
    assert _fingerprint(colorize()) == _fingerprint(colour)


# -- shapes ---------------------------------------------------------------------------------------


def _check_scenes(raw, count: int, size: int) -> None:
    assert raw.images.shape == (count, 3, size, size) and raw.images.dtype == np.uint8
    assert raw.label_maps.shape == (count, size, size) and raw.label_maps.dtype == np.uint8
    assert raw.labels.shape == (count,) and raw.labels.dtype == np.int64
    assert raw.map_classes == MAP_CLASSES and raw.class_names == DIGITS
    assert raw.task == "segmentation" and raw.inputs is None
    assert raw.train_count == int(0.9 * count)
    maps = raw.label_maps
    assert maps.max() < len(MAP_CLASSES)
    assert set(np.unique(maps).tolist()) == set(range(len(MAP_CLASSES)))  # every class appears
    assert (maps == 0).any(axis=(1, 2)).all()  # every scene has background ...
    assert ((maps == 4).sum(axis=(1, 2)) >= size // 4).all()  # ... and a digit region
    # The rendering follows the label map: each class has its own mean colour, and the
    # nearest class colour of a pixel is (almost always) the class drawn there.
    pixels = raw.images.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    classes = maps.ravel()
    for k in range(len(MAP_CLASSES)):
        np.testing.assert_allclose(pixels[classes == k].mean(axis=0), SHAPE_COLOURS[k], atol=6)
    distance = ((pixels[:, None, :] - SHAPE_COLOURS[None].astype(np.float64)) ** 2).sum(axis=2)
    assert (distance.argmin(axis=1) == classes).mean() > 0.99


def test_shapes_layout_and_rendering(scenes):
    _check_scenes(scenes, 200, 32)
    assert scenes.source == "shapes"
    train = scenes.train_count
    assert np.bincount(scenes.labels[:train]).tolist() == [18] * 10  # digit classes balanced in each part
    assert np.bincount(scenes.labels[train:]).tolist() == [2] * 10


def test_shapes_at_64_px():
    raw = shapes(size=64, count=40)
    _check_scenes(raw, 40, 64)
    assert raw.source == "shapes64"


def test_shapes_is_deterministic_and_seeded(scenes):
    assert _fingerprint(shapes(count=200)) == _fingerprint(scenes)
    other = shapes(count=200, seed=1)
    assert _sha(other.images)[0] != _sha(scenes.images)[0]
    assert _sha(other.label_maps)[0] != _sha(scenes.label_maps)[0]


def test_held_out_scenes_paste_only_held_out_digits():
    labels, rows = derived._scene_digits(100, 90, np.random.default_rng(0))
    _, mnist_labels = derived._mnist5k()
    order = derived._stratified_order(mnist_labels, derived.DIGIT_HELD_OUT,
                                      np.random.default_rng([derived.DIGIT_SEED, 0]))
    held = set(order[-derived.DIGIT_HELD_OUT:].tolist())
    assert all(r not in held for r in rows[:90]) and all(r in held for r in rows[90:])
    np.testing.assert_array_equal(mnist_labels[rows], labels)  # each scene pastes a digit of its label
