"""Train and evaluate the paired and segmentation-to-image families on one budget; print a table, keep the grids.

    .venv/bin/python benchmarks/translation_report.py --steps 300

pix2pix trains on ``edges2digits`` (edge map -> digit), the segmentation-to-image
families on ``shapes`` (label map -> scene), each by `ganzoo train` (2 Ray
workers, --batch per worker, default hyperparameters) for the same number of
steps, then `ganzoo evaluate` scores the held-out rows: L1 / PSNR / SSIM to the
target and the L1 of copying the input (paired); the segmenter's mIoU and pixel
accuracy on the outputs against their input label maps, beside the same
segmenter on the real held-out images (segmentation); style agreement with the
exemplar, with another row's exemplar, and the diversity exemplars bring
(sean, cocosnet); FID of the outputs against the real images (all). The work
happens in a temporary copy of params.yaml; figures go to
docs/translation/results.json and each family's input | output | target grid
to docs/translation/<family>.png.
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
DATA = {"pix2pix": "edges2digits", "spade": "shapes", "oasis": "shapes", "sean": "shapes", "cocosnet": "shapes"}
KEYS = ("fid", "l1", "l1_identity", "psnr", "ssim", "segmentation_miou", "segmentation_accuracy",
        "segmenter_miou_real", "style_agreement", "style_agreement_other", "exemplar_diversity")


def run(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([GANZOO, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ganzoo {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def measure(family: str, steps: int, batch: int, work: Path, grids: Path) -> dict:
    source = DATA[family]
    sets = ["--set", f"data.source={source}", "--set", f"data.prepared_dir=data/{source}",
            "--set", f"train.batch_size={batch}"]
    train_s = run(["train", "--family", family, "--no-progress", "--set", f"train.steps={steps}", *sets], work)
    evaluate_s = run(["evaluate", "--family", family, *sets], work)
    report = work / "reports" / family
    shutil.copyfile(report / "samples.png", grids / f"{family}.png")
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    return {"family": family, "data": source, "steps": steps, "batch": batch, "train_s": round(train_s, 1),
            "evaluate_s": round(evaluate_s, 1), **{k: metrics[k] for k in KEYS if k in metrics}}


def _cell(row: dict, key: str, digits: int = 3) -> str:
    return f"{row[key]:.{digits}f}" if key in row else ""


def table(rows: list[dict]) -> str:
    lines = ["| family | data | train s | FID | L1 (copy input) | PSNR | SSIM | mIoU (real) | pixel acc | "
             "style agreement (other) | diversity |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        l1 = f"{_cell(r, 'l1')} ({_cell(r, 'l1_identity')})" if "l1" in r else ""
        miou = f"{_cell(r, 'segmentation_miou')} ({_cell(r, 'segmenter_miou_real')})" if "segmentation_miou" in r else ""
        style = (f"{_cell(r, 'style_agreement')} ({_cell(r, 'style_agreement_other')})"
                 if "style_agreement" in r else "")
        lines.append(f"| `{r['family']}` | {r['data']} | {r['train_s']:.0f} | {r['fid']:.1f} | {l1} | "
                     f"{_cell(r, 'psnr', 2)} | {_cell(r, 'ssim')} | {miou} | {_cell(r, 'segmentation_accuracy')} | "
                     f"{style} | {_cell(r, 'exemplar_diversity')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32, help="batch size per worker")
    parser.add_argument("--family", action="append", help="a family (repeatable); default: " + ", ".join(DATA))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "translation")
    args = parser.parse_args()
    families = args.family or list(DATA)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version(), "steps": args.steps, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="ganzoo-translation-") as tmp:
        work = Path(tmp)
        shutil.copyfile(REPO / "params.yaml", work / "params.yaml")
        for family in families:
            rows.append(measure(family, args.steps, args.batch, work, args.out))
            print(f"{family}: trained in {rows[-1]['train_s']} s, FID {rows[-1]['fid']:.1f}", flush=True)
            # after every family, so an interrupted run keeps what it measured
            (args.out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
