"""Quality per CPU minute: the evaluator's FID after 1, 2 and 4 minutes of training wall time on mnist5k.

    .venv/bin/python benchmarks/quality_per_minute.py [--minutes 1,2,4] [--families dcgan,wgan_gp,cgan]
        [--variant wgan_gp:n_critic=2 ...] [--batch 64] [--seeds 1]

Each run trains one family from its defaults (or a ``--variant FAMILY:KEY=VALUE[,KEY=VALUE]``
of them; ``batch=N`` sets the batch size) in this process with 2 torch threads, running the
family's phases exactly as a trainer worker does (``run_iteration`` over a ``ShardSampler``
of the prepared data; the Ray trainer itself runs at 0.9-1.0 of this speed, see
trainer_overhead.py). The clock stops while the checkpoints are scored: at each mark the
generator draws ``evaluation.num_samples`` images (5,000) that the domain extractor scores
against as many real ones, as ``ganzoo evaluate`` does. ``--seeds N`` trains each
configuration N times, from seeds 0..N-1 (initial weights, latents and batch order), and
the table gives the median (min-max) FID at each mark; the iterations each mark reached
are the median over the seeds. In results.json, a run's ``points`` are the medians over
its seeds and ``seeds`` holds each seed's own points.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import record, show, table  # noqa: E402

from components.config import EvaluationConfig  # noqa: E402
from components.data import PreparedDataset, load_prepared, prepare_dataset  # noqa: E402
from components.evaluation import evaluate_images  # noqa: E402
from components.evaluation.extractors import build_extractor  # noqa: E402
from components.families import DataSpec, build_family, get_family  # noqa: E402
from components.training.loop import run_iteration  # noqa: E402
from components.training.sampler import ShardSampler  # noqa: E402
from components.training.sampling import sample_from_family  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, float | int]]:
    """``wgan_gp:n_critic=2,lr=2e-4`` -> ("wgan_gp", {"n_critic": 2, "lr": 0.0002})."""
    family, _, assignments = text.partition(":")
    values: dict[str, float | int] = {}
    for item in filter(None, assignments.split(",")):
        key, _, raw = item.partition("=")
        values[key] = int(raw) if raw.lstrip("-").isdigit() else float(raw)
    return family, values


def curve(family_name: str, changes: dict, prepared: PreparedDataset, extractor, cfg: EvaluationConfig,
          version: str, marks_s: list[float], default_batch: int, seed: int = 0) -> list[dict]:
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    changes = dict(changes)
    batch = int(changes.pop("batch", default_batch))
    spec = DataSpec(prepared.channels, prepared.image_size, prepared.num_classes)
    family = build_family(family_name, spec, changes)
    optimizers, phases, nets = family.build_optimizers(), family.phases(), dict(family.nets.items())
    sampler = ShardSampler(prepared.images, prepared.labels, 0, 1, batch, seed)
    points, trained_s, step = [], 0.0, 0
    for mark in marks_s:
        start = time.perf_counter()
        while trained_s + time.perf_counter() - start < mark:
            run_iteration(step, phases, nets, optimizers, sampler, torch.device("cpu"))
            step += 1
        trained_s += time.perf_counter() - start
        images, labels = sample_from_family(family, cfg.num_samples, cfg.seed, cfg.batch_size)
        family.nets.train()
        report = evaluate_images(images, labels, prepared, extractor, cfg, version)
        points.append({"minutes": mark / 60, "iterations": step, "fid": report.metrics["fid"],
                       "kid": report.metrics["kid"], "classes_covered": report.metrics.get("classes_covered")})
        print(f"  {family_name} {changes or ''} batch {batch} seed {seed}: {mark / 60:g} min, {step} iterations, "
              f"FID {report.metrics['fid']:.1f}", flush=True)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,2,4")
    parser.add_argument("--families", default="dcgan,wgan_gp,cgan")
    parser.add_argument("--variant", action="append", default=[], help="FAMILY:KEY=VALUE[,KEY=VALUE] (repeatable)")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the defaults (train.batch_size)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per configuration, from seeds 0..N-1")
    parser.add_argument("--section", default="quality_per_minute",
                        help="results.json section to write (another keeps an earlier run's curves)")
    args = parser.parse_args()
    marks = [float(m) * 60 for m in args.minutes.split(",")]
    runs = [(name, {}) for name in args.families.split(",") if name] + [parse_variant(v) for v in args.variant]
    for name, _ in runs:
        get_family(name)  # an unknown family fails before minutes of training
    cfg = EvaluationConfig()
    results, rows = [], []
    with tempfile.TemporaryDirectory() as root:
        prepare_dataset("mnist5k", f"{root}/prepared")
        prepared = load_prepared(f"{root}/prepared")
        version = prepared.data_hash()
        cfg = EvaluationConfig(cache_dir=f"{root}/cache")
        extractor = build_extractor(cfg, prepared, version)
        for name, changes in runs:
            per_seed = [curve(name, changes, prepared, extractor, cfg, version, marks, args.batch, seed)
                        for seed in range(args.seeds)]
            label = ", ".join(f"{k}={v:g}" for k, v in changes.items()) or "defaults"
            results.append({"family": name, "changes": changes, "points": median_points(per_seed),
                            "seeds": [{"seed": seed, "points": points} for seed, points in enumerate(per_seed)]})
            rows.append([name, label, *[mark_cell([points[i] for points in per_seed]) for i in range(len(marks))]])
    print(f"\nFID (domain extractor, {cfg.num_samples} vs {cfg.num_samples}) after minutes of training wall time, "
          f"mnist5k, 2 threads, {args.seeds} seed(s)" + (": median (min-max)" if args.seeds > 1 else ""))
    print(table(["family", "hyperparameters", *[f"{m / 60:g} min" for m in marks]], rows))
    record(args.section, {"minutes": [m / 60 for m in marks], "batch": args.batch, "seeds": args.seeds,
                          "runs": results})


def median_points(per_seed: list[list[dict]]) -> list[dict]:
    """Each mark's median over the seeds, of every figure it holds (a single seed: its own points)."""
    marks = zip(*per_seed)
    return [{key: statistics.median(p[key] for p in points) if points[0][key] is not None else None
             for key in points[0]} for points in marks]


def mark_cell(points: list[dict]) -> str:
    """One mark's FID over the seeds, ``median (min-max) (N it)``; a single seed as ``FID (N it)``."""
    iterations = int(statistics.median(p["iterations"] for p in points))
    fids = [p["fid"] for p in points]
    if len(fids) == 1:
        return f"{fids[0]:.1f} ({iterations} it)"
    return f"{show(fids, 1)} ({iterations} it)"


if __name__ == "__main__":
    main()
