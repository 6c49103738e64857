"""A progress bar in the driver, fed by rank 0 through a Ray queue while ``trainer.fit`` runs."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from tqdm import tqdm

SHOWN = ("d_loss", "g_loss", "wasserstein")
FIT_RETURNED = "fit returned"  # the driver's own last item on the queue: what the bar waits for after the reports
SAFETY_WAKE_S = 30.0  # only if that item never arrives (the queue's actor lost): how often to check fit anyway


def describe(metrics: dict[str, Any]) -> str:
    parts = [f"{k}={metrics[k]:.3f}" for k in SHOWN if k in metrics]
    if "images_per_s" in metrics:
        parts.append(f"{metrics['images_per_s']:.0f} img/s")
    if "elapsed_s" in metrics:  # under train.max_seconds the seconds, not the steps, may end the run
        parts.append(f"{metrics['elapsed_s']:.0f} s")
    return " ".join(parts)


def fit_with_progress(fit: Callable[[], Any], queue: Any, total: int, label: str,
                      show: bool = True, safety_wake_s: float = SAFETY_WAKE_S) -> tuple[Any, dict[str, Any]]:
    """Run ``fit`` in a thread; draw each report that arrives on ``queue`` until it returns.

    The loop blocks on the queue instead of polling it: when ``fit`` returns (or raises),
    its thread puts FIT_RETURNED behind the last report. A poll twice a second woke the
    driver and the queue's actor, and on 2 cores each wake-up stalls a training thread.
    Returns fit's result and rank 0's last report (Ray's result carries the metrics of
    the last checkpoint, not of the last report).
    """
    from ray.util.queue import Empty

    def fit_then_wake() -> Any:
        try:
            return fit()
        finally:
            try:
                queue.put_nowait(FIT_RETURNED)
            except Exception:  # a lost queue: the loop's safety wake finds fit done instead
                pass

    last: dict[str, Any] = {}
    bar = tqdm(total=total, desc=label, unit="step", disable=not show, file=sys.stderr, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(fit_then_wake)
        while True:
            try:
                metrics = queue.get(timeout=safety_wake_s)
            except Empty:
                if future.done():
                    break
                continue
            if metrics == FIT_RETURNED:
                break
            last = metrics
            bar.n = min(total, int(metrics.get("step", bar.n)))
            bar.set_postfix_str(describe(metrics), refresh=True)
        bar.close()
        return future.result(), last
