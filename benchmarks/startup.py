"""Start-up time of the light commands: wall time of `ganzoo --help` and `ganzoo families` as fresh processes.

    .venv/bin/python benchmarks/startup.py [--repeats 5]

Each command runs as a subprocess (what a user waits for: interpreter start,
imports, output), once as a warm-up and then ``--repeats`` times, interleaved
(help, families, torch, help, ...) so that drift on a shared machine hits every
command alike; the table gives median (min-max) seconds. ``python -c "import
torch"`` is the reference: what any command that imports torch pays at least.
Target: each ganzoo command < 2 s. tests/unit/test_startup.py checks the cause
(no torch, Ray, MLflow, Prefect or DVC import), not the time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import record, repeat, seconds, show, spread, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GANZOO = str(Path(sys.executable).with_name("ganzoo"))
TARGET_S = 2.0
COMMANDS = {  # label -> (argv, has the target)
    "ganzoo --help": ([GANZOO, "--help"], True),
    "ganzoo families": ([GANZOO, "families"], True),
    'python -c "import torch" (reference)': ([sys.executable, "-c", "import torch"], False),
}


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rounds = repeat(lambda: {label: seconds(lambda: run(argv)) for label, (argv, _) in COMMANDS.items()},
                    args.repeats)
    times = {label: [r[label] for r in rounds] for label in COMMANDS}
    rows, result = [], {}
    for label, (argv, has_target) in COMMANDS.items():
        met = statistics.median(times[label]) < TARGET_S if has_target else None
        rows.append([label, show(times[label], 2), f"< {TARGET_S:g}" if has_target else "—",
                     "—" if met is None else ("pass" if met else "FAIL")])
        result[label] = {**spread(times[label]), "target_s": TARGET_S if has_target else None, "met": met}
    print(f"\nStart-up wall time, fresh process, median (min-max) of {args.repeats} after a warm-up, seconds")
    print(table(["command", "wall time, s", "target, s", "met"], rows))
    record("startup", {"repeats": args.repeats, "commands": result,
                       "met": all(r["met"] for r in result.values() if r["met"] is not None)})


if __name__ == "__main__":
    main()
