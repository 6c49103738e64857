"""A progress bar in the driver, fed by rank 0 through a Ray queue while ``trainer.fit`` runs."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from tqdm import tqdm

SHOWN = ("d_loss", "g_loss", "wasserstein")


def describe(metrics: dict[str, Any]) -> str:
    parts = [f"{k}={metrics[k]:.3f}" for k in SHOWN if k in metrics]
    if "images_per_s" in metrics:
        parts.append(f"{metrics['images_per_s']:.0f} img/s")
    return " ".join(parts)


def fit_with_progress(fit: Callable[[], Any], queue: Any, total: int, label: str,
                      show: bool = True) -> tuple[Any, dict[str, Any]]:
    """Run ``fit`` in a thread; draw each report that arrives on ``queue`` until it returns.

    Returns fit's result and rank 0's last report (Ray's result carries the metrics of
    the last checkpoint, not of the last report).
    """
    last: dict[str, Any] = {}
    from ray.util.queue import Empty

    bar = tqdm(total=total, desc=label, unit="step", disable=not show, file=sys.stderr, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(fit)
        while True:
            try:
                metrics = queue.get(timeout=0.5)
            except Empty:
                if future.done():
                    break
                continue
            last = metrics
            bar.n = min(total, int(metrics.get("step", bar.n)))
            bar.set_postfix_str(describe(metrics), refresh=True)
        bar.close()
        return future.result(), last
