"""Quality bars: what a family's evaluation must reach for it to count as having learned.

A bar compares one metric of an evaluation (``metrics.json``'s metrics, plus the
training's final logs as ``train/<key>`` and loss-history summaries as
``history/<key>_first`` / ``history/<key>_last``) with a threshold, or with
another metric plus a margin. Pure functions: the zoo report, the zoo's quality
tests and the promotion floor read the same bars.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Bar:
    """``metric op threshold``, or with ``relative_to``: ``metric op metrics[relative_to] + threshold``."""

    metric: str
    op: str
    threshold: float
    relative_to: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"bar on {self.metric}: op must be one of {', '.join(OPERATORS)}, got {self.op!r}")

    def describe(self) -> str:
        if self.relative_to is None:
            return f"{self.metric} {self.op} {self.threshold:g}"
        margin = f" + {self.threshold:g}" if self.threshold > 0 else f" - {-self.threshold:g}" if self.threshold else ""
        return f"{self.metric} {self.op} {self.relative_to}{margin}"

    def target(self, metrics: Mapping[str, float]) -> float | None:
        if self.relative_to is None:
            return self.threshold
        base = metrics.get(self.relative_to)
        return None if base is None else base + self.threshold

    def check(self, metrics: Mapping[str, float]) -> "BarResult":
        value, target = metrics.get(self.metric), self.target(metrics)
        known = value is not None and target is not None and math.isfinite(value) and math.isfinite(target)
        return BarResult(self, value, target, bool(known and OPERATORS[self.op](value, target)))


@dataclass(frozen=True)
class BarResult:
    bar: Bar
    value: float | None  # None: the evaluation did not produce the metric, which fails the bar
    target: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"bar": self.bar.describe(), "value": self.value, "target": self.target, "passed": self.passed}


# Every noise-to-image family on mnist5k: all ten digits, close to the data, and covering it (precision alone is
# fooled by near-blank images, recall is not)
NOISE_TO_IMAGE_BARS = (Bar("classes_covered", ">=", 10), Bar("fid", "<=", 25.0), Bar("recall", ">=", 0.3))

_CONDITIONAL = (Bar("conditional_accuracy", ">=", 0.9),)

# Each family's defining capability, measured by its own task metric on held-out data
FAMILY_BARS: dict[str, tuple[Bar, ...]] = {
    "cgan": _CONDITIONAL,
    "acgan": _CONDITIONAL,
    "gan_t2i": _CONDITIONAL + (Bar("text_thickness_accuracy", ">=", 0.7), Bar("text_slant_accuracy", ">=", 0.7)),
    # a smooth untrained G is already monotone in its codes, invisibly: a code must also move the image
    "infogan": (Bar("code_class_accuracy", ">=", 0.8),
                Bar("continuous_code_monotonicity_0", ">=", 0.8), Bar("continuous_code_effect_0", ">=", 0.05),
                Bar("continuous_code_monotonicity_1", ">=", 0.8), Bar("continuous_code_effect_1", ">=", 0.05)),
    "sgan": (Bar("classifier_accuracy", ">=", 0.85),
             Bar("classifier_accuracy", ">=", 0.05, relative_to="supervised_baseline_accuracy")),
    "bigan": (Bar("linear_probe_accuracy", ">=", 0.85), Bar("reconstruction_class_agreement", ">=", 0.5)),
    "pggan": (Bar("train/resolution", ">=", 28),),
    "stylegan": (Bar("psi_0.7/precision", ">", 0.0, relative_to="precision"),
                 Bar("psi_0.7/recall", "<", 0.0, relative_to="recall"),
                 Bar("style_mixed/classes_covered", ">=", 10), Bar("style_mixed/fid", "<=", 25.0),
                 Bar("style_mixed/recall", ">=", 0.3)),
    "began": (Bar("history/convergence_m_last", "<", 0.0, relative_to="history/convergence_m_first"),),
}


def bars_for(family: str) -> tuple[Bar, ...]:
    """The bars a noise-to-image family is held to: the common ones, then its own."""
    return NOISE_TO_IMAGE_BARS + FAMILY_BARS.get(family, ())


def check_bars(bars: Iterable[Bar], metrics: Mapping[str, float]) -> list[BarResult]:
    return [bar.check(metrics) for bar in bars]


def history_summary(history: list[dict[str, Any]], keys: Iterable[str], window: float = 0.1) -> dict[str, float]:
    """``history/<key>_first`` and ``_last``: the mean of ``key`` over the first and the last ``window`` of the
    reports that logged it (a falling measure is compared over windows, not single noisy reports)."""
    summary: dict[str, float] = {}
    for key in keys:
        values = [float(row[key]) for row in history if isinstance(row.get(key), (int, float))]
        if not values:
            continue
        size = max(1, int(len(values) * window))
        summary[f"history/{key}_first"] = sum(values[:size]) / size
        summary[f"history/{key}_last"] = sum(values[-size:]) / size
    return summary


def history_keys(bars: Iterable[Bar]) -> set[str]:
    """The loss-history keys that ``bars`` read through ``history/<key>_first`` / ``_last``."""
    keys = set()
    for bar in bars:
        for name in (bar.metric, bar.relative_to or ""):
            if name.startswith("history/"):
                keys.add(name.removeprefix("history/").rsplit("_", 1)[0])
    return keys
