"""Evaluation speed: domain-extractor training, then scoring N generated against N real images.

    .venv/bin/python benchmarks/evaluation_speed.py [--prepared data/prepared] [--num-samples 5000]
    .venv/bin/python benchmarks/evaluation_speed.py --prdc-points 50000 [--dim 128]
    .venv/bin/python benchmarks/evaluation_speed.py --inception-images 50

The first form prints (1) the time to train the domain CNN on the prepared data
(into a fresh temporary cache, so it always trains) and its held-out accuracy,
(2) the time of ``evaluate_images`` for noise fakes with cold caches (real
features and the real-vs-real floor computed), (3) the same with the real side
cached, as when a second checkpoint is scored, (4) N real images as fakes (with
mnist5k and N = 5000 these are the real set itself, so FID is 0: a check of the
plumbing, not a floor), and the process's peak RSS.

``--prdc-points N`` instead times precision/recall/density/coverage of N random
fake against N random real features and prints the peak RSS: the chunked
distances must keep 50,000 x 50,000 far below the 20 GB a full matrix would take.
``--inception-images N`` times FID Inception-v3 features of N 28 x 28 images
(random weights: the speed does not depend on them).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch

from components.config import EvaluationConfig
from components.data import load_prepared, to_unit_range
from components.evaluation import evaluate_images, load_or_train_domain_extractor
from components.evaluation import evaluate as evaluate_module
from components.evaluation import metrics
from components.evaluation.extractors import FIDInceptionV3, InceptionV3Extractor


def _timed(label: str, run):
    start = time.perf_counter()
    result = run()
    print(f"{label}: {time.perf_counter() - start:.1f} s")
    return result


def _show(report) -> None:
    keys = ("fid", "fid_std", "fid_floor", "kid", "kid_floor", "precision", "recall", "density", "coverage",
            "inception_score", "classes_covered")
    print("  " + ", ".join(f"{k}={report.metrics[k]:.4g}" for k in keys))


def _peak_rss() -> None:
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def prdc_memory(points: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(points, dim)), rng.normal(0.1, 1.0, size=(points, dim))
    result = _timed(f"precision/recall/density/coverage, {points} vs {points} x {dim}, k=5",
                    lambda: metrics.precision_recall_density_coverage(real, fake, k=5))
    print("  " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
    _peak_rss()


def inception_speed(count: int) -> None:
    extractor = InceptionV3Extractor(FIDInceptionV3(), "inception-v3:random")
    images = np.random.default_rng(0).uniform(-1, 1, (count, 1, 28, 28)).astype(np.float32)
    start = time.perf_counter()
    extractor.extract(images)
    seconds = time.perf_counter() - start
    print(f"inception-v3 features of {count} images: {seconds:.1f} s ({count / seconds:.1f} images/s)")
    _peak_rss()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--prdc-points", type=int, default=0)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--inception-images", type=int, default=0)
    args = parser.parse_args()
    if args.prdc_points:
        return prdc_memory(args.prdc_points, args.dim)
    if args.inception_images:
        return inception_speed(args.inception_images)

    prepared = load_prepared(args.prepared)
    version = prepared.data_hash()
    cfg = EvaluationConfig(num_samples=args.num_samples)
    print(f"data: {prepared.manifest['source']} {prepared.images.shape}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as cache:
        extractor = _timed("train domain extractor", lambda: load_or_train_domain_extractor(
            prepared, version, cache, cfg.extractor_epochs, cfg.seed))
        print(f"  held-out accuracy {extractor.accuracy:.4f}, identity {extractor.identity}")
        _timed("load cached domain extractor", lambda: load_or_train_domain_extractor(
            prepared, version, cache, cfg.extractor_epochs, cfg.seed))

    noise = np.random.default_rng(1).uniform(-1, 1, (args.num_samples, *prepared.images.shape[1:]))
    noise = noise.astype(np.float32)
    evaluate_module.clear_real_cache()
    n = args.num_samples
    report = _timed(f"evaluate {n} noise vs {n} real (cold: real side computed)",
                    lambda: evaluate_images(noise, None, prepared, extractor, cfg, version))
    _show(report)
    report = _timed(f"evaluate {n} noise vs {n} real (real side cached)",
                    lambda: evaluate_images(noise, None, prepared, extractor, cfg, version))
    _show(report)
    order = np.random.default_rng(2).permutation(len(prepared.images))[:n]
    real_as_fake = to_unit_range(prepared.images[order])
    report = _timed(f"evaluate {len(order)} real-as-fake vs {n} real (real side cached)",
                    lambda: evaluate_images(real_as_fake, None, prepared, extractor, cfg, version))
    _show(report)
    _peak_rss()


if __name__ == "__main__":
    main()
