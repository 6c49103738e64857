"""The retrain pipeline's stages, shared by the Prefect flow, the CLI and ``dvc repro``.

Each stage reads what the previous one left in ``<reports_dir>/<family>/`` and
writes its own result there, so a stage can run alone (``ganzoo evaluate``),
from DVC, or again after a crash without redoing the stages before it.

  training.json   the training outcome (run, checkpoint, status) and its lineage
  metrics.json    the evaluation report
  samples.png     a grid of the final generator's images
  losses.png      the loss curves of the whole run
  registry.json   the registered model version and the promotion decision
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from components.config import Params
from components.errors import GanzooError, StoreUnavailableError

TRAINING_FILE, METRICS_FILE, REGISTRY_FILE = "training.json", "metrics.json", "registry.json"
TIMINGS_FILE = "timings.json"  # seconds per stage: per family under reports_dir/<family>, the flow's beside them
SAMPLES_FILE, LOSSES_FILE = "samples.png", "losses.png"


def summary_row(family: str, outputs: dict[str, dict[str, Any]], failed_stage: str | None = None,
                reason: str = "") -> dict[str, Any]:
    """One row of the retrain summary from the outputs of the stages that completed."""
    training = outputs.get("train", {})
    metrics = outputs.get("evaluate", {}).get("metrics", {})
    decision = outputs.get("promote", {})
    status = "finished" if failed_stage is None else ("diverged" if "diverged" in reason else "failed")
    if "skip" in outputs:
        skip = outputs["skip"]
        return {"family": family, "status": "skipped", "failed_stage": None, "reason": skip["reason"], "steps": 0,
                "fid": skip.get("fid"), "kid": skip.get("kid"), "precision": None, "recall": None,
                "version": skip["version"], "decision": "skipped"}
    return {
        "family": family,
        "status": status,
        "failed_stage": failed_stage,
        "reason": reason or decision.get("reason", ""),
        "steps": training.get("step", 0),
        **{key: metrics.get(key) for key in ("fid", "kid", "precision", "recall")},
        "version": decision.get("version", ""),
        "decision": decision.get("decision", ""),
    }


def unchanged_champion(params: Params, family: str, data_version: str) -> dict[str, Any] | None:
    """The family's champion if it was trained on this data version with these params, else None.

    Retraining it would reproduce the same model (same data, hyperparameters and
    seed), so the scheduled retrain skips the family; the skip is recorded as a
    tag on the champion version.
    """
    import time

    from components.registry.promotion import alias_version
    from components.registry.tracking import client_for, configure

    configure(params.registry)
    client, name = client_for(params.registry), model_name(params, family)
    try:
        version = alias_version(client, name, params.registry.champion_alias)
    except GanzooError:  # the model is not registered yet
        return None
    if version is None:
        return None
    tags = client.get_model_version(name, version).tags
    if tags.get("data_version") != data_version or tags.get("params_hash") != params.params_hash(family):
        return None
    reason = f"champion version {version} was trained on data {data_version} with the same params"
    client.set_model_version_tag(name, version, "ganzoo.last_skipped",
                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return {"model": name, "version": version, "decision": "skipped", "reason": reason,
            "fid": _float_tag(tags, "fid"), "kid": _float_tag(tags, "kid")}


def _float_tag(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def start_cluster(params: Params) -> int:
    """One Ray connection for the whole flow (local cluster, or ``train.ray_address``).

    Returns how many training jobs the cluster holds at once. Jobs beyond that
    would wait for resources inside Ray Train and fail its worker-group start
    timeout, so the flow queues them itself.
    """
    import ray

    from components.training.launcher import ensure_ray

    ensure_ray(params.train.ray_address)
    t = params.train
    resources = ray.cluster_resources()
    slots = int(resources.get("CPU", 0) // (t.workers * t.cpus_per_worker))
    if t.gpus_per_worker > 0:
        slots = min(slots, int(resources.get("GPU", 0) // (t.workers * t.gpus_per_worker)))
    return max(1, slots)


def family_dir(params: Params, family: str) -> Path:
    from components.families import get_family

    get_family(family)  # a registered name only: '../x' from the command line never leaves reports_dir
    return Path(params.evaluation.reports_dir) / family


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def timed_stage(directory: Path, stage: str) -> Iterator[None]:
    """Record when ``stage`` ran (epoch seconds, start and end) once it completes, in ``directory``/timings.json:
    the intervals benchmarks/pipeline_overhead.py takes out of a flow's wall time."""
    start = time.time()
    yield
    path = directory / TIMINGS_FILE
    try:
        timings = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        timings = {}
    timings[stage] = {"start": start, "end": time.time()}
    _write_json(path, timings)


