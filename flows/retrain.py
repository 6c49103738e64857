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

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from components import pipeline
from components.config import Params, load_params
from components.errors import GanzooError

STAGES = ("train", "evaluate", "register", "promote")
_TRAINING_SLOTS: dict[str, threading.Semaphore] = {}  # per flow run: training jobs the cluster holds at once


@task(name="version-data", retries=2, retry_delay_seconds=[5, 20], cache_policy=NO_CACHE)
def version_data(params: Params, project_root: Path) -> dict[str, Any]:
    version = pipeline.version_data(params, project_root)
    get_run_logger().info("data version %s (%s new files pushed to %s)",
                          version["md5"], version["pushed"], version["remote"])
    return version


# No Prefect retries: Ray Train's FailureConfig already restarts failed workers from the last checkpoint.
@task(name="train", cache_policy=NO_CACHE)
def train(params: Params, family: str, data_version: str) -> dict[str, Any]:
    with _TRAINING_SLOTS[runtime.flow_run.id]:
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


@task(name="check-unchanged", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def check_unchanged(params: Params, family: str, data_version: str) -> dict[str, Any] | None:
    skip = pipeline.unchanged_champion(params, family, data_version)
    if skip:
        get_run_logger().info("%s: skipped: %s", family, skip["reason"])
    return skip


@task(name="register", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def register(params: Params, family: str) -> dict[str, Any]:
    return pipeline.register_stage(params, family)


@task(name="promote", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def promote(params: Params, family: str) -> dict[str, Any]:
    decision = pipeline.promote_stage(params, family)
    get_run_logger().info("%s: version %s %s: %s", family, decision["version"], decision["decision"],
                          decision["reason"])
    return decision


@flow(name="retrain", task_runner=ThreadPoolTaskRunner(max_workers=16), log_prints=True)
def retrain(params_path: str = "params.yaml", families: list[str] | None = None,
            overrides: list[str] | None = None, force: bool = False) -> list[dict[str, Any]]:
    """Retrain every configured family (or ``families``); returns one summary row per family.

    A family whose champion was trained on the same data version with the same
    params is skipped (it would come out the same) unless ``force``.
    """
    from components.data.versioning import find_project_root

    assignments = list(overrides or []) + ([f"families={list(families)}"] if families else [])
    params = load_params(params_path, assignments)
    project_root = find_project_root(Path(params_path).resolve().parent)
    _TRAINING_SLOTS[runtime.flow_run.id] = threading.Semaphore(pipeline.start_cluster(params))
    try:
        data = version_data(params, project_root)
        skips = {family: None if force else check_unchanged(params, family, data["md5"])
                 for family in params.families}
        chains = {family: _chain(params, family, data["md5"]) for family in params.families if not skips[family]}
        return [pipeline.summary_row(family, {"skip": skips[family]}) if skips[family]
                else _summarise(family, chains[family]) for family in params.families]
    finally:
        _TRAINING_SLOTS.pop(runtime.flow_run.id, None)


def _chain(params: Params, family: str, data_version: str) -> dict[str, PrefectFuture]:
    trained = train.submit(params, family, data_version)
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
