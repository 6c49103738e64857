"""A short DCGAN run on mnist5k moves its samples toward the data (2 Ray workers, CPU)."""

import numpy as np
import pytest
import torch

from components.families import DataSpec, build_family
from components.training.launcher import train_family
from components.training.sampling import sample_from_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def mean_image_distance(images: np.ndarray, real: np.ndarray) -> float:
    return float(np.abs(images.mean(axis=0) - real.mean(axis=0)).mean())


def pixel_std(images: np.ndarray) -> float:
    """Per-pixel standard deviation across samples, averaged over pixels: ~0 for a collapsed generator."""
    return float(images.std(axis=0).mean())


def test_dcgan_samples_approach_the_data(ray_cluster, mnist_prepared, make_params):
    params = make_params("train.steps=300", "train.checkpoint_every=300", "train.batch_size=64",
                         "train.report_every=50")
    real = mnist_prepared.images.astype(np.float32) / 127.5 - 1
    torch.manual_seed(params.train.seed)
    untrained = build_family("dcgan", DataSpec(1, 28, 10))
    untrained.nets.eval()
    with torch.no_grad():
        before = untrained.generate(1000).numpy()

    outcome = train_family(params, "dcgan", mnist_prepared, show_progress=False)
    assert outcome.ok, outcome.reason
    after, _ = sample_from_checkpoint(outcome.checkpoint, 1000)

    assert mean_image_distance(after, real) <= 0.5 * mean_image_distance(before, real)
    assert abs(pixel_std(after) - pixel_std(real)) <= 0.5 * pixel_std(real)
