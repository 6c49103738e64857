"""Train and evaluate the noise-to-image zoo on mnist5k with one budget; print a table, keep the grids.

    .venv/bin/python benchmarks/zoo_report.py --steps 100

Each family is trained by `ganzoo train` (2 Ray workers, batch 64 per worker,
its default hyperparameters) for the same number of steps, then scored by
`ganzoo evaluate` (the domain extractor, evaluation.num_samples samples). The
work happens in a temporary copy of params.yaml, so the repository's runs,
reports and registry are untouched. The table is printed as Markdown; the
figures go to docs/zoo/results.json and each family's last sample grid to
docs/zoo/<family>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GANZOO = str(Path(sys.executable).with_name("ganzoo"))
COMMON = ("fid", "kid", "precision", "recall", "coverage", "classes_covered")
OWN = ("conditional_accuracy", "code_class_nmi", "classifier_accuracy", "supervised_baseline_accuracy",
       "reconstruction_mse", "linear_probe_accuracy", "text_thickness_accuracy", "text_slant_accuracy")


# The noise-to-image families of the second wave (the first four are in `make run`'s table)
ZOO = ["wgan", "lsgan", "ebgan", "began", "pggan", "stylegan", "acgan", "infogan", "sgan", "bigan", "gan_t2i"]


def run(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([GANZOO, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ganzoo {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def measure(family: str, steps: int, work: Path, grids: Path) -> dict:
    train_s = run(["train", "--family", family, "--no-progress", "--set", f"train.steps={steps}"], work)
    evaluate_s = run(["evaluate", "--family", family], work)
    report = work / "reports" / family
    shutil.copyfile(report / "samples.png", grids / f"{family}.png")
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    return {"family": family, "steps": steps, "train_s": round(train_s, 1), "evaluate_s": round(evaluate_s, 1),
            **{k: metrics[k] for k in COMMON + OWN if k in metrics}}


def table(rows: list[dict]) -> str:
    lines = ["| family | train s | FID | KID | precision | recall | coverage | classes | its own metrics |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        own = ", ".join(f"{k} {r[k]:.3f}" for k in OWN if k in r)
        lines.append(f"| `{r['family']}` | {r['train_s']:.0f} | {r['fid']:.1f} | {r['kid']:.3f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['coverage']:.3f} | "
                     f"{r['classes_covered']:.0f} | {own} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--family", action="append", help="a family (repeatable); default: " + ", ".join(ZOO))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "zoo")
    args = parser.parse_args()
    families = args.family or ZOO
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ganzoo-zoo-") as tmp:
        work = Path(tmp)
        shutil.copyfile(REPO / "params.yaml", work / "params.yaml")
        machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                   "python": platform.python_version(), "steps": args.steps}
        for family in families:
            rows.append(measure(family, args.steps, work, args.out))
            print(f"{family}: trained in {rows[-1]['train_s']} s, FID {rows[-1]['fid']:.1f}", flush=True)
            # after every family, so an interrupted run keeps what it measured
            (args.out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
