"""Cost growth: seconds per training iteration and peak memory, by image size, batch and concurrent families.

    .venv/bin/python benchmarks/cost_growth.py [--repeats 3] [--steps 10]

(1) dcgan and stargan_v2 at image sizes 28 (dcgan; 32 for stargan_v2), 64 and
128, batch 16 and 64, 2 threads: each configuration in its own process, so its
peak RSS is its own; the iteration is the family's phases as the trainer runs
them (``run_iteration`` on random data of that size). (2) 1, 2 and 4 dcgan
trainings (28 px, batch 64) at once on the 2 CPUs, each a process with
max(1, 2 / n) threads: seconds per iteration of each, iterations per second of
all together, and their summed peak RSS. Median (min-max) of ``--repeats``
after a warm-up iteration per process; ``--steps`` timed iterations per run (at
least 3, fewer than ``--steps`` once 20 s have passed).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import record, show, spread, table  # noqa: E402

SIZES = {"dcgan": (28, 64, 128), "stargan_v2": (32, 64, 128)}
BATCHES = (16, 64)
CONCURRENT = (1, 2, 4)


def measure_one(family_name: str, size: int, batch: int, steps: int, threads: int) -> dict:
    """In this process: seconds per iteration of ``family_name`` at ``size`` px and ``batch``, and peak RSS."""
    import numpy as np
    import torch

    from components.families import DataSpec, build_family
    from components.training.loop import run_iteration
    from components.training.sampler import ShardSampler

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    count = max(4 * batch, 256)
    if family_name == "stargan_v2":
        spec, channels = DataSpec(3, size, 0, num_domains=3), 3
        domains = np.arange(count) % 3
    else:
        spec, channels, domains = DataSpec(1, size, 10), 1, None
    images = rng.integers(0, 256, (count, channels, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, count)
    sampler = ShardSampler(images, labels, 0, 1, batch, 0, domains=domains)
    family = build_family(family_name, spec)
    optimizers, phases, nets = family.build_optimizers(), family.phases(), dict(family.nets.items())
    device = torch.device("cpu")
    run_iteration(0, phases, nets, optimizers, sampler, device)  # warm-up: allocator, first-call costs
    times: list[float] = []
    for step in range(1, steps + 1):  # at most ``steps``; at least 3 once 20 s have passed (the large ones)
        start = time.perf_counter()
        run_iteration(step, phases, nets, optimizers, sampler, device)
        times.append(time.perf_counter() - start)
        if len(times) >= 3 and sum(times) > 20:
            break
    return {"step_s": statistics.median(times), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(family: str, size: int, batch: int, steps: int, threads: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--one", family, str(size), str(batch), str(steps),
                             str(threads)], stdout=subprocess.PIPE, text=True)


def collect(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a measuring process failed ({process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def by_size_and_batch(repeats: int, steps: int) -> tuple[dict, list[list]]:
    results, rows = {}, []
    for family, sizes in SIZES.items():
        for size in sizes:
            for batch in BATCHES:
                runs = [collect(child(family, size, batch, steps, 2)) for _ in range(repeats)]
                step_s, peak = [r["step_s"] for r in runs], [r["peak_mib"] for r in runs]
                results[f"{family}/{size}/{batch}"] = {"step_s": spread(step_s), "peak_mib": spread(peak)}
                rows.append([family, size, batch, show(step_s, 3), f"{statistics.median(peak):.0f}"])
                print(f"  {family} {size}px batch {batch}: {show(step_s, 3)} s/iteration", flush=True)
    return results, rows


def concurrent(repeats: int, steps: int) -> tuple[dict, list[list]]:
    results, rows = {}, []
    for n in CONCURRENT:
        threads = max(1, 2 // n)
        per_step, throughput, memory = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            runs = [collect(p) for p in [child("dcgan", 28, 64, steps, threads) for _ in range(n)]]
            wall = time.perf_counter() - start
            per_step.append(statistics.median(r["step_s"] for r in runs))
            throughput.append(sum(1 / r["step_s"] for r in runs))
            memory.append(sum(r["peak_mib"] for r in runs))
            del wall
        results[str(n)] = {"threads_each": threads, "step_s_each": spread(per_step),
                           "iterations_per_s_all": spread(throughput), "peak_mib_all": spread(memory)}
        rows.append([n, threads, show(per_step, 3), show(throughput, 1), f"{statistics.median(memory):.0f}"])
    return results, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--one", nargs=5, metavar=("FAMILY", "SIZE", "BATCH", "STEPS", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        family, size, batch, steps, threads = args.one
        print(json.dumps(measure_one(family, int(size), int(batch), int(steps), int(threads))))
        return
    sized, sized_rows = by_size_and_batch(args.repeats, args.steps)
    together, together_rows = concurrent(args.repeats, args.steps)
    print(f"\nSeconds per iteration and peak RSS, 2 threads, median (min-max) of {args.repeats} processes, "
          f"{args.steps} iterations each")
    print(table(["family", "image size", "batch", "s per iteration", "peak RSS MiB"], sized_rows))
    print("\ndcgan, 28 px, batch 64, n trainings at once on 2 CPUs")
    print(table(["families at once", "threads each", "s per iteration, each", "iterations/s, all together",
                 "peak RSS MiB, all together"], together_rows))
    record("cost_growth", {"repeats": args.repeats, "steps": args.steps, "by_size_and_batch": sized,
                           "concurrent_dcgan": together})


if __name__ == "__main__":
    main()
