"""Paired, segmentation and exemplar metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.evaluation import metrics
from components.training.sampling import colour_label_maps, translation_grid


def test_l1_and_psnr_in_unit_intensities():
    targets = np.full((2, 1, 2, 2), -1.0)  # black
    outputs = targets.copy()
    outputs[0, 0, 0, 0] = 1.0  # one white pixel of 8: |1 - 0| in [0, 1] units
    assert metrics.mean_l1(outputs, targets) == pytest.approx(1 / 8)
    # image 0: MSE = 1/4 -> 10 log10(4) = 6.0206 dB; image 1 is exact -> capped at 100 dB
    assert metrics.psnr(outputs, targets) == pytest.approx((10 * math.log10(4) + 100) / 2)


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 3, 16, 16))
    assert metrics.ssim(images, images) == pytest.approx(1.0)
    assert metrics.ssim(images, rng.uniform(-1, 1, images.shape)) < 0.2


def test_ssim_of_constant_images_by_hand():
    # constant x = 0.5 and y = 0.25 (in [0, 1]): variances and covariance vanish, so
    # SSIM = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1) = (0.25 + 1e-4) / (0.3125 + 1e-4)
    x, y = np.zeros((1, 1, 11, 11)), np.full((1, 1, 11, 11), -0.5)
    assert metrics.ssim(x, y) == pytest.approx((0.25 + 1e-4) / (0.3125 + 1e-4), rel=1e-6)


def test_confusion_iou_and_pixel_accuracy_by_hand():
    expected = np.array([[0, 0], [1, 1]])
    predicted = np.array([[0, 1], [1, 1]])
    confusion = metrics.confusion_matrix(predicted, expected, 3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    # class 0: TP 1, union 2 -> 1/2; class 1: TP 2, union 3 -> 2/3; class 2 absent: not averaged
    assert metrics.mean_iou(confusion) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics.pixel_accuracy(confusion) == pytest.approx(3 / 4)


def test_style_agreement_and_feature_distance_by_hand():
    outputs = np.array([[1.0, 0.0], [0.0, 2.0]])
    exemplars = np.array([[2.0, 0.0], [1.0, 0.0]])
    assert metrics.style_agreement(outputs, exemplars) == pytest.approx((1.0 + 0.0) / 2)
    # distances 1 and sqrt(1 + 4), over sqrt(D = 2)
    assert metrics.mean_feature_distance(outputs, exemplars) == pytest.approx((1 + math.sqrt(5)) / 2 / math.sqrt(2))


def test_label_map_colours_are_fixed_and_distinct():
    maps = torch.arange(5).view(1, 1, 5).expand(1, 3, 5)
    colours = colour_label_maps(maps)
    assert colours.shape == (1, 3, 3, 5) and colours.min() >= -1 and colours.max() <= 1
    per_class = colours[0, :, 0].T
    assert torch.all(per_class[0] == -1)  # class 0 is black
    assert len({tuple(c.tolist()) for c in per_class}) == 5


class _Doubler:
    """A stand-in family: paired, outputs twice the (clamped) input."""

    translates = True

    def condition_of(self, batch):
        return batch.inputs

    def generate(self, n, condition):
        return (condition * 2).clamp(-1, 1).expand(-1, 3, -1, -1)


def test_translation_grid_rows_are_input_output_target():
    from components.families import ImageBatch

    inputs = torch.full((2, 1, 4, 4), 0.25)
    targets = torch.zeros(2, 3, 4, 4)
    grid, columns = translation_grid(_Doubler(), ImageBatch(targets, None, inputs))
    assert columns == 3 and grid.shape == (6, 3, 4, 4)
    assert torch.all(grid[0] == 0.25) and torch.all(grid[1] == 0.5) and torch.all(grid[2] == 0)
