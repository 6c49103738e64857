"""Family-specific evaluation (``Family.task_metrics``) on images whose class is their bright quadrant.

The networks under test are swapped for modules whose answer is known, so each
metric can be checked against its value by hand: a code that paints the quadrant
carries all the class information (NMI 1), an encoder that pools the quadrants
is linearly separable (probe accuracy 1).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from components.config import EvaluationConfig
from components.data import RawImages, load_prepared, write_prepared
from components.evaluation import evaluate as evaluate_module
from components.evaluation.evaluate import evaluate_checkpoint, real_split
from components.evaluation.extractors import FeatureExtractor
from components.families import DataSpec, RealSplit, build_family, get_family
from components.training.checkpoint import TrainingState, save_checkpoint

SPEC = DataSpec(channels=1, image_size=8, num_classes=4)


def quadrant_images(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """8 x 8 images in [-1, 1]: dark noise, the quadrant numbered by the label bright."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(len(labels), 1, 8, 8, generator=generator) * 0.4 - 1
    for image, label in zip(images, labels.tolist()):
        row, col = divmod(label, 2)
        image[0, 4 * row:4 * row + 4, 4 * col:4 * col + 4] += 1.5
    return images


def brightest_quadrant(images: torch.Tensor) -> torch.Tensor:
    return torch.softmax(50 * F.adaptive_avg_pool2d(images, 2).flatten(1), dim=1)


@pytest.fixture
def real() -> RealSplit:
    train_labels, test_labels = torch.arange(300) % 4, torch.arange(100) % 4
    return RealSplit(quadrant_images(train_labels, 0), train_labels, quadrant_images(test_labels, 1), test_labels,
                     brightest_quadrant)


class PaintCode(nn.Module):
    """A generator whose image is the quadrant of its categorical code (input: z, one-hot, continuous)."""

    def __init__(self, z_dim: int, categories: int):
        super().__init__()
        self.z_dim, self.categories = z_dim, categories

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return quadrant_images(latent[:, self.z_dim:self.z_dim + self.categories].argmax(1))


class PoolQuadrants(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images, 2).flatten(1)


def test_infogan_code_that_paints_the_class_has_nmi_one_and_an_ignored_code_zero(real):
    family = build_family("infogan", SPEC, {**get_family("infogan").tiny, "categories": 4})
    family.nets["G"] = PaintCode(family.config.z_dim, 4)
    assert family.task_metrics(real)["code_class_nmi"] == pytest.approx(1.0)
    family.nets["G"] = PaintCode(family.config.z_dim, 1)  # reads only the first code entry: always quadrant 0
    assert family.task_metrics(real)["code_class_nmi"] == pytest.approx(0.0, abs=1e-9)


def test_infogan_without_a_data_classifier_reports_only_its_continuous_codes(real):
    family = build_family("infogan", SPEC, get_family("infogan").tiny)
    scores = family.task_metrics(RealSplit(real.train_images, None, real.test_images, None, None), sweep_rows=4)
    assert set(scores) == {f"continuous_code_{kind}_{i}" for kind in ("monotonicity", "effect") for i in (0, 1)}


def test_bigan_probe_of_a_separating_encoder_is_perfect_and_reconstruction_is_the_mse(real):
    family = build_family("bigan", SPEC, get_family("bigan").tiny)  # tiny z_dim = 4: the pooled quadrants
    family.nets["E"] = PoolQuadrants()
    scores = family.task_metrics(real)
    assert scores["linear_probe_accuracy"] == pytest.approx(1.0)
    family.nets.eval()  # task_metrics scores in eval mode and then restores the training mode
    with torch.no_grad():
        expected = ((family.nets["G"](PoolQuadrants()(real.test_images)) - real.test_images) ** 2).mean().item()
    assert scores["reconstruction_mse"] == pytest.approx(expected, rel=1e-5)


def test_sgan_baseline_learns_from_the_labelled_images_and_d_is_scored_on_held_out_ones(real):
    torch.manual_seed(0)
    overrides = {**get_family("sgan").tiny, "labelled_per_class": 10, "baseline_steps": 60}
    family = build_family("sgan", SPEC, overrides)
    scores = family.task_metrics(real)
    assert scores["labelled_images"] == 40  # 10 of each of the 4 classes
    assert scores["supervised_baseline_accuracy"] >= 0.9  # the bright quadrant is easy to learn from 40 labels
    with torch.no_grad():
        predicted = family.nets["D"](real.test_images).flatten(1)[:, :-1].argmax(1)
    assert scores["classifier_accuracy"] == pytest.approx((predicted == real.test_labels).float().mean().item())


class QuadrantExtractor(FeatureExtractor):
    identity = "quadrant:0"
    num_classes = 4
    predicts_data_classes = True

    def __init__(self) -> None:
        super().__init__(nn.Identity())

    def _forward(self, images):
        return F.adaptive_avg_pool2d(images, 4).flatten(1), brightest_quadrant(images)


def test_real_split_is_the_extractors_held_out_split_and_reaches_task_metrics(tmp_path, monkeypatch):
    labels = np.arange(200) % 4
    images = ((quadrant_images(torch.from_numpy(labels)).numpy() + 1) * 127.5).round().astype(np.uint8)
    write_prepared(RawImages(images, labels, ["a", "b", "c", "d"], "test"), tmp_path / "prepared")
    prepared = load_prepared(tmp_path / "prepared")
    cfg = EvaluationConfig(num_samples=40, batch_size=64, kid_subsets=2, kid_subset_size=20, nearest_k=3,
                           fid_bootstrap=2, cache_dir=str(tmp_path / "cache"))
    split = real_split(prepared, QuadrantExtractor(), cfg)
    assert (len(split.train_images), len(split.test_images)) == (180, 20)
    assert torch.equal(split.classify(split.test_images).argmax(1), split.test_labels)

    torch.manual_seed(0)
    family = build_family("bigan", SPEC, get_family("bigan").tiny)
    save_checkpoint(tmp_path / "ckpt", family, family.build_optimizers(), TrainingState(step=1))
    monkeypatch.setattr(evaluate_module, "build_extractor", lambda *_: QuadrantExtractor())
    evaluate_module.clear_real_cache()
    report = evaluate_checkpoint(tmp_path / "ckpt", prepared, "v1", cfg)
    assert {"reconstruction_mse", "linear_probe_accuracy", "fid"} <= set(report.metrics)
