"""Evaluation speed: domain-extractor training, then scoring N generated against N real images.

    .venv/bin/python benchmarks/evaluation_speed.py [--prepared data/prepared] [--num-samples 5000]

Prints (1) the time to train the domain CNN on the prepared data (into a fresh
temporary cache, so it always trains) and its held-out accuracy, (2) the time of
``evaluate_images`` for noise fakes with cold caches (real features and the
real-vs-real floor computed), (3) the same with the real side cached, as when a
second checkpoint is scored, (4) real images as fakes, a sanity check that the
metrics sit near the floor, and the process's peak RSS.
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


def _timed(label: str, run):
    start = time.perf_counter()
    result = run()
    print(f"{label}: {time.perf_counter() - start:.1f} s")
    return result


def _show(report) -> None:
    keys = ("fid", "fid_std", "fid_floor", "kid", "kid_floor", "precision", "recall", "density", "coverage",
            "inception_score", "classes_covered")
    print("  " + ", ".join(f"{k}={report.metrics[k]:.4g}" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--num-samples", type=int, default=5000)
    args = parser.parse_args()

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
    evaluate_module._real_cache.clear()
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
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
