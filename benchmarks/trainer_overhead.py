"""Trainer overhead: images/s of DCGAN on mnist5k at batch 64 per worker.

(a) a plain single-process PyTorch loop (2 threads) doing the same D and G updates
    on the same networks, (b) the ganzoo trainer on Ray with 1 worker x 2 threads,
(c) 2 workers x 1 thread. Prints each configuration's median (min-max) over
``--repeats`` runs and the ratios b/a and c/a. Targets: b/a >= 0.9, c/a >= 1.0.

    .venv/bin/python benchmarks/trainer_overhead.py [--steps 300] [--repeats 3]

The ganzoo figures are rank 0's steady-state rate (the last report interval, so
worker start-up and the first steps are excluded); the plain loop likewise
times only the steps after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from components.config import load_params
from components.data import load_prepared, prepare_dataset
from components.families import DataSpec, build_family
from components.training.launcher import train_family

BATCH = 64


def plain_loop(images: torch.Tensor, steps: int, warmup: int = 20) -> float:
    """The reference: no Ray, no phases, no DDP; just the two Adam updates per iteration."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    family = build_family("dcgan", DataSpec(1, 28, 10))
    G, D = family.nets["G"], family.nets["D"]
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    data = images.float() / 127.5 - 1
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        real = data[torch.randint(0, data.size(0), (BATCH,))]
        with torch.no_grad():
            fake = G(torch.randn(BATCH, 100))
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(G(torch.randn(BATCH, 100)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    return BATCH * steps / (time.perf_counter() - start)


def ganzoo_trainer(prepared, workers: int, threads: int, steps: int, root: str, repeat: int) -> float:
    params = load_params("params.yaml", [
        f"train.workers={workers}", f"train.cpus_per_worker={threads}", f"train.batch_size={BATCH}",
        f"train.steps={steps}", f"train.checkpoint_every={steps}", f"train.report_every={steps // 2}",
        f"train.sample_every={steps * 10}", f"train.storage_path={root}/runs", f"train.seed={repeat}",
    ])
    outcome = train_family(params, "dcgan", prepared, show_progress=False)
    if not outcome.ok:
        raise SystemExit(f"ganzoo run failed: {outcome.reason}")
    return float(outcome.metrics["images_per_s"])


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.0f}  ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        prepare_dataset("mnist5k", f"{root}/prepared")
        prepared = load_prepared(f"{root}/prepared")
        rows = {"a": [], "b": [], "c": []}
        for repeat in range(args.repeats):  # interleaved, so drift on a shared machine hits all three
            rows["a"].append(plain_loop(torch.from_numpy(prepared.images), args.steps))
            rows["b"].append(ganzoo_trainer(prepared, 1, 2, args.steps, root, repeat))
            rows["c"].append(ganzoo_trainer(prepared, 2, 1, args.steps, root, repeat))
    a, b, c = (statistics.median(rows[k]) for k in "abc")
    print(f"dcgan, mnist5k, batch {BATCH} per worker, {args.steps} steps, median (min-max) of {args.repeats}")
    print(f"(a) plain PyTorch loop, 1 process x 2 threads   {summary(rows['a'])} images/s")
    print(f"(b) ganzoo on Ray, 1 worker x 2 threads         {summary(rows['b'])} images/s")
    print(f"(c) ganzoo on Ray, 2 workers x 1 thread         {summary(rows['c'])} images/s")
    print(f"b/a = {b / a:.2f}   (target >= 0.9)")
    print(f"c/a = {c / a:.2f}   (target >= 1.0)")


if __name__ == "__main__":
    main()
