"""The noise-to-image zoo at a fixed CPU budget: train, evaluate, check the bars, against the untrained generator.

    .venv/bin/python benchmarks/zoo_report.py --family dcgan --max-seconds 300 --seeds 0,1,2
    .venv/bin/python benchmarks/zoo_report.py --table            # the README table from docs/zoo/results.json

Each family trains through the real path, `ganzoo train` (Ray, train.workers x 1 CPU,
the family's shipped defaults: params.yaml's overrides are dropped) until
--max-seconds of training wall time pass, once per seed, and `ganzoo evaluate`
scores it (the mnist5k extractor, evaluation.num_samples samples, the family's task
metrics). The untrained generator (the same family, built and not trained) is scored
by the same evaluator as the baseline. Each family is held to the bars of
components/evaluation/bars.py, on the median over its seeds.

A family's rows are merged into docs/zoo/results.json as soon as it is measured, so
the report is built family by family; --table prints the Markdown table of every
family there and, with --readme, writes it between the README's zoo-table markers.
Work happens under --work (prepared data and the trained extractor are kept between
invocations); the repository's own runs, reports and registry are untouched.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.evaluation.bars import bars_for, check_bars, history_keys, history_summary  # noqa: E402

GANZOO = str(Path(sys.executable).with_name("ganzoo"))
RESULTS = REPO / "docs" / "zoo" / "results.json"
NOISE_TO_IMAGE = ["gan", "dcgan", "wgan", "wgan_gp", "lsgan", "ebgan", "began", "pggan", "stylegan", "cgan", "acgan",
                  "infogan", "sgan", "bigan", "gan_t2i"]
TABLE_START, TABLE_END = "<!-- zoo-table: benchmarks/zoo_report.py --table --readme -->", "<!-- /zoo-table -->"
STEPS_CAP = 10_000_000  # the seconds end every run first


def ganzoo(args: list[str], work: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([GANZOO, *args], cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ganzoo {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def prepare_work(work: Path, workers: int) -> None:
    """params.yaml for the report: the repository's, without per-family overrides (the shipped defaults)."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["overrides"] = {}
    params["train"].update({"steps": STEPS_CAP, "workers": workers, "cpus_per_worker": 1, "checkpoint_every": 1000})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def train_and_score(family: str, seed: int, max_seconds: float, work: Path) -> dict[str, Any]:
    """One seed: train for the budget, evaluate, and collect what the bars read."""
    sets = ["--set", f"train.seed={seed}"]
    train_s = ganzoo(["train", "--family", family, "--no-progress", "--max-seconds", str(max_seconds), *sets], work)
    evaluate_s = ganzoo(["evaluate", "--family", family, *sets], work)
    reports = work / "reports" / family
    training = json.loads((reports / "training.json").read_text())
    metrics = json.loads((reports / "metrics.json").read_text())["metrics"]
    final_logs = {f"train/{k}": v for k, v in training["metrics"].items() if isinstance(v, (int, float))}
    history = _history(training["checkpoint"])
    scored = {**metrics, **final_logs, **history_summary(history, history_keys(bars_for(family)))}
    return {"seed": seed, "steps": training["step"], "train_s": round(train_s, 1),
            "training_s": round(training["metrics"].get("elapsed_s", 0.0), 1), "evaluate_s": round(evaluate_s, 1),
            "metrics": scored}


def _history(checkpoint: str) -> list[dict[str, Any]]:
    from components.training.checkpoint import read_history

    return read_history(checkpoint)


def untrained_baseline(family: str, work: Path) -> dict[str, float]:
    """The same evaluation of the family as built, before any training step (seed 0)."""
    import torch

    from components import pipeline
    from components.config import load_params
    from components.data import load_prepared
    from components.evaluation.evaluate import evaluate_checkpoint
    from components.families import DataSpec, build_family
    from components.training.checkpoint import TrainingState, save_checkpoint

    params = load_params(work / "params.yaml", [])
    prepared = load_prepared(params.data.prepared_dir)
    spec = DataSpec(prepared.channels, prepared.image_size, prepared.num_classes)
    torch.manual_seed(0)
    built = build_family(family, spec, {})
    directory = work / "untrained" / family
    shutil.rmtree(directory, ignore_errors=True)
    save_checkpoint(directory, built, built.build_optimizers(), TrainingState(step=0))
    report = evaluate_checkpoint(directory, prepared, pipeline.current_data_version(params), params.evaluation)
    return {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}


def summarise(family: str, seeds: list[dict[str, Any]], baseline: dict[str, float], max_seconds: float) -> dict:
    names = sorted(set.intersection(*(set(s["metrics"]) for s in seeds)))
    values = {k: [s["metrics"][k] for s in seeds] for k in names}
    median = {k: statistics.median(v) for k, v in values.items()}
    bars = check_bars(bars_for(family), median)
    untrained = check_bars(bars_for(family), baseline)
    return {"budget_s": max_seconds, "measured": datetime.date.today().isoformat(), "seeds": seeds,
            "median": median, "min": {k: min(v) for k, v in values.items()},
            "max": {k: max(v) for k, v in values.items()},
            "steps": statistics.median(s["steps"] for s in seeds), "baseline_untrained": baseline,
            "bars": [b.to_dict() for b in bars], "passed": all(b.passed for b in bars),
            "untrained_passes_a_bar_it_should_not": [b.bar.describe() for b in untrained if b.passed and
                                                     b.bar.metric in ("fid", "recall", "classes_covered")]}


