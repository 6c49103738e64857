"""Evaluation speed: domain-extractor training, then scoring N generated against N real images.

    .venv/bin/python benchmarks/evaluation_speed.py [--prepared data/prepared] [--num-samples 5000]
    .venv/bin/python benchmarks/evaluation_speed.py --prdc-points 50000 [--dim 128]
    .venv/bin/python benchmarks/evaluation_speed.py --inception-images 50
    .venv/bin/python benchmarks/evaluation_speed.py --large 50000
    .venv/bin/python benchmarks/evaluation_speed.py --thread-allocator [--repeats 3]

The first form (mnist5k prepared into a temporary folder when --prepared holds
no prepared data) prints (1) the time to train the domain CNN on the prepared
data (into a fresh temporary cache, so it always trains) and its held-out
accuracy, (2) the time of ``evaluate_images`` for noise fakes with cold caches
(real features and the real-vs-real floor computed), (3) the same with the real
side cached, as when a second checkpoint is scored, and the process's peak RSS.
Target: extractor training + cold scoring of 5,000 vs 5,000 < 60 s.

``--prdc-points N`` instead times precision/recall/density/coverage of N random
fake against N random real features and prints the peak RSS: the chunked
distances must keep 50,000 x 50,000 far below the 20 GB a full matrix would take.
``--large N`` scores N generated against N real images end to end, as
``ganzoo evaluate`` does (features of both sides, FID with its bootstrap, KID,
precision/recall/density/coverage, the real-vs-real floor): the real set is the
bundled mnist5k shifted by up to 2 pixels into N distinct images (no download),
the "generated" set another N shifts; it prints the time and the process's peak
RSS (target < 4 GB at N = 50,000).
``--thread-allocator`` times cold scoring of 5,000 noise vs 5,000 real in a new
thread of a fresh process (as the flow's evaluate stage runs, in a Prefect worker
thread), with glibc's malloc defaults and after ``keep_freed_memory`` (which
``evaluate_checkpoint`` calls), interleaved, with the minor page faults of each.
``--repeats R`` repeats the cold and cached scoring R times after a warm-up.
``--inception-images N`` times FID Inception-v3 features of N 28 x 28 images
(random weights: the speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import threading
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import record, repeat, seconds, show, spread  # noqa: E402

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


def _peak_rss() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")
    return peak


def shifted(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` copies of ``images`` (uint8 N x C x H x W), each rolled by a random -2..2 pixels in x and y."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(images), count)
    shifts = rng.integers(-2, 3, (count, 2))
    out = np.empty((count, *images.shape[1:]), dtype=np.uint8)
    for i, (row, (dy, dx)) in enumerate(zip(rows, shifts)):
        out[i] = np.roll(images[row], (int(dy), int(dx)), axis=(1, 2))
    return out


def large_evaluation(count: int) -> None:
    """N vs N end to end: the real side prepared from shifted mnist5k, the fakes other shifts of it."""
    from components.data import prepare_dataset

    with tempfile.TemporaryDirectory() as root:
        prepare_dataset("mnist5k", f"{root}/small")
        small = load_prepared(f"{root}/small")
        np.savez(f"{root}/large.npz", images=shifted(small.images, count, 0), labels=np.zeros(count, np.int64))
        prepare_dataset(f"npz:{root}/large.npz", f"{root}/large")
        large = load_prepared(f"{root}/large")
        extractor = load_or_train_domain_extractor(small, small.data_hash(), f"{root}/cache", 3, 0)
        fakes = to_unit_range(shifted(small.images, count, 1))
        cfg = EvaluationConfig(num_samples=count)
        start = time.perf_counter()
        report = evaluate_images(fakes, None, large, extractor, cfg, large.data_hash())
        took = time.perf_counter() - start
        print(f"evaluate {count} vs {count} (features of both sides, every metric, the floor): {took:.1f} s")
        print("  " + ", ".join(f"{k}={report.metrics[k]:.4g}" for k in ("fid", "kid", "precision", "recall",
                                                                          "density", "coverage")))
    peak = _peak_rss()
    record("evaluation_large", {"count": count, "seconds": took, "peak_rss_mib": peak, "target_mib": 4096,
                                "met": peak < 4096,
                                "metrics": {k: report.metrics[k] for k in ("fid", "kid", "precision", "recall")}})


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


def thread_probe(keep: bool, prepared_dir: str, cache: str) -> tuple[float, float]:
    """One fresh process of ``--thread-allocator``: (seconds of a cold 5k vs 5k scoring, minor faults) in a thread."""
    from components.training.allocator import keep_freed_memory

    if keep and not keep_freed_memory():
        raise SystemExit("keep_freed_memory: this C library has no mallopt (not glibc)")
    prepared, cfg = load_prepared(prepared_dir), EvaluationConfig(num_samples=5000)
    version, out = prepared.data_hash(), {}

    def score() -> None:
        extractor = load_or_train_domain_extractor(prepared, version, cache, cfg.extractor_epochs, cfg.seed)
        noise = np.random.default_rng(1).uniform(-1, 1, (5000, *prepared.images.shape[1:])).astype(np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        took = seconds(lambda: evaluate_images(noise, None, prepared, extractor, cfg, version))
        out["result"] = (took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    thread = threading.Thread(target=score)
    thread.start()
    thread.join()
    return out["result"]


def thread_allocator(repeats: int) -> None:
    """Cold scoring in a thread of fresh processes, glibc's malloc defaults against ``keep_freed_memory``."""
    from components.data import prepare_dataset

    with tempfile.TemporaryDirectory() as root:
        prepare_dataset("mnist5k", f"{root}/prepared")
        prepared, cfg = load_prepared(f"{root}/prepared"), EvaluationConfig()
        # trained once here, so every probe loads the same extractor and times the scoring alone
        load_or_train_domain_extractor(prepared, prepared.data_hash(), f"{root}/cache", cfg.extractor_epochs, cfg.seed)

        def probe(keep: bool) -> tuple[float, float]:
            out = subprocess.run([sys.executable, __file__, "--thread-probe", "keep" if keep else "default",
                                  f"{root}/prepared", f"{root}/cache"], capture_output=True, text=True, check=True)
            return tuple(json.loads(out.stdout.strip().splitlines()[-1]))

        got = {"default": [], "keep": []}
        for _ in range(repeats):
            for key in got:
                got[key].append(probe(key == "keep"))
    took = {key: [t for t, _ in runs] for key, runs in got.items()}
    faults = {key: [f for _, f in runs] for key, runs in got.items()}
    ratio = statistics.median(took["keep"]) / statistics.median(took["default"])
    print(f"cold scoring of 5000 vs 5000 in a thread of a fresh process, median (min-max) of {repeats}:")
    print(f"  glibc defaults: {show(took['default'])} s, {show(faults['default'], 0)} minor page faults")
    print(f"  keep_freed_memory: {show(took['keep'])} s, {show(faults['keep'], 0)} minor page faults "
          f"({ratio:.2f} of the time)")
    record("evaluation_thread_allocator", {"repeats": repeats, "ratio": ratio,
                                           **{key: {"seconds": spread(took[key]), "page_faults": spread(faults[key])}
                                              for key in got}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--prdc-points", type=int, default=0)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--inception-images", type=int, default=0)
    parser.add_argument("--large", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--thread-allocator", action="store_true")
    parser.add_argument("--thread-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.thread_probe:
        keep, prepared_dir, cache = args.thread_probe
        print(json.dumps(thread_probe(keep == "keep", prepared_dir, cache)))
        return
    if args.thread_allocator:
        return thread_allocator(args.repeats)
    if args.large:
        return large_evaluation(args.large)
    if args.prdc_points:
        return prdc_memory(args.prdc_points, args.dim)
    if args.inception_images:
        return inception_speed(args.inception_images)

    with tempfile.TemporaryDirectory() as root:
        if not Path(args.prepared, "manifest.json").is_file():
            from components.data import prepare_dataset

            prepare_dataset("mnist5k", f"{root}/prepared")
            args.prepared = f"{root}/prepared"
        standard_evaluation(load_prepared(args.prepared), args.num_samples, args.repeats)


def standard_evaluation(prepared, n: int, repeats: int) -> None:
    """Extractor training, then N noise vs N real, cold (real side computed) and cached, ``repeats`` times each."""
    version = prepared.data_hash()
    cfg = EvaluationConfig(num_samples=n)
    print(f"data: {prepared.manifest['source']} {prepared.images.shape}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        extractor = load_or_train_domain_extractor(prepared, version, cache, cfg.extractor_epochs, cfg.seed)
        training_s = time.perf_counter() - start
        print(f"train domain extractor: {training_s:.1f} s, held-out accuracy {extractor.accuracy:.4f}")
    noise = np.random.default_rng(1).uniform(-1, 1, (n, *prepared.images.shape[1:])).astype(np.float32)

    def cold() -> float:
        evaluate_module.clear_real_cache()
        return seconds(lambda: evaluate_images(noise, None, prepared, extractor, cfg, version))

    cold_s = repeat(cold, repeats)
    cached_s = repeat(lambda: seconds(lambda: evaluate_images(noise, None, prepared, extractor, cfg, version)),
                      repeats)
    print(f"evaluate {n} noise vs {n} real, cold (real features and floor computed): {show(cold_s)} s")
    print(f"evaluate {n} noise vs {n} real, real side cached: {show(cached_s)} s")
    _show(evaluate_images(noise, None, prepared, extractor, cfg, version))
    peak = _peak_rss()
    total = training_s + statistics.median(cold_s)
    print(f"extractor training + cold scoring: {total:.1f} s (target < 60 s)")
    record("evaluation", {"num_samples": n, "repeats": repeats, "extractor_training_s": training_s,
                          "extractor_accuracy": extractor.accuracy, "cold_s": spread(cold_s),
                          "cached_s": spread(cached_s), "with_training_s": total, "peak_rss_mib": peak,
                          "target_s": 60, "met": total < 60})


if __name__ == "__main__":
    main()
