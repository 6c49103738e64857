"""Reports, scoring of generated images, loss curves and sample grids.

Most tests use a pooling "extractor" (no training) on synthetic images whose
class is the bright quadrant, so scores can be reasoned about.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.config import EvaluationConfig
from components.data import RawImages, load_prepared, to_unit_range, write_prepared
from components.errors import DataError, GanzooError
from components.evaluation import evaluate as evaluate_module
from components.evaluation import (
    EvaluationReport,
    FeatureExtractor,
    evaluate_checkpoint,
    evaluate_images,
    write_loss_curves,
    write_sample_grid,
)
from components.families import DataSpec, build_family, get_family
from components.training.checkpoint import TrainingState, save_checkpoint

CFG = EvaluationConfig(num_samples=100, batch_size=64, kid_subsets=5, kid_subset_size=50, nearest_k=3,
                       fid_bootstrap=4)
METRICS = {"fid", "fid_std", "kid", "kid_std", "inception_score", "inception_score_std", "precision", "recall",
           "density", "coverage", "classes_covered", "class_entropy", "class_entropy_max", "fid_floor",
           "kid_floor"}


class QuadrantExtractor(FeatureExtractor):
    """Features: the image average-pooled to 4 x 4; class: the brightest quadrant."""

    identity = "quadrant:0"
    num_classes = 4
    predicts_data_classes = True

    def __init__(self) -> None:
        super().__init__(torch.nn.Identity())
        self.extracted = 0

    def _forward(self, images):
        self.extracted += len(images)
        return F.adaptive_avg_pool2d(images, 4).flatten(1), 50 * F.adaptive_avg_pool2d(images, 2).flatten(1)


def _quadrant_images(labels, seed):
    """8 x 8 grey images, dark with noise, the quadrant numbered by the label bright."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (len(labels), 1, 8, 8)).astype(np.uint8)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 2)
        image[0, 4 * row:4 * row + 4, 4 * col:4 * col + 4] += 180
    return images


@pytest.fixture(scope="module")
def quadrants(tmp_path_factory):
    labels = np.arange(400) % 4
    directory = tmp_path_factory.mktemp("quadrants") / "prepared"
    write_prepared(RawImages(_quadrant_images(labels, 0), labels, ["a", "b", "c", "d"], "test"), directory)
    return load_prepared(directory)


@pytest.fixture(autouse=True)
def cold_cache():
    evaluate_module.clear_real_cache()


def _fakes(labels, seed=1):
    return to_unit_range(_quadrant_images(labels, seed))


def test_real_like_fakes_score_near_the_floor(quadrants):
    labels = np.arange(100) % 4
    report = evaluate_images(_fakes(labels), labels, quadrants, QuadrantExtractor(), CFG, "v1")
    assert set(report.metrics) == METRICS | {"conditional_accuracy"}
    m = report.metrics
    assert m["fid"] < 3 * m["fid_floor"] + 0.05
    assert m["precision"] > 0.6 and m["recall"] > 0.6 and m["coverage"] > 0.6
    assert m["classes_covered"] == 4 and m["conditional_accuracy"] == 1.0
    assert m["inception_score"] == pytest.approx(4.0, rel=0.05)
    assert m["class_entropy"] == pytest.approx(math.log(4)) and m["class_entropy_max"] == pytest.approx(math.log(4))
    assert report.extractor == "quadrant:0" and report.extractor_accuracy is None
    assert report.protocol == {
        "extractor": "quadrant:0", "data_version": "v1", "num_samples": 100, "real_samples": 100,
        "floor_samples": 100, "seed": 0, "kid_subsets": 5, "kid_subset_size": 50, "nearest_k": 3,
        "fid_bootstrap": 4,
    }


def test_noise_scores_far_from_the_floor(quadrants):
    noise = np.random.default_rng(0).uniform(-1, 1, (100, 1, 8, 8)).astype(np.float32)
    m = evaluate_images(noise, None, quadrants, QuadrantExtractor(), CFG, "v1").metrics
    assert m["fid"] > 5 * (m["fid_floor"] + m["fid_std"])
    assert m["kid"] > 3 * abs(m["kid_floor"]) + 3 * m["kid_std"]
    assert m["precision"] < 0.1 and "conditional_accuracy" not in m


def test_one_class_fakes_cover_one_class(quadrants):
    m = evaluate_images(_fakes(np.full(60, 2)), None, quadrants, QuadrantExtractor(), CFG, "v1").metrics
    assert m["classes_covered"] == 1 and m["class_entropy"] == 0.0
    assert m["inception_score"] == pytest.approx(1.0, abs=0.01)
    assert m["coverage"] < 0.5  # three quarters of the real images have no fake near them


def test_conditional_accuracy_counts_wrong_classes(quadrants):
    drawn = np.arange(100) % 4
    asked = np.where(np.arange(100) < 25, (drawn + 1) % 4, drawn)  # a quarter asked for another class
    m = evaluate_images(_fakes(drawn), asked, quadrants, QuadrantExtractor(), CFG, "v1").metrics
    assert m["conditional_accuracy"] == pytest.approx(0.75)


def test_real_side_is_computed_once_per_protocol(quadrants):
    extractor = QuadrantExtractor()
    fakes = _fakes(np.arange(50) % 4)
    first = evaluate_images(fakes, None, quadrants, extractor, CFG, "v1")
    assert extractor.extracted == 200 + 50  # two disjoint real halves of 100, then the fakes
    second = evaluate_images(fakes, None, quadrants, extractor, CFG, "v1")
    assert extractor.extracted == 250 + 50
    assert second.metrics == first.metrics
    evaluate_images(fakes, None, quadrants, extractor, CFG, "v2")  # another data version: computed again
    assert extractor.extracted == 300 + 250


