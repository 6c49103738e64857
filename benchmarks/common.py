"""What every benchmark shares: repeated timing, median (min-max) summaries, the machine, results.json.

Each benchmark script measures side by side in one run (these machines are shared
and noisy, so only ratios measured together mean much), prints a table and merges
its section into ``benchmarks/results.json`` with the machine and versions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results.json"
PACKAGES = ("torch", "ray", "prefect", "mlflow", "dvc", "s3fs", "numpy")


def spread(values: list[float]) -> dict[str, float | list[float]]:
    """Median, min, max and every value: what the tables and results.json report."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def show(values: list[float], digits: int = 1) -> str:
    """``median (min-max)`` of ``values``."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def repeat(measure: Callable[[], float], runs: int, warmup: int = 1) -> list[float]:
    """``runs`` results of ``measure`` after ``warmup`` discarded ones."""
    for _ in range(warmup):
        measure()
    return [measure() for _ in range(runs)]


def seconds(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine() -> dict[str, Any]:
    """The CPU, cores, memory, GPU and package versions the figures were measured with."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = None
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": memory_gib and round(memory_gib, 1),
            "gpu": gpu_name(), "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions}


def record(section: str, result: dict[str, Any], path: Path = RESULTS) -> None:
    """Merge one benchmark's result into results.json, keeping the other sections."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data["machine"] = machine()
    data.setdefault("sections", {})[section] = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), **result}
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table, as printed and as pasted into docs/performance.md."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
