"""The retrain flow: version data → train each family on Ray → evaluate → register → promote.

Orchestration only: every task is one call into ``components.pipeline``. Families
run concurrently, each its own Ray Train job, as many at once as the cluster
holds (the rest queue here); one family's evaluation overlaps the next one's
training. A family that fails stops only its own chain.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from components import pipeline
from components.config import Params, load_params
from components.errors import DivergedError, GanzooError, StoreUnavailableError

STAGES = ("train", "evaluate", "register", "promote")
_slots_lock = threading.Lock()
_training_slots: threading.Semaphore | None = None  # training jobs the cluster holds at once, per process


def training_slots(count: int) -> threading.Semaphore:
    """One semaphore per process: concurrent flow runs in one process share the cluster too."""
    global _training_slots
    with _slots_lock:
        if _training_slots is None:
            _training_slots = threading.Semaphore(count)
        return _training_slots


@task(name="version-data", retries=2, retry_delay_seconds=[5, 20], cache_policy=NO_CACHE)
def version_data(params: Params, project_root: Path) -> dict[str, Any]:
    version = pipeline.version_data(params, project_root)
    get_run_logger().info("data version %s (%s new files pushed to %s)",
                          version["md5"], version["pushed"], version["remote"])
    return version


# No Prefect retries: Ray Train's FailureConfig already restarts failed workers from the last checkpoint.
@task(name="train", cache_policy=NO_CACHE)
def train(params: Params, family: str, data_version: str, slots: int) -> dict[str, Any]:
    with training_slots(slots):
        record = pipeline.train_stage(params, family, data_version)
    if record["status"] != "finished":
        raise GanzooError(f"{family}: training {record['status']}: {record['reason']}")
    get_run_logger().info("%s: %s steps, checkpoint %s", family, record["step"], record["checkpoint"])
    return record


@task(name="evaluate", retries=1, cache_policy=NO_CACHE)
def evaluate(params: Params, family: str) -> dict[str, Any]:
    report = pipeline.evaluate_stage(params, family)
    get_run_logger().info("%s: FID %.3f, KID %.4f", family, report["metrics"]["fid"], report["metrics"]["kid"])
    return report


def _worth_retrying(task, task_run, state) -> bool:
    """A diverged or collapsed run gives the same answer every time, and a store failure was already retried
    with backoff: retry the rest."""
    try:
        state.result()
    except (DivergedError, StoreUnavailableError):
        return False
    except Exception:
        return True
    return True


@task(name="check-unchanged", retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_worth_retrying,
      cache_policy=NO_CACHE)
def check_unchanged(params: Params, family: str, data_version: str) -> dict[str, Any] | None:
    skip = pipeline.unchanged_champion(params, family, data_version)
    if skip:
        get_run_logger().info("%s: skipped: %s", family, skip["reason"])
    return skip


@task(name="register", retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_worth_retrying,
      cache_policy=NO_CACHE)
def register(params: Params, family: str) -> dict[str, Any]:
    return pipeline.register_stage(params, family)


@task(name="promote", retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_worth_retrying,
      cache_policy=NO_CACHE)
def promote(params: Params, family: str) -> dict[str, Any]:
    decision = pipeline.promote_stage(params, family)
    get_run_logger().info("%s: version %s %s: %s", family, decision["version"], decision["decision"],
                          decision["reason"])
    return decision


@flow(name="retrain", task_runner=ThreadPoolTaskRunner(max_workers=16), log_prints=True)
def retrain(params_path: str = "params.yaml", families: list[str] | None = None,
            overrides: list[str] | None = None, force: bool = False) -> list[dict[str, Any]] | Failed:
    """Retrain every configured family (or ``families``); returns one summary row per family.

    A family whose champion was trained on the same data version with the same
    params is skipped (it would come out the same) unless ``force``. When a
    family fails, the flow run ends Failed, with the rows as its data.
    """
    from components.data.versioning import find_project_root

    assignments = list(overrides or []) + ([f"families={list(families)}"] if families else [])
    params = load_params(params_path, assignments)
    project_root = find_project_root(Path(params_path).resolve().parent)
    slots = pipeline.start_cluster(params)
    data = version_data(params, project_root)
    skips = {family: None if force else check_unchanged(params, family, data["md5"]) for family in params.families}
    chains = {family: _chain(params, family, data["md5"], slots) for family in params.families if not skips[family]}
    rows = [pipeline.summary_row(family, {"skip": skips[family]}) if skips[family]
            else _summarise(family, chains[family]) for family in params.families]
    failed = [f"{row['family']} ({row['failed_stage']}: {row['reason']})" for row in rows
              if row["status"] not in ("finished", "skipped")]
    if failed:  # the run shows as failed in Prefect, and still carries every row for the summary
        return Failed(message=f"{len(failed)} of {len(rows)} families failed: {'; '.join(failed)}", data=rows)
    return rows


def _chain(params: Params, family: str, data_version: str, slots: int) -> dict[str, PrefectFuture]:
    trained = train.submit(params, family, data_version, slots)
    evaluated = evaluate.submit(params, family, wait_for=[trained])
    registered = register.submit(params, family, wait_for=[evaluated])
    promoted = promote.submit(params, family, wait_for=[registered])
    return dict(zip(STAGES, (trained, evaluated, registered, promoted)))


def _summarise(family: str, chain: dict[str, PrefectFuture]) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for stage, future in chain.items():
        future.wait()
        if not future.state.is_completed():
            return pipeline.summary_row(family, outputs, failed_stage=stage, reason=_failure_message(future))
        outputs[stage] = future.result()
    return pipeline.summary_row(family, outputs)


def _failure_message(future: PrefectFuture) -> str:
    error = future.result(raise_on_failure=False)
    if isinstance(error, BaseException):
        text = str(error).strip()
        return text.splitlines()[0] if text else type(error).__name__
    return future.state.message or future.state.name
