"""Metrics on small synthetic features, checked against values worked out by hand."""

import math

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

from components.evaluation import metrics


def _gaussian(n, d=8, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, d))


# FID


def test_fid_of_identical_sets_is_zero():
    feats = _gaussian(500)
    assert metrics.fid(feats, feats) == pytest.approx(0.0, abs=1e-9)


def test_fid_of_real_against_noise_is_large():
    real = _gaussian(500)
    noise = np.random.default_rng(1).uniform(-10, 10, size=(500, 8))
    assert metrics.fid(real, noise) > 100 * metrics.fid(real, _gaussian(500, seed=2))


def test_fid_one_dimensional_by_hand():
    # a: mean 1, variance 2 (ddof=1); b: mean 3, variance 8
    # (1 - 3)² + 2 + 8 - 2·sqrt(2·8) = 4 + 10 - 8 = 6
    assert metrics.fid(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(6.0)


def test_frechet_distance_diagonal_by_hand():
    # |(1, 1)|² + (1 + 4) + (4 + 9) - 2·(sqrt(1·4) + sqrt(4·9)) = 2 + 18 - 16 = 4
    value = metrics.frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.ones(2), np.diag([4.0, 9.0]))
    assert value == pytest.approx(4.0)


def test_frechet_distance_matches_sqrtm_for_non_commuting_covariances():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_real_for_singular_covariances():
    # fewer samples than dimensions: both covariances are rank-deficient
    value = metrics.fid(_gaussian(5, d=20), _gaussian(5, d=20, seed=1))
    assert np.isfinite(value) and value > 0


def test_fid_with_std_bootstraps_the_fake_set():
    real, fake = _gaussian(400), _gaussian(400, shift=0.5, seed=1)
    value, std = metrics.fid_with_std(real, fake, bootstrap=10, seed=0)
    assert value == pytest.approx(metrics.fid(real, fake))
    assert 0 < std < value
    assert metrics.fid_with_std(real, fake, bootstrap=10, seed=0) == (value, std)  # seeded
    assert metrics.fid_with_std(real, fake, bootstrap=0, seed=0) == (value, 0.0)


# KID


def test_kid_by_hand():
    # d = 1, k(x, y) = (xy + 1)³; x = {0, 1}, y = {1, 2}
    # within x: k(0, 1) = 1; within y: k(1, 2) = 27; across: (1 + 1 + 8 + 27) / 4 = 9.25
    # MMD² = 1 + 27 - 2·9.25 = 9.5
    mean, std = metrics.kid(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]]), subsets=3, subset_size=2, seed=0)
    assert mean == pytest.approx(9.5)
    assert std == pytest.approx(0.0)


def test_kid_is_unbiased_for_the_same_distribution():
    mean, std = metrics.kid(_gaussian(1000), _gaussian(1000, seed=1), subsets=20, subset_size=200, seed=0)
    assert abs(mean) < 3 * std


def test_kid_is_large_for_shifted_distributions():
    same, same_std = metrics.kid(_gaussian(600), _gaussian(600, seed=1), subsets=10, subset_size=200, seed=0)
    shifted, _ = metrics.kid(_gaussian(600), _gaussian(600, shift=1.0, seed=1), subsets=10, subset_size=200, seed=0)
    assert shifted > 0.1 and shifted > 50 * max(abs(same), same_std)


def test_kid_clips_the_subset_size_to_the_smaller_set():
    mean, _ = metrics.kid(_gaussian(30), _gaussian(10, seed=1), subsets=2, subset_size=1000, seed=0)
    assert np.isfinite(mean)


# Inception Score


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = metrics.inception_score(np.full((100, 10), 0.1), splits=10)
    assert mean == pytest.approx(1.0)
    assert std == pytest.approx(0.0)


