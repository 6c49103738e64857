"""Train and evaluate the translation families on one budget; print a table, keep the grids.

    .venv/bin/python benchmarks/translation_report.py --steps 300
    .venv/bin/python benchmarks/translation_report.py --steps 300 --group domains

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

``--group domains`` runs the unpaired families on ``digits2colored`` (grey <->
coloured digits) and the multi-domain ones on ``digit_domains`` (colour,
stroke, background) instead, scored by translation accuracy (a classifier of
the real domains or attributes), content preservation (the digit class kept),
cycle L1, FID and diversity. Their grids come from `ganzoo sample` on held-out
rows: source | each domain (reference | output for munit and stargan_v2),
<family>_latent.png with sampled style codes, and relgan's attribute
interpolation in relgan_interpolation.png. results.json keeps the rows of
families not run this time.
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
GROUPS = {
    "paired": {"pix2pix": "edges2digits", "spade": "shapes", "oasis": "shapes", "sean": "shapes", "cocosnet": "shapes"},
    "domains": {"cyclegan": "digits2colored", "discogan": "digits2colored", "unit": "digits2colored",
                "munit": "digits2colored", "stargan": "digit_domains", "stargan_v2": "digit_domains",
                "relgan": "digit_domains"},
}
DATA = {family: source for group in GROUPS.values() for family, source in group.items()}
KEYS = ("fid", "l1", "l1_identity", "psnr", "ssim", "segmentation_miou", "segmentation_accuracy",
        "segmenter_miou_real", "style_agreement", "style_agreement_other", "exemplar_diversity",
        "translation_accuracy", "attribute_accuracy", "content_preservation", "cycle_l1", "diversity")
STYLE_GUIDED = ("munit", "stargan_v2")


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
    if source in GROUPS["domains"].values():
        domain_grids(family, sets, work, grids)
    else:
        shutil.copyfile(report / "samples.png", grids / f"{family}.png")
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    return {"family": family, "data": source, "steps": steps, "batch": batch, "train_s": round(train_s, 1),
            "evaluate_s": round(evaluate_s, 1), **{k: metrics[k] for k in KEYS if k in metrics}}


def domain_grids(family: str, sets: list[str], work: Path, grids: Path) -> None:
    """Held-out translations by `ganzoo sample`: to each domain; with sampled styles; relgan's interpolation."""
    run(["sample", "--family", family, "-n", "8", "--out", str(grids / f"{family}.png"), *sets], work)
    if family in STYLE_GUIDED:
        run(["sample", "--family", family, "-n", "8", "--guide", "latent", "--styles", "3",
             "--out", str(grids / f"{family}_latent.png"), *sets], work)
    if family == "relgan":
        run(["sample", "--family", family, "-n", "8", "--interpolate", "--walk-steps", "6", "--attribute", "bold",
             "--out", str(grids / "relgan_interpolation.png"), *sets], work)


def _cell(row: dict, key: str, digits: int = 3) -> str:
    return f"{row[key]:.{digits}f}" if key in row else ""


def domain_table(rows: list[dict]) -> str:
    lines = ["| family | data | train s | FID | translation accuracy | content preservation | cycle L1 | diversity |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['family']}` | {r['data']} | {r['train_s']:.0f} | {r['fid']:.1f} | "
                     f"{_cell(r, 'translation_accuracy')} | {_cell(r, 'content_preservation')} | "
                     f"{_cell(r, 'cycle_l1')} | {_cell(r, 'diversity')} |")
    return "\n".join(lines)


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
    parser.add_argument("--group", choices=sorted(GROUPS), default="paired",
                        help="paired: paired and segmentation families; domains: unpaired and multi-domain ones")
    parser.add_argument("--family", action="append", help="a family (repeatable); default: the group's")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "translation")
    args = parser.parse_args()
    families = args.family or list(GROUPS[args.group])
    unknown = sorted(set(families) - set(DATA))
    if unknown:
        raise SystemExit(f"--family {', '.join(unknown)}: not a translation family ({', '.join(DATA)})")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.json"
    kept = json.loads(results.read_text())["rows"] if results.is_file() else []
    rows: list[dict] = []
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version(), "steps": args.steps, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="ganzoo-translation-") as tmp:
        work = Path(tmp)
        shutil.copyfile(REPO / "params.yaml", work / "params.yaml")
        for family in families:
            rows.append(measure(family, args.steps, args.batch, work, args.out))
            print(f"{family}: trained in {rows[-1]['train_s']} s, FID {rows[-1]['fid']:.1f}", flush=True)
            # after every family, so an interrupted run keeps what it measured
            merged = [r for r in kept if r["family"] not in {row["family"] for row in rows}] + rows
            results.write_text(json.dumps({"machine": machine, "rows": merged}, indent=2) + "\n")
    paired = [r for r in rows if r["family"] in GROUPS["paired"]]
    domains = [r for r in rows if r["family"] in GROUPS["domains"]]
    print("\n\n".join(t for t in (table(paired) if paired else "", domain_table(domains) if domains else "") if t))


if __name__ == "__main__":
    main()
