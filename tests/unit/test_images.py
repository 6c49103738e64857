"""Pure image utilities against small hand-checked arrays."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from components.data.images import from_unit_range, make_grid, resize_images, save_image_grid, to_unit_range

TWO_GREY = np.array([[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]], dtype=np.uint8)  # 2x1x2x2


def test_importing_the_data_layer_does_not_load_torch_or_s3fs():
    code = "import sys, components.data; print(sorted({'torch', 's3fs', 'sklearn'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_resize_down_is_the_mean_of_a_2x2_block():
    images = np.array([[[[0, 100], [200, 255]]]], dtype=np.uint8)
    # Bilinear 2->1 weighs the four pixels equally: (0 + 100 + 200 + 255) / 4 = 138.75.
    assert resize_images(images, 1).tolist() == [[[[139]]]]


def test_resize_up_keeps_corners_and_constant_images():
    images = np.array([[[[0, 100], [200, 255]]]], dtype=np.uint8)
    out = resize_images(images, 4)
    assert out.shape == (1, 1, 4, 4) and out.dtype == np.uint8
    assert [out[0, 0, 0, 0], out[0, 0, 0, 3], out[0, 0, 3, 0], out[0, 0, 3, 3]] == [0, 100, 200, 255]
    flat = np.full((3, 3, 5, 7), 42, dtype=np.uint8)
    assert (resize_images(flat, 6) == 42).all()


def test_resize_matches_pillow_rgb_per_image():
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 13, 9), dtype=np.uint8)
    expected = [
        np.asarray(Image.fromarray(im.transpose(1, 2, 0)).resize((7, 7), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
        for im in images
    ]
    np.testing.assert_array_equal(resize_images(images, 7), np.stack(expected))


def test_resize_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        resize_images(np.zeros((1, 1, 2, 2), dtype=np.float32), 4)


def test_unit_range_maps_ends_and_round_trips_numpy():
    values = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    scaled = to_unit_range(values)
    assert scaled.dtype == np.float32
    assert scaled.min() == -1.0 and scaled.max() == 1.0
    np.testing.assert_array_equal(from_unit_range(scaled), values)


def test_unit_range_round_trips_torch_and_keeps_the_kind():
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    scaled = to_unit_range(values)
    assert isinstance(scaled, torch.Tensor) and scaled.dtype == torch.float32
    back = from_unit_range(scaled)
    assert back.dtype == torch.uint8 and torch.equal(back, values)


def test_from_unit_range_clamps_and_rounds():
    out = from_unit_range(np.array([-3.0, -1.0, 0.0, 0.999, 1.0, 7.0]))
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 255, 255, 255]


def test_to_unit_range_rejects_float_numpy():
    with pytest.raises(ValueError, match="uint8"):
        to_unit_range(np.zeros(3, dtype=np.float32))


def test_grid_of_two_greyscale_images():
    grid = make_grid(TWO_GREY, padding=1)
    assert grid.shape == (4, 7, 1) and grid.dtype == np.uint8
    assert grid[:, :, 0].tolist() == [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 2, 0, 5, 6, 0],
        [0, 3, 4, 0, 7, 8, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]


def test_grid_one_per_row_and_default_padding():
    assert make_grid(TWO_GREY, nrow=1, padding=1).shape == (7, 4, 1)
    assert make_grid(TWO_GREY).shape == (6, 10, 1)  # pad, cell, pad by pad, cell, pad, cell, pad


def test_grid_is_square_ish_and_leaves_missing_cells_black():
    images = np.full((3, 3, 1, 1), 9, dtype=np.uint8)
    grid = make_grid(images, padding=0)
    assert grid.shape == (2, 2, 3)
    assert grid[1, 1].tolist() == [0, 0, 0] and grid[0, 0].tolist() == [9, 9, 9]


def test_grid_converts_float_input():
    images = np.array([[[[-1.0, 0.0], [1.0, 2.0]]]], dtype=np.float32)
    assert make_grid(images, padding=0)[:, :, 0].tolist() == [[0, 128], [255, 255]]


def test_grid_rejects_bad_channels():
    with pytest.raises(ValueError, match="C in"):
        make_grid(np.zeros((1, 2, 4, 4), dtype=np.uint8))


def test_save_grid_writes_png_atomically(tmp_path):
    path = save_image_grid(torch.tensor(TWO_GREY), tmp_path / "out" / "grid.png")
    with Image.open(path) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), make_grid(TWO_GREY)[:, :, 0])
    rgb = save_image_grid(np.zeros((4, 3, 5, 5), dtype=np.float32), tmp_path / "rgb.png", nrow=4)
    with Image.open(rgb) as img:
        assert img.mode == "RGB" and img.size == (4 * 7 + 2, 9)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["grid.png", "rgb.png"]


def test_save_grid_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image_grid(TWO_GREY, tmp_path / "grid.png")
    assert list(tmp_path.iterdir()) == []