def _timed(stage: str, per_family: bool = True) -> Callable:
    """Decorate a stage ``(params, family, ...)`` (or, ``per_family=False``, ``(params, ...)``) with timed_stage."""
    def decorate(run: Callable) -> Callable:
        @functools.wraps(run)
        def timed(params: Params, *args: Any, **kwargs: Any) -> Any:
            reports = Path(params.evaluation.reports_dir)
            directory = family_dir(params, kwargs.get("family") or args[0]) if per_family else reports
            with timed_stage(directory, stage):
                return run(params, *args, **kwargs)
        return timed
    return decorate


def _read_json(path: Path, produced_by: str) -> dict[str, Any]:
    if not path.is_file():
        raise GanzooError(f"{path}: not found; run `{produced_by}` first")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GanzooError(f"{path}: unreadable ({exc})") from None


# -- data ---------------------------------------------------------------------------------------

def prepare_data(params: Params) -> dict[str, Any]:
    from components.data import prepare_dataset

    d = params.data
    return prepare_dataset(d.source, d.prepared_dir, d.image_size, d.s3_endpoint_url, d.attributes)


@_timed("version-data", per_family=False)
def version_data(params: Params, project_root: Path) -> dict[str, Any]:
    """Prepare the data and version it with DVC; returns the DataVersion as a dict (md5, pushed, ...)."""
    from components.data.versioning import version_prepared

    prepare_data(params)
    d = params.data
    version = version_prepared(project_root, Path(d.prepared_dir), d.dvc_remote, d.dvc_remote_endpoint_url)
    return version.to_dict()


def current_data_version(params: Params) -> str:
    """The DVC md5 of the prepared data when a stage commit recorded one, else the prepared files' hash."""
    from components.data import load_prepared
    from components.data.versioning import current_data_version as dvc_md5, find_project_root

    prepared_dir = Path(params.data.prepared_dir)
    try:
        md5 = dvc_md5(find_project_root(prepared_dir.parent), prepared_dir)
    except GanzooError:
        md5 = None
    return md5 or f"sha256:{load_prepared(prepared_dir, verify=False).data_hash()[:32]}"


# -- training -----------------------------------------------------------------------------------

@_timed("train")
def train_stage(params: Params, family: str, data_version: str, show_progress: bool = False,
                run_name: str | None = None) -> dict[str, Any]:
    """Train (or resume, or find finished) the family's run; record the outcome in training.json."""
    from components.data import load_prepared
    from components.training.launcher import train_family

    prepared = load_prepared(params.data.prepared_dir)
    outcome = train_family(params, family, prepared, run_name=run_name, show_progress=show_progress)
    if outcome.checkpoint and params.train.storage_path.startswith("s3://"):
        outcome.checkpoint = f"s3://{outcome.checkpoint.removeprefix('s3://')}"  # pyarrow paths lack the scheme
    record = {
        **dataclasses.asdict(outcome),
        "data_version": data_version,
        "params_hash": params.params_hash(family),
        "seed": params.train.seed,
        "dataset": params.data.dataset_name(),
    }
    _write_json(family_dir(params, family) / TRAINING_FILE, record)
    return record


