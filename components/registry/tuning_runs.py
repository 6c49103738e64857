"""The MLflow side of ``ganzoo tune``: one parent run per search, one nested child run per trial.

The runs go to their own experiment (``<registry.experiment>-tune``), so a search's
many short runs never mix with the retrain runs that registration looks up.
Child runs carry the trial's hyperparameters as params and the evaluation's
metrics at every budget mark (``step`` = the mark's number); their end status
says how the trial ended (FINISHED: completed, KILLED: stopped early by the
scheduler, FAILED: diverged or failed) and the tag ``ganzoo.tune.status`` says it
in words. Only the driver of the search calls these.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from components.config import Params, RegistryConfig
from components.registry.runs import flat_params, git_commit
from components.registry.tracking import client_for, configure, looks_secret, redact, with_store_retries

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under the run it names
STATUS_TAG = "ganzoo.tune.status"
REASON_TAG = "ganzoo.tune.reason"
EXPERIMENT_SUFFIX = "-tune"
MAX_TAG_CHARS = 5000  # MLflow refuses longer tag values


@dataclass(frozen=True)
class SearchRun:
    """Where a search logs: the store's settings, the tuning experiment and the parent run."""

    registry: RegistryConfig
    experiment_id: str
    run_id: str


def search_registry(cfg: RegistryConfig) -> RegistryConfig:
    """``cfg`` pointed at the tuning experiment beside the retrain one."""
    return cfg.model_copy(update={"experiment": f"{cfg.experiment}{EXPERIMENT_SUFFIX}"})


@with_store_retries
def start_search_run(params: Params, family: str, settings: dict[str, str], tags: dict[str, str]) -> SearchRun:
    """Open the parent run: every params.yaml key (credentials dropped by ``flat_params``) and the search settings."""
    from mlflow.entities import Param

    cfg = search_registry(params.registry)
    experiment_id = configure(cfg)
    client = client_for(cfg)
    run = client.create_run(experiment_id, run_name=f"tune-{family}",
                            tags={"family": family, "git_commit": git_commit(), **_safe(tags)})
    logged = {**flat_params(params, family), **_safe(settings)}
    entries = [Param(key, value) for key, value in logged.items()]
    for start in range(0, len(entries), 100):  # MLflow's limit of params per log_batch call
        client.log_batch(run.info.run_id, params=entries[start:start + 100])
    return SearchRun(cfg, experiment_id, run.info.run_id)


@with_store_retries
def start_trial_run(search: SearchRun, name: str, hyperparameters: dict[str, Any], tags: dict[str, str]) -> str:
    """Open a trial's child run under the search's parent run; returns its run id."""
    from mlflow.entities import Param

    client = client_for(search.registry)
    run = client.create_run(search.experiment_id, run_name=name,
                            tags={PARENT_TAG: search.run_id, **_safe(tags)})
    values = _safe({key: _text(value) for key, value in hyperparameters.items()})
    client.log_batch(run.info.run_id, params=[Param(key, value) for key, value in values.items()])
    return run.info.run_id


@with_store_retries
def log_mark(search: SearchRun, run_id: str, metrics: dict[str, float], mark: int) -> None:
    """The metrics a trial reported at budget mark ``mark`` (its step in MLflow's charts)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(name, float(value), now, mark) for name, value in metrics.items() if _finite(value)]
    for start in range(0, len(entries), 1000):  # MLflow's limit of metrics per log_batch call
        client_for(search.registry).log_batch(run_id, metrics=entries[start:start + 1000])


@with_store_retries
def end_trial_run(search: SearchRun, run_id: str, status: str, words: str, reason: str = "") -> None:
    """Close a child run: ``status`` is MLflow's (FINISHED, KILLED, FAILED), ``words`` ganzoo's own."""
    client = client_for(search.registry)
    client.set_tag(run_id, STATUS_TAG, words)
    if reason:
        client.set_tag(run_id, REASON_TAG, redact_reason(reason))
    client.set_terminated(run_id, status=status)


@with_store_retries
def end_search_run(search: SearchRun, status: str, summary: dict[str, float], texts: dict[str, str]) -> None:
    """Close the parent run with the best trial's figures and the printed report (``texts``: file name → text)."""
    from mlflow.entities import Metric

    client = client_for(search.registry)
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, 0) for name, value in summary.items() if _finite(value)]
    if metrics:
        client.log_batch(search.run_id, metrics=metrics)
    for name, text in texts.items():
        client.log_text(search.run_id, text, name)
    client.set_terminated(search.run_id, status=status)


def redact_reason(text: str) -> str:
    """A failure's first line, without user:password in any URL and short enough for a tag."""
    first = (text.strip().splitlines() or [""])[0]
    return " ".join(redact(word) if "://" in word else word for word in first.split(" "))[:MAX_TAG_CHARS]


def _safe(values: dict[str, str]) -> dict[str, str]:
    # the same rule as flat_params: a credential-like name is dropped, a URL loses its user:password
    return {key: redact(value) if "://" in value else value for key, value in values.items()
            if not looks_secret(key)}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
