"""Sample-quality metrics as pure functions of feature arrays (float64, N x D) and class probabilities.

No I/O and no networks here: the extractors turn images into features, these
functions turn features into numbers. Conventions follow the reference code of
each metric so figures stay comparable: FID uses the unbiased covariance
(ddof=1) as pytorch-fid does; KID's standard deviation is over subsets (ddof=0)
as in torch-fidelity; precision/recall/density/coverage use strict ``<`` against
k-NN radii as in Naeem et al.'s ``prdc``.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from scipy.special import xlogy

_BLOCK_BYTES = 1 << 27  # ~128 MB of float64 distances per block in the k-NN passes


# Fréchet Inception Distance


def _gaussian(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = _as_features(feats, "features")
    if len(feats) < 2:
        raise ValueError(f"FID needs at least 2 feature vectors per set, got {len(feats)}")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; tiny negative eigenvalues from round-off are clipped."""
    values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_product(sqrt_sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(sigma1 sigma2), as tr sqrt(S1^1/2 sigma2 S1^1/2): the same eigenvalues, but of a
    symmetric PSD matrix, so the result is real and needs no complex sqrtm or offset retries."""
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def _frechet(mu1: np.ndarray, sqrt_sigma1: np.ndarray, trace1: float, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    diff = mu1 - mu2
    value = diff @ diff + trace1 + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sqrt_sigma1, sigma2)
    return max(float(value), 0.0)  # round-off can dip just below 0 for identical sets


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"frechet_distance: shapes differ: mu {mu1.shape}/{mu2.shape}, "
                         f"sigma {sigma1.shape}/{sigma2.shape}")
    return _frechet(mu1, _psd_sqrt(sigma1), float(np.trace(sigma1)), mu2, sigma2)


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets (each N x D)."""
    return frechet_distance(*_gaussian(feats_a), *_gaussian(feats_b))


def fid_with_std(real_feats: np.ndarray, fake_feats: np.ndarray, bootstrap: int, seed: int) -> tuple[float, float]:
    """(FID, its standard deviation over ``bootstrap`` resamples of the fake set with replacement; 0 below 2).

    Only the fake set is resampled: it is what changes between two models scored
    against the same real set, so this is the noise a promotion gate must beat.
    """
    mu_r, sigma_r = _gaussian(real_feats)
    sqrt_r, trace_r = _psd_sqrt(sigma_r), float(np.trace(sigma_r))  # shared by every resample
    fake_feats = _as_features(fake_feats, "fake features")
    value = _frechet(mu_r, sqrt_r, trace_r, *_gaussian(fake_feats))
    if bootstrap < 2:
        return value, 0.0
    rng = np.random.default_rng(seed)
    resampled = [
        _frechet(mu_r, sqrt_r, trace_r, *_gaussian(fake_feats[rng.integers(0, len(fake_feats), len(fake_feats))]))
        for _ in range(bootstrap)
    ]
    return value, float(np.std(resampled, ddof=1))


# Kernel Inception Distance


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = len(x)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """(mean, std) over ``subsets`` random subsets of the unbiased MMD² with k(x, y) = (x·y/d + 1)³.

    Bińkowski et al., "Demystifying MMD GANs" (2018). Each subset draws without
    replacement; the subset size is clipped to the smaller set.
    """
    feats_a, feats_b = _as_features(feats_a, "features a"), _as_features(feats_b, "features b")
    _same_width(feats_a, feats_b)
    m = min(subset_size, len(feats_a), len(feats_b))
    if m < 2 or subsets < 1:
        raise ValueError(f"KID needs subset size >= 2 and >= 1 subset, got size {m} and {subsets} subsets")
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(feats_a[rng.choice(len(feats_a), m, replace=False)],
                       feats_b[rng.choice(len(feats_b), m, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


# Inception Score


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over contiguous splits of exp(E_x KL(p(y|x) || p(y))); p(y) is each split's mean."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"inception_score: expected N x K probabilities, got shape {probs.shape}")
    scores = []
    for part in np.array_split(probs, min(splits, len(probs))):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (xlogy(part, part) - xlogy(part, marginal)).sum(axis=1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# Precision, recall (Kynkäänniemi et al. 2019), density, coverage (Naeem et al. 2020)


def _blocks(points: torch.Tensor, n_cols: int, chunk: int | None) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, rows) of ``points`` in blocks of ``chunk`` rows (None: ~128 MB of distances each)."""
    rows = chunk if chunk is not None else max(1, _BLOCK_BYTES // (8 * max(n_cols, 1)))
    if rows < 1:
        raise ValueError(f"chunk must be a positive number of rows, got {chunk}")
    for start in range(0, len(points), rows):
        yield start, points[start:start + rows]


def knn_radii(feats: np.ndarray, k: int, chunk: int | None = None) -> np.ndarray:
    """Distance of each point to its k-th nearest other point of the same set, block by block."""
    points = torch.from_numpy(_as_features(feats, "features"))
    if not 1 <= k < len(points):
        raise ValueError(f"k-NN radii: need 1 <= k < number of points, got k={k} for {len(points)} points")
    radii = torch.empty(len(points), dtype=torch.float64)
    for start, block in _blocks(points, len(points), chunk):
        nearest = torch.cdist(block, points).topk(k + 1, dim=1, largest=False).values
        radii[start:start + len(block)] = nearest[:, k]  # k + 1 smallest: the point itself is at distance 0
    return radii.numpy()


def precision_recall_density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int | None = None
) -> dict[str, float]:
    """precision, recall, density and coverage of ``fake`` against ``real`` with k-NN balls.

    Distances are computed ``chunk`` rows at a time (None: ~128 MB blocks), so no
    N x M matrix is ever held: 50,000 x 50,000 needs a few hundred MB, not 20 GB.
    """
    real_np, fake_np = _as_features(real, "real features"), _as_features(fake, "fake features")
    _same_width(real_np, fake_np)
    real_radii = torch.from_numpy(knn_radii(real_np, k, chunk))
    fake_radii = torch.from_numpy(knn_radii(fake_np, k, chunk))
    real_t, fake_t = torch.from_numpy(real_np), torch.from_numpy(fake_np)

    inside_real_balls = torch.empty(len(fake_t), dtype=torch.float64)  # per fake: how many real balls hold it
    for start, block in _blocks(fake_t, len(real_t), chunk):
        inside_real_balls[start:start + len(block)] = (torch.cdist(block, real_t) < real_radii).sum(dim=1)

    recalled = torch.empty(len(real_t), dtype=torch.bool)  # per real: inside some fake ball
    covered = torch.empty(len(real_t), dtype=torch.bool)  # per real: a fake inside its own ball
    for start, block in _blocks(real_t, len(fake_t), chunk):
        distances = torch.cdist(block, fake_t)
        recalled[start:start + len(block)] = (distances < fake_radii).any(dim=1)
        covered[start:start + len(block)] = distances.min(dim=1).values < real_radii[start:start + len(block)]
    return {
        "precision": float((inside_real_balls > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(inside_real_balls.mean() / k),
        "coverage": float(covered.double().mean()),
    }


# Classes


def class_coverage(predicted_classes: np.ndarray, num_classes: int) -> tuple[int, float]:
    """(classes predicted at least once, entropy in nats of the predicted-class histogram).

    The entropy's maximum, for perfectly balanced samples, is log(num_classes).
    """
    predicted = np.asarray(predicted_classes)
    if predicted.ndim != 1 or len(predicted) == 0 or num_classes < 1:
        raise ValueError(f"class_coverage: expected a non-empty 1-D array and num_classes >= 1, "
                         f"got shape {predicted.shape} and {num_classes}")
    if predicted.min() < 0 or predicted.max() >= num_classes:
        raise ValueError(f"class_coverage: classes must lie in 0..{num_classes - 1}")
    counts = np.bincount(predicted, minlength=num_classes)
    shares = counts / counts.sum()
    return int((counts > 0).sum()), float(-xlogy(shares, shares).sum())


def conditional_accuracy(predicted: np.ndarray, requested: np.ndarray) -> float:
    """Share of samples whose predicted class is the class they were generated for."""
    predicted, requested = np.asarray(predicted), np.asarray(requested)
    if predicted.shape != requested.shape or predicted.ndim != 1 or len(predicted) == 0:
        raise ValueError(f"conditional_accuracy: shapes {predicted.shape} and {requested.shape}; "
                         "expected two equal non-empty 1-D arrays")
    return float((predicted == requested).mean())


def _as_features(feats: np.ndarray, what: str) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) == 0:
        raise ValueError(f"{what}: expected a non-empty N x D array, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{what}: contains NaN or infinity")
    return np.ascontiguousarray(feats)


def _same_width(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in width: {a.shape[1]} and {b.shape[1]}")


# Paired translation: agreement with the ground-truth target (images in [-1, 1], compared in [0, 1])


def _unit(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images, dtype=np.float64) + 1.0) / 2.0


def mean_l1(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error in [0, 1] intensity units."""
    return float(np.abs(_unit(outputs) - _unit(targets)).mean())


def psnr(outputs: np.ndarray, targets: np.ndarray, max_db: float = 100.0) -> float:
    """Mean over images of 10 log10(1 / MSE), intensities in [0, 1]; an exact match counts as ``max_db``."""
    mse = ((_unit(outputs) - _unit(targets)) ** 2).reshape(len(outputs), -1).mean(axis=1)
    per_image = np.where(mse > 0, 10 * np.log10(1.0 / np.maximum(mse, 1e-300)), max_db)
    return float(np.minimum(per_image, max_db).mean())


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return torch.outer(g, g)


def ssim(outputs: np.ndarray, targets: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004): 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1,
    valid positions only, each channel separately; the window shrinks (odd) for images smaller than 11 px."""
    x, y = (torch.from_numpy(_unit(a)) for a in (outputs, targets))
    n, c, h, w = x.shape
    size = min(window, h, w)
    size -= 1 - size % 2
    kernel = _gaussian_window(size, sigma).expand(c, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, kernel, groups=c)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


# Segmentation consistency: a segmenter's labelling of generated images against the input label maps


def confusion_matrix(predicted: np.ndarray, expected: np.ndarray, num_classes: int) -> np.ndarray:
    """K x K pixel counts, rows = expected class, columns = predicted class."""
    index = np.asarray(expected, dtype=np.int64).ravel() * num_classes + np.asarray(predicted, dtype=np.int64).ravel()
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean over classes present (expected or predicted) of TP / (TP + FP + FN)."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 0.0


def pixel_accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0


# Exemplar-guided translation: does the output take its exemplar's appearance, and do exemplars matter?


def _unit_rows(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def style_agreement(output_features: np.ndarray, exemplar_features: np.ndarray) -> float:
    """Mean cosine similarity between each output's features and its own exemplar's."""
    return float((_unit_rows(output_features) * _unit_rows(exemplar_features)).sum(axis=1).mean())


def mean_feature_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Mean Euclidean distance between paired rows, divided by sqrt(D): the LPIPS-style diversity of two
    outputs for the same input (0 when the exemplar or style code changes nothing)."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    return float(np.linalg.norm(first - second, axis=1).mean() / math.sqrt(first.shape[1]))