def fetch_checkpoint(params: Params, checkpoint: str) -> str:
    """A local directory holding ``checkpoint``: itself, or a cached copy of an s3:// checkpoint."""
    if not checkpoint.startswith("s3://"):
        return checkpoint
    from pyarrow import fs as pafs

    from components.training.checkpoint import COMPLETE_FILE
    from components.training.launcher import storage_for

    run, name = checkpoint.rstrip("/").rsplit("/", 2)[-2:]
    local = Path(params.evaluation.cache_dir) / "checkpoints" / run / name
    if (local / COMPLETE_FILE).is_file():  # checkpoints never change once complete
        return str(local)
    _, filesystem = storage_for(checkpoint, params.train.storage_endpoint_url)
    source = checkpoint.removeprefix("s3://") if filesystem else checkpoint
    tmp = local.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)  # copy_files makes only the subfolders it meets, not the destination itself
    pafs.copy_files(source, str(tmp), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
    if not (tmp / COMPLETE_FILE).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise GanzooError(f"{checkpoint}: not a complete ganzoo checkpoint")
    os.replace(tmp, local)
    return str(local)


def read_training(params: Params, family: str) -> dict[str, Any]:
    record = _read_json(family_dir(params, family) / TRAINING_FILE, f"ganzoo train --family {family}")
    if record.get("status") != "finished":
        raise GanzooError(f"{family}: training {record.get('status')}: {record.get('reason')}")
    return record


# -- evaluation ---------------------------------------------------------------------------------

@_timed("evaluate")
def evaluate_stage(params: Params, family: str) -> dict[str, Any]:
    """Score the family's final checkpoint; write metrics.json, samples.png and losses.png."""
    from components.data import load_prepared
    from components.evaluation.evaluate import evaluate_checkpoint, write_loss_curves
    from components.training.checkpoint import read_history

    training = read_training(params, family)
    checkpoint = fetch_checkpoint(params, training["checkpoint"])
    prepared = load_prepared(params.data.prepared_dir)
    report = evaluate_checkpoint(checkpoint, prepared, training["data_version"], params.evaluation)
    out = family_dir(params, family)
    grid = Path(checkpoint) / "samples.png"
    if grid.is_file():
        shutil.copyfile(grid, out / SAMPLES_FILE)
    history = read_history(checkpoint)
    if history:
        write_loss_curves(history, out / LOSSES_FILE)
    report.write(out / METRICS_FILE)
    return json.loads((out / METRICS_FILE).read_text())


def read_evaluation(params: Params, family: str) -> dict[str, Any]:
    return _read_json(family_dir(params, family) / METRICS_FILE, f"ganzoo evaluate --family {family}")


# -- registry -----------------------------------------------------------------------------------

def model_name(params: Params, family: str) -> str:
    from components.registry.register import registered_model_name

    return registered_model_name(params.data.dataset_name(), family)


@_timed("register")
def register_stage(params: Params, family: str) -> dict[str, Any]:
    """Log the run to MLflow and register its generator (once per data version, params, family and seed)."""
    from components.registry.register import register_version
    from components.registry.runs import log_family_run

    training = read_training(params, family)
    evaluation = read_evaluation(params, family)
    refuse_collapsed(params, family, evaluation)
    out = family_dir(params, family)
    training = {**training, "checkpoint_uri": training["checkpoint"],
                "checkpoint": fetch_checkpoint(params, training["checkpoint"])}
    try:
        run = log_family_run(params, family, training, evaluation, artifacts=[out / SAMPLES_FILE, out / LOSSES_FILE,
                                                                              out / METRICS_FILE])
        version = register_version(params, family, training, evaluation, run)
    except StoreUnavailableError as exc:
        raise StoreUnavailableError(f"{exc}; the trained checkpoint is kept: `ganzoo register --run "
                                    f"{training.get('run_name')}` registers it when the store is back") from exc
    record = {"model": model_name(params, family), "version": str(version)}
    _write_json(out / REGISTRY_FILE, record)
    return record


def refuse_collapsed(params: Params, family: str, evaluation: dict[str, Any]) -> None:
    """Raise DivergedError for a noise-to-image family whose generator collapsed (see ``collapse_reason``)."""
    from components.data import load_prepared
    from components.errors import DivergedError
    from components.families import get_family
    from components.families.base import TRANSLATION_TASKS
    from components.registry.register import collapse_reason

    if get_family(family).task in TRANSLATION_TASKS:
        return
    classes = load_prepared(params.data.prepared_dir, verify=False).num_classes
    reason = collapse_reason(evaluation.get("metrics", {}), classes, params.registry.min_classes_covered)
    if reason:
        raise DivergedError(f"{family}: not registered: {reason}")


def family_of_run(params: Params, run_name: str) -> str:
    """The family whose last training (``<reports_dir>/<family>/training.json``) was the run ``run_name``."""
    reports = Path(params.evaluation.reports_dir)
    known: dict[str, str] = {}
    for record_file in sorted(reports.glob(f"*/{TRAINING_FILE}")):
        try:
            known[json.loads(record_file.read_text()).get("run_name", "")] = record_file.parent.name
        except (OSError, json.JSONDecodeError):
            continue
    if run_name not in known:
        listed = ", ".join(sorted(k for k in known if k)) or "none"
        raise GanzooError(f"--run {run_name}: no training record of that run under {reports} (runs there: {listed})")
    return known[run_name]


def register_run(params: Params, family: str) -> dict[str, Any]:
    """Register (evaluating first if that never finished) and promote the family's last finished training."""
    read_training(params, family)  # one line when there is none, or it did not finish
    training_file = family_dir(params, family) / TRAINING_FILE
    metrics_file = family_dir(params, family) / METRICS_FILE
    if not metrics_file.is_file() or metrics_file.stat().st_mtime < training_file.stat().st_mtime:
        evaluate_stage(params, family)
    register_stage(params, family)
    return promote_stage(params, family)


@_timed("promote")
def promote_stage(params: Params, family: str, version: str | None = None) -> dict[str, Any]:
    """Apply the promotion gate to ``version`` (default: the one this family's last register made).

    A champion measured under another protocol (another extractor, data version
    or sample count) is evaluated again under the challenger's before the two
    are compared: metrics from different protocols are never compared.
    """
    from components.registry.promotion import REMEASURE, measurement_from_report, promote_version

    out = family_dir(params, family)
    if version is None:
        version = _read_json(out / REGISTRY_FILE, f"ganzoo run --family {family}")["version"]
    name = model_name(params, family)
    result = promote_version(params, name, version)
    if result["decision"] == REMEASURE:
        report = _evaluate_champion(params, result["champion_checkpoint"], family)
        result = promote_version(params, name, version, champion=measurement_from_report(result["champion"], report))
    record = {"model": name, "version": str(version), **result}
    _write_json(out / REGISTRY_FILE, record)
    return record


def _evaluate_champion(params: Params, checkpoint: str | None, family: str) -> dict[str, Any]:
    from components.data import load_prepared
    from components.evaluation.evaluate import evaluate_checkpoint

    if not checkpoint:
        raise GanzooError(f"{family}: the champion has no checkpoint tag to evaluate it under the new protocol")
    data_version = read_training(params, family)["data_version"]
    prepared = load_prepared(params.data.prepared_dir)
    local = fetch_checkpoint(params, checkpoint)
    return json.loads(evaluate_checkpoint(local, prepared, data_version, params.evaluation).to_json())


def rollback_stage(params: Params, family: str) -> dict[str, Any]:
    """Make the previous champion of the family's model the champion again."""
    from components.registry.promotion import rollback

    return rollback(params, model_name(params, family))