def test_inception_score_of_confident_balanced_predictions_is_k():
    k = 7
    probs = np.eye(k)[np.tile(np.arange(k), 50)]  # each contiguous split of 35 holds every class 5 times
    mean, std = metrics.inception_score(probs, splits=10)
    assert mean == pytest.approx(k)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_one_confident_class_is_one():
    assert metrics.inception_score(np.eye(4)[np.zeros(40, dtype=int)])[0] == pytest.approx(1.0)


# Precision, recall, density, coverage

# Real points on a line with k = 1: (0, 1) and (10, 11) are pairs with radius 1; (100) is
# alone with radius 89 (to 11). Fakes at -0.5, 10.2 and 5 have radii 5.5, 5.2 and 5.2.
REAL = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0], [100.0, 0.0]])
FAKE = np.array([[-0.5, 0.0], [10.2, 0.0], [5.0, 0.0]])


def test_precision_recall_density_coverage_by_hand():
    result = metrics.precision_recall_density_coverage(REAL, FAKE, k=1)
    # precision: -0.5 lies in 0's ball and 10.2 in 10's; 5 lies in no ball (95 > 89 from 100)
    assert result["precision"] == pytest.approx(2 / 3)
    # recall: 0 and 1 lie in -0.5's ball (5.5), 10 and 11 in 10.2's; 100 is 89.8 from 10.2 > 5.2
    assert result["recall"] == pytest.approx(4 / 5)
    # density: -0.5 is in 1 real ball (0's; 1.5 from 1), 10.2 in 2 (10's, 11's), 5 in none: 3 / (k·3)
    assert result["density"] == pytest.approx(1.0)
    # coverage: 0 (0.5 < 1), 10 (0.2) and 11 (0.8) have a fake inside their ball; 1 (1.5) and 100 do not
    assert result["coverage"] == pytest.approx(3 / 5)


def test_prdc_of_a_set_with_itself_is_perfect():
    feats = _gaussian(200)
    result = metrics.precision_recall_density_coverage(feats, feats.copy(), k=3)
    assert result["precision"] == result["recall"] == result["coverage"] == 1.0
    assert result["density"] >= 1.0


def test_knn_radii_match_brute_force():
    feats = _gaussian(50)
    distances = cdist(feats, feats)
    expected = np.sort(distances, axis=1)[:, 3]  # column 0 is the point itself
    np.testing.assert_allclose(metrics.knn_radii(feats, k=3, chunk=7), expected, rtol=1e-10)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_prdc_equals_unchunked(chunk):
    real, fake = _gaussian(150, d=4), _gaussian(120, d=4, shift=0.3, seed=1)
    whole = metrics.precision_recall_density_coverage(real, fake, k=5, chunk=10_000)
    assert metrics.precision_recall_density_coverage(real, fake, k=5, chunk=chunk) == whole
    assert metrics.precision_recall_density_coverage(real, fake, k=5) == whole


def test_prdc_needs_more_points_than_k():
    with pytest.raises(ValueError, match="k="):
        metrics.precision_recall_density_coverage(_gaussian(5), _gaussian(5), k=5)


# Classes


def test_one_class_covers_one_class_with_zero_entropy():
    assert metrics.class_coverage(np.full(100, 3), num_classes=10) == (1, 0.0)


def test_balanced_classes_reach_the_maximum_entropy():
    covered, entropy = metrics.class_coverage(np.arange(40) % 4, num_classes=10)
    assert covered == 4
    assert entropy == pytest.approx(math.log(4))


def test_class_coverage_rejects_out_of_range_classes():
    with pytest.raises(ValueError, match="0..9"):
        metrics.class_coverage(np.array([0, 10]), num_classes=10)


def test_conditional_accuracy():
    assert metrics.conditional_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0])) == 0.75


def test_mismatched_widths_are_refused():
    with pytest.raises(ValueError, match="width"):
        metrics.kid(_gaussian(10, d=3), _gaussian(10, d=4), subsets=1, subset_size=5, seed=0)
