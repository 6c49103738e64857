"""Training speed by precision and memory format: images/s of dcgan and stylegan at 64x64, fp32 vs bf16.

Each configuration (precision x channels_last off/on) is the trainer's own
loop (``run_iteration`` with its ``Precision`` helper, networks from
``wrap_for_data_parallel``) on one process, without Ray: these settings change
the arithmetic, not the distribution, so the plain loop isolates them. Data
are random 3-channel 64x64 images (the speed of a step does not depend on what
the pixels show). On CUDA when available, else on CPU, where bf16 is usually
slower (no bf16 tensor cores): the CPU figures only show that the path runs.

    .venv/bin/python benchmarks/precision.py [--families dcgan,stylegan] [--precisions fp32,bf16]
        [--steps 20] [--repeats 5] [--batch 64] [--threads 2] [--results benchmarks/results.json]

Every configuration times ``--steps`` iterations ``--repeats`` times after one
warm-up run (which also pays cuDNN/oneDNN's first-call set-up); the table gives
median (min-max) images/s, counting real images drawn (n_critic batches
included), and each one's ratio to fp32 without channels_last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, record, repeat, show, spread, table  # noqa: E402

from components.families import DataSpec, build_family  # noqa: E402
from components.training.loop import AUTOCAST_DTYPES, Precision, run_iteration, wrap_for_data_parallel  # noqa: E402
from components.training.sampler import ShardSampler  # noqa: E402

SPEC = DataSpec(channels=3, image_size=64, num_classes=0)
DATA_ROWS = 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_for(name: str, device: torch.device, precision: str, channels_last: bool, batch: int,
                steps: int) -> Callable[[], float]:
    """A measure: ``steps`` iterations of the loop, returning images/s; the networks keep training across calls."""
    torch.manual_seed(0)
    family = build_family(name, SPEC)
    optimizers = family.build_optimizers()
    nets = wrap_for_data_parallel(family, device, 1, channels_last)
    shape = (DATA_ROWS, SPEC.channels, SPEC.image_size, SPEC.image_size)
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    sampler = ShardSampler(images, None, 0, 1, batch, seed=0)
    phases, mode = family.phases(), Precision(precision, device)
    step = 0

    def measure() -> float:
        nonlocal step
        synchronize(device)
        drawn, start = 0, time.perf_counter()
        for _ in range(steps):
            _, n = run_iteration(step, phases, nets, optimizers, sampler, device, mode, channels_last)
            drawn, step = drawn + n, step + 1
        synchronize(device)
        return drawn / (time.perf_counter() - start)

    return measure


def label(precision: str, channels_last: bool) -> str:
    return f"{precision}{' channels_last' if channels_last else ''}"


def benchmark(name: str, device: torch.device, precisions: list[str], batch: int, steps: int,
              runs: int) -> tuple[dict, list[list[str]]]:
    got: dict[str, list[float]] = {}
    for precision in precisions:
        for channels_last in (False, True):
            key = label(precision, channels_last)
            got[key] = repeat(trainer_for(name, device, precision, channels_last, batch, steps), runs)
            print(f"  {name} {key}: {show(got[key], 1)} images/s", flush=True)
    base = statistics.median(got[label(precisions[0], False)])
    result = {key: {**spread(values), "ratio": statistics.median(values) / base} for key, values in got.items()}
    rows = [[name, key, show(values, 1), f"{statistics.median(values) / base:.2f}"] for key, values in got.items()]
    return result, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="dcgan,stylegan")
    parser.add_argument("--precisions", default="fp32,bf16", help="the first is the baseline of the ratios")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch's CPU threads (CPU runs)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results.json to merge the section into")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    unknown = [p for p in precisions if p not in AUTOCAST_DTYPES]
    if unknown:
        parser.error(f"--precisions: unknown {', '.join(unknown)}; known: {', '.join(AUTOCAST_DTYPES)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    families, rows = {}, []
    for name in args.families.split(","):
        families[name], found = benchmark(name, device, precisions, args.batch, args.steps, args.repeats)
        rows += found
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"\nTraining speed at {SPEC.image_size}x{SPEC.image_size}x{SPEC.channels}, batch {args.batch}, {where}: "
          f"{args.steps} steps, median (min-max) of {args.repeats} after a warm-up, images/s")
    print(table(["family", "precision", "images/s", f"÷ {precisions[0]}"], rows))
    record("precision", {"device": where, "image_size": SPEC.image_size, "channels": SPEC.channels,
                         "batch": args.batch, "steps": args.steps, "repeats": args.repeats, "families": families},
           args.results)


if __name__ == "__main__":
    main()