def test_small_data_floors_on_two_halves(quadrants):
    cfg = CFG.model_copy(update={"num_samples": 300})
    report = evaluate_images(_fakes(np.arange(300) % 4), None, quadrants, QuadrantExtractor(), cfg, "v1")
    assert report.protocol["real_samples"] == 300 and report.protocol["floor_samples"] == 200


def test_mismatched_fakes_are_refused_in_one_line(quadrants):
    with pytest.raises(DataError, match="3 channels; the real data has 1"):
        evaluate_images(np.zeros((10, 3, 8, 8), np.float32), None, quadrants, QuadrantExtractor(), CFG, "v1")
    with pytest.raises(DataError, match="nearest_k=3"):
        evaluate_images(np.zeros((3, 1, 8, 8), np.float32), None, quadrants, QuadrantExtractor(), CFG, "v1")
    with pytest.raises(DataError, match="NaN"):
        evaluate_images(np.full((10, 1, 8, 8), np.nan, np.float32), None, quadrants, QuadrantExtractor(), CFG, "v1")
    with pytest.raises(DataError, match="labels have shape"):
        evaluate_images(np.zeros((10, 1, 8, 8), np.float32), np.zeros(4), quadrants, QuadrantExtractor(), CFG, "v1")


def test_evaluate_checkpoint_of_a_conditional_family(quadrants, tmp_path):
    torch.manual_seed(0)
    family = build_family("cgan", DataSpec(1, 8, 4), get_family("cgan").tiny)
    save_checkpoint(tmp_path / "ckpt", family, family.build_optimizers(), TrainingState(step=1))
    cfg = CFG.model_copy(update={"num_samples": 40, "cache_dir": str(tmp_path / "cache"), "extractor_epochs": 1})
    report = evaluate_checkpoint(tmp_path / "ckpt", quadrants, "v1", cfg)
    assert report.extractor.startswith("domain-cnn:") and 0.0 <= report.extractor_accuracy <= 1.0
    assert set(report.metrics) == METRICS | {"conditional_accuracy"}
    assert all(math.isfinite(v) for v in report.metrics.values())
    assert report.protocol["num_samples"] == 40


# Reports and pictures


def test_report_json_round_trip_and_atomic_write(tmp_path):
    report = EvaluationReport({"fid": 1.5, "kid": 0.01}, "domain-cnn:abc", {"seed": 0, "data_version": "v"}, 0.98)
    assert EvaluationReport.from_json(report.to_json()) == report
    path = report.write(tmp_path / "out" / "report.json")
    assert EvaluationReport.read(path) == report
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]
    (tmp_path / "bad.json").write_text('{"metrics": {}}')
    with pytest.raises(GanzooError, match="bad.json: not a readable evaluation report"):
        EvaluationReport.read(tmp_path / "bad.json")


def test_loss_curves_png(tmp_path):
    history = [{"step": s, "d_loss": 1.0 / s, "g_loss": math.log(s), "images_per_s": 900.0} for s in range(1, 30)]
    history.append({"step": 30, "d_loss": float("nan"), "g_loss": 3.0, "note": "text is skipped"})
    path = write_loss_curves(history, tmp_path / "curves" / "losses.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["losses.png"]


def test_loss_curves_need_values(tmp_path):
    with pytest.raises(GanzooError, match="loss history is empty"):
        write_loss_curves([], tmp_path / "x.png")
    with pytest.raises(GanzooError, match="no numeric values"):
        write_loss_curves([{"step": 1, "images_per_s": 5.0}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_sample_grid_png(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32)
    assert write_sample_grid(images, tmp_path / "grid.png", nrow=3).read_bytes()[:4] == b"\x89PNG"


VARIANT_METRICS = METRICS - {"fid_floor", "kid_floor"}


def test_evaluate_checkpoint_scores_each_sample_variant_under_its_prefix(quadrants, tmp_path):
    torch.manual_seed(0)
    family = build_family("stylegan", DataSpec(1, 8), get_family("stylegan").tiny)
    save_checkpoint(tmp_path / "ckpt", family, family.build_optimizers(), TrainingState(step=1))
    cfg = CFG.model_copy(update={"num_samples": 40, "cache_dir": str(tmp_path / "cache"), "extractor_epochs": 1})
    report = evaluate_checkpoint(tmp_path / "ckpt", quadrants, "v1", cfg)
    variants = {f"{name}/{metric}" for name in ("psi_0.7", "style_mixed") for metric in VARIANT_METRICS}
    assert set(report.metrics) == METRICS | variants
    assert all(math.isfinite(v) for v in report.metrics.values())
    # the variants are drawn under the evaluation's seed: scoring them again by hand gives the same numbers
    torch.manual_seed(cfg.seed)
    family.nets.eval()
    again = family.sample_variants(40)["style_mixed"].numpy()
    extractor = evaluate_module.build_extractor(cfg, quadrants, "v1")
    by_hand = evaluate_images(again, None, quadrants, extractor, cfg, "v1").metrics
    assert {k: report.metrics[f"style_mixed/{k}"] for k in VARIANT_METRICS} == pytest.approx(
        {k: by_hand[k] for k in VARIANT_METRICS})
