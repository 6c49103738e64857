"""Pipeline fixed overhead: `ganzoo run` wall time minus its families' summed training and evaluation time.

    .venv/bin/python benchmarks/pipeline_overhead.py [--repeats 3] [--steps 100] [--families dcgan,wgan_gp,cgan]

Each repeat runs ``ganzoo run`` as a subprocess in a fresh git + DVC project
(params.yaml and dvc.yaml copied from the repository; a SQLite registry, local
checkpoints and DVC remote in the project), after one warm-up run. The stages
record their wall seconds in ``reports/<family>/timings.json`` and
``reports/timings.json`` (``components.pipeline.timed_stage``); the overhead is
what the training and evaluation stages leave of the wall time: Python and
library imports, the Ray cluster and the Prefect API starting, data
versioning, registration, promotion and the summary. Target: < 30 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import record, show, spread, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GANZOO = str(Path(sys.executable).with_name("ganzoo"))
STAGES = ("train", "evaluate", "register", "promote")


def project(root: Path) -> Path:
    subprocess.run([GANZOO, "init"], cwd=root, check=True, capture_output=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    return root


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of ``intervals`` (one family's evaluation overlaps the next one's training)."""
    covered, reach = 0.0, float("-inf")
    for begin, end in sorted(intervals):
        if end > reach:
            covered += end - max(begin, reach)
            reach = end
    return covered


def one_run(families: list[str], steps: int, num_samples: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ganzoo-bench-") as tmp:
        root = project(Path(tmp))
        sets = [f"families={families}".replace("'", ""), f"train.steps={steps}",
                f"train.checkpoint_every={steps}", f"train.sample_every={steps}",
                f"evaluation.num_samples={num_samples}", f"registry.tracking_uri=sqlite:///{root / 'mlflow.db'}",
                "registry.min_classes_covered=0"]  # a short run may not cover 2 classes yet: register it anyway
        start = time.perf_counter()
        done = subprocess.run([GANZOO, "run", *[arg for s in sets for arg in ("--set", s)]], cwd=root,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"ganzoo run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        reports = root / "reports"
        per_family = {family: json.loads((reports / family / "timings.json").read_text()) for family in families}
        flow = json.loads((reports / "timings.json").read_text())

    def spans(*stages: str) -> list[tuple[float, float]]:
        return [(t[stage]["start"], t[stage]["end"]) for t in per_family.values() for stage in stages if stage in t]

    def summed(stage: str) -> float:
        return sum(end - begin for begin, end in spans(stage))

    versioning = flow["version-data"]["end"] - flow["version-data"]["start"]
    working = busy_seconds(spans("train", "evaluate"))
    staged = busy_seconds(spans(*STAGES) + [(flow["version-data"]["start"], flow["version-data"]["end"])])
    return {"wall": wall, "train": summed("train"), "evaluate": summed("evaluate"), "train_or_evaluate": working,
            "version_data": versioning, "register": summed("register"), "promote": summed("promote"),
            "unaccounted": wall - staged, "overhead": wall - working, "per_family": per_family}


def ray_train_start(runs: int) -> list[float]:
    """Seconds from TorchTrainer.fit() to its 2 workers entering an empty loop, on one warm local cluster."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    def loop(config: dict) -> None:
        Path(config["file"]).write_text(str(time.time()))

    ray.init(include_dashboard=False, logging_config=ray.LoggingConfig(log_level="WARNING"))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(runs + 1):
            marker = Path(tmp) / f"entered-{index}"
            begin = time.time()
            TorchTrainer(loop, train_loop_config={"file": str(marker)},
                         scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                         run_config=ray.train.RunConfig(name=f"empty-{index}", storage_path=tmp)).fit()
            results.append(float(marker.read_text()) - begin)
    ray.shutdown()
    return results[1:]  # the first is the warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--families", default="dcgan,wgan_gp,cgan")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the discarded first run")
    args = parser.parse_args()
    families = args.families.split(",")
    if args.warmup:
        one_run(families, args.steps, args.num_samples)  # page cache, compiled bytecode
    runs = []
    for index in range(args.repeats):
        runs.append(one_run(families, args.steps, args.num_samples))
        print(f"  run {index + 1}: wall {runs[-1]['wall']:.1f} s, overhead {runs[-1]['overhead']:.1f} s", flush=True)
    keys = ("wall", "train", "evaluate", "train_or_evaluate", "version_data", "register", "promote", "unaccounted",
            "overhead")
    column = {key: [run[key] for run in runs] for key in keys}
    print(f"\n`ganzoo run`, {len(families)} families ({', '.join(families)}), {args.steps} steps, "
          f"{args.num_samples} samples scored; seconds, median (min-max) of {args.repeats}"
          f"{' after a warm-up' if args.warmup else ''}")
    labels = {"wall": "wall time", "train": "training stages, summed", "evaluate": "evaluation stages, summed",
              "train_or_evaluate": "time some family was training or evaluating",
              "version_data": "data versioning (prepare + DVC)", "register": "registration, summed",
              "promote": "promotion, summed", "unaccounted": "outside every stage (imports, Ray and Prefect start, "
              "summary)", "overhead": "fixed overhead = wall - time training or evaluating (target < 30 s)"}
    starts = ray_train_start(args.repeats)
    print(table(["", "seconds"], [[labels[key], show(column[key])] for key in keys]
                + [["within each training stage: Ray Train's start of 2 workers (empty loop)", show(starts)]]))
    record("pipeline_overhead", {"families": families, "steps": args.steps, "num_samples": args.num_samples,
                                 "repeats": args.repeats, **{key: spread(column[key]) for key in keys},
                                 "ray_train_start": spread(starts),
                                 "target_s": 30, "met": spread(column["overhead"])["median"] < 30,
                                 "per_family_last_run": runs[-1]["per_family"]})


if __name__ == "__main__":
    main()