def read_results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def merge_result(family: str, summary: dict[str, Any]) -> None:
    """Write ``family``'s rows into results.json beside the others, atomically."""
    results = read_results()
    if "families" not in results:  # the earlier fixed-steps layout: replaced, one family at a time
        results = {"families": {}}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()}
    results["families"][family] = summary
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_name(".results.json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


def earlier_seeds(family: str, max_seconds: float, seeds: list[int]) -> list[dict[str, Any]]:
    """The family's rows already in results.json at the same budget, but for the seeds measured now."""
    earlier = read_results().get("families", {}).get(family)
    if not earlier or earlier.get("budget_s") != max_seconds:
        return []
    return [row for row in earlier["seeds"] if row["seed"] not in seeds]


def measure(family: str, seeds: list[int], max_seconds: float, work: Path) -> dict[str, Any]:
    for stale in (work / "runs").glob(f"{family}-*"):  # a report trains afresh, never resumes an old run
        shutil.rmtree(stale)
    rows = []
    for seed in seeds:
        rows.append(train_and_score(family, seed, max_seconds, work))
        m = rows[-1]["metrics"]
        print(f"{family} seed {seed}: {rows[-1]['steps']} steps in {rows[-1]['training_s']} s, FID {m['fid']:.1f}, "
              f"recall {m['recall']:.3f}, classes {m['classes_covered']:.0f}", flush=True)
    grid = work / "reports" / family / "samples.png"
    shutil.copyfile(grid, REPO / "docs" / "zoo" / f"{family}.png")
    rows = sorted(earlier_seeds(family, max_seconds, seeds) + rows, key=lambda row: row["seed"])
    return summarise(family, rows, untrained_baseline(family, work), max_seconds)


# -- the table ------------------------------------------------------------------------------------

def _spread(summary: dict, key: str, digits: int) -> str:
    if key not in summary["median"]:
        return ""
    med, low, high = summary["median"][key], summary["min"][key], summary["max"][key]
    if len(summary["seeds"]) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def _own(family: str, summary: dict) -> str:
    """The family's own bars: its metric's median beside the untrained generator's (and, for a bar relative to
    another metric, beside that target)."""
    cells = []
    for result in check_bars(bars_for(family), summary["median"]):
        bar = result.bar
        if bar.metric in ("classes_covered", "fid", "recall"):
            continue
        untrained = summary["baseline_untrained"].get(bar.metric)
        value = "missing" if result.value is None else f"{result.value:.3f}"
        base = f" (untrained {untrained:.3f})" if isinstance(untrained, (int, float)) else ""
        if bar.relative_to is not None and result.target is not None:
            base += f" against {result.target:.3f}"
        cells.append(f"{bar.describe()}: {value}{base} {'✓' if result.passed else '✗'}")
    return "; ".join(cells)


def table(results: dict[str, Any]) -> str:
    lines = ["| family | budget | seeds | steps | FID | KID | precision | recall | coverage | classes | "
             "FID untrained | its own bars (untrained) | bars |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    families = results.get("families", {})
    for family in [f for f in NOISE_TO_IMAGE if f in families]:
        s = families[family]
        failed = [r.bar.describe() for r in check_bars(bars_for(family), s["median"]) if not r.passed]
        verdict = "pass" if not failed else "miss: " + ", ".join(failed)
        lines.append(
            f"| `{family}` | {s['budget_s']:.0f} s | {len(s['seeds'])} | {s['steps']:.0f} | {_spread(s, 'fid', 1)} | "
            f"{_spread(s, 'kid', 3)} | {_spread(s, 'precision', 3)} | {_spread(s, 'recall', 3)} | "
            f"{_spread(s, 'coverage', 3)} | {_spread(s, 'classes_covered', 0)} | "
            f"{s['baseline_untrained'].get('fid', float('nan')):.1f} | {_own(family, s)} | {verdict} |")
    return "\n".join(lines)


def write_readme_table(text: str) -> None:
    readme = REPO / "README.md"
    content = readme.read_text()
    if TABLE_START not in content or TABLE_END not in content:
        raise SystemExit(f"README.md: no zoo-table markers ({TABLE_START} ... {TABLE_END})")
    head, rest = content.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    readme.write_text(f"{head}{TABLE_START}\n{text}\n{TABLE_END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", help="a family (repeatable); default: all noise-to-image")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="training wall time per run")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; rows of other seeds measured "
                        "earlier at the same budget are kept")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ganzoo-zoo-report"))
    parser.add_argument("--table", action="store_true", help="print the table of docs/zoo/results.json and stop")
    parser.add_argument("--readme", action="store_true", help="with --table: write it into README.md")
    args = parser.parse_args()
    if args.table:
        text = table(read_results())
        print(text)
        if args.readme:
            write_readme_table(text)
        return
    prepare_work(args.work, args.workers)
    for family in args.family or NOISE_TO_IMAGE:
        summary = measure(family, [int(s) for s in args.seeds.split(",")], args.max_seconds, args.work)
        merge_result(family, summary)
        print(f"{family}: {'pass' if summary['passed'] else 'MISS'} "
              + "; ".join(f"{b['bar']} = {b['value']}" for b in summary["bars"]), flush=True)
    print(table(read_results()))


if __name__ == "__main__":
    main()
