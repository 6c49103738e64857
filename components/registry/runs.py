"""One MLflow run per family per retrain: params, loss curves, evaluation, artifacts and the generator.

The run is found again by its idempotency key (data version, params hash,
family, seed), so a retrain re-run after a crash reuses the finished run
instead of logging a second one.

The generator is logged in MLflow's ``pt2`` format (``torch.export`` with a
dynamic batch dimension): MLflow 3 refuses to unpickle models unless
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is set, and a ``pt2`` graph loads with
plain torch, without ganzoo's code. The export is loaded back and run at two
other batch sizes before the run is marked finished, so a family whose
generator pins the batch size fails here, not at serving time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from components.config import Params
from components.errors import GanzooError
from components.registry.tracking import client_for, configure, looks_secret, redact, with_store_retries

KEY_TAG = "ganzoo.key"
MODEL_URI_TAG = "ganzoo.model_uri"
GENERATOR_NAME = "generator"
EXAMPLE_BATCH = 8  # > 1: torch.export specialises size-1 dimensions, which would pin the batch size
LOSS_PREFIX = "train/"
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


@dataclass(frozen=True)
class LoggedRun:
    """The MLflow run of one family's retrain and the generator logged in it."""

    run_id: str
    model_uri: str
    key: str
    latent_dim: int
    num_classes: int
    image_shape: tuple[int, ...]
    reused: bool = False


def idempotency_key(data_version: str, params_hash: str, family: str, seed: int) -> str:
    """sha256 of what makes two retrains the same: same data, params, family and seed."""
    blob = json.dumps([str(data_version), str(params_hash), str(family), int(seed)])
    return hashlib.sha256(blob.encode()).hexdigest()


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD of the git repository around ``cwd`` (default: the process's), else ``unknown``."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else "unknown"


# -- params ---------------------------------------------------------------------------------------

def flat_params(params: Params, family: str) -> dict[str, str]:
    """params.yaml flattened to ``train.steps``-style keys, plus ``family.<field>`` of the resolved config.

    Credentials never reach MLflow: keys that look like one are dropped, URLs
    lose their user:password, and a value equal to a secret-named environment
    variable is dropped whatever its key.
    """
    flat = _flatten(params.model_dump(mode="json"))
    flat.update(_flatten({"family": _jsonable(dataclasses.asdict(params.family_config(family)))}))
    values = {key: _param_value(value) for key, value in flat.items() if not looks_secret(key)}
    secrets = _secret_env_values()
    return {key: value for key, value in values.items() if value not in secrets}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return redact(text) if "://" in text else text


def _secret_env_values() -> set[str]:
    # short values ("1", "true") are settings, not secrets, and would drop ordinary params by coincidence
    return {value for name, value in os.environ.items() if looks_secret(name) and len(value) >= 8}


# -- tags and metrics -----------------------------------------------------------------------------

def run_tags(params: Params, family: str, training: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, str]:
    """The lineage of one retrain, as run tags (copied onto the model version at registration)."""
    data_version = _required(training, "data_version", family)
    params_hash = str(training.get("params_hash") or params.params_hash(family))
    seed = int(training.get("seed", params.train.seed))
    protocol = evaluation.get("protocol", {})
    return {
        "family": family,
        "dataset": str(training.get("dataset") or params.data.dataset_name()),
        "data_version": str(data_version),
        "params_hash": params_hash,
        "seed": str(seed),
        "git_commit": git_commit(),
        "extractor": str(evaluation.get("extractor", protocol.get("extractor", "unknown"))),
        "checkpoint": str(training.get("checkpoint_uri") or _required(training, "checkpoint", family)),
        "training_run": str(training.get("run_name", "")),
        "training_step": str(training.get("step", "")),
        **{f"protocol.{name}": str(value) for name, value in protocol.items()},
        KEY_TAG: idempotency_key(data_version, params_hash, family, seed),
    }


def _required(record: dict[str, Any], key: str, family: str) -> Any:
    if not record.get(key):
        raise GanzooError(f"{family}: the training record has no {key}; run `ganzoo train --family {family}` first")
    return record[key]


def loss_metrics(history: Iterable[dict[str, Any]], timestamp_ms: int) -> list:
    """Every reported loss of every step, as MLflow metrics ``train/<loss>`` at that step."""
    from mlflow.entities import Metric

    return [Metric(f"{LOSS_PREFIX}{name}", float(value), timestamp_ms, int(row["step"]))
            for row in history for name, value in row.items()
            if name != "step" and _is_finite_number(value)]


def evaluation_metrics(evaluation: dict[str, Any], step: int, timestamp_ms: int) -> list:
    from mlflow.entities import Metric

    values = dict(evaluation.get("metrics", {}))
    if _is_finite_number(evaluation.get("extractor_accuracy")):
        values["extractor_accuracy"] = evaluation["extractor_accuracy"]
    return [Metric(name, float(value), timestamp_ms, step) for name, value in values.items()
            if _is_finite_number(value)]


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _log_in_batches(client, run_id: str, metrics: Sequence, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    entries = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(entries), 100):  # MLflow's limit of params per log_batch call
        client.log_batch(run_id, params=entries[start:start + 100])
    for start in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=list(metrics[start:start + MAX_BATCH]))


# -- the run --------------------------------------------------------------------------------------

@with_store_retries
def log_family_run(params: Params, family: str, training: dict[str, Any], evaluation: dict[str, Any],
                   artifacts: Sequence[str | Path] = ()) -> LoggedRun:
    """Log one family's retrain as one MLflow run (or find the finished run of the same key).

    ``training`` is the training record (checkpoint, data_version, params_hash,
    seed, run_name, step); ``evaluation`` the evaluation report as a dict
    (metrics, extractor, protocol); ``artifacts`` files to attach (sample grid,
    loss curves, the report file); missing ones are skipped.
    """
    import mlflow

    from components.training.checkpoint import load_family, read_history

    experiment_id = configure(params.registry)
    client = client_for(params.registry)
    tags = run_tags(params, family, training, evaluation)
    found = _finished_run(client, experiment_id, tags[KEY_TAG])
    if found is not None:
        return found
    local = str(_required(training, "checkpoint", family))  # a local copy when the run is stored on S3
    family_obj, _ = load_family(local)
    generator = family_obj.export_generator().eval()
    now = int(time.time() * 1000)
    with mlflow.start_run(experiment_id=experiment_id, run_name=tags["training_run"] or family, tags=tags) as run:
        run_id = run.info.run_id
        metrics = loss_metrics(read_history(local), now)
        metrics += evaluation_metrics(evaluation, int(training.get("step", 0)), now)
        _log_in_batches(client, run_id, metrics, flat_params(params, family))
        client.log_dict(run_id, evaluation, "evaluation/report.json")
        for path in map(Path, artifacts):
            if path.is_file():
                client.log_artifact(run_id, str(path))
        logged = _log_generator(client, generator, run_id, tags[KEY_TAG])
        client.set_tag(run_id, MODEL_URI_TAG, logged.model_uri)  # last: marks the run complete for reuse
    return logged


def _finished_run(client, experiment_id: str, key: str) -> LoggedRun | None:
    runs = client.search_runs([experiment_id], f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=10)
    for run in runs:
        tags = run.data.tags
        if MODEL_URI_TAG in tags:
            return LoggedRun(run.info.run_id, tags[MODEL_URI_TAG], key, int(tags["generator.latent_dim"]),
                             int(tags["generator.num_classes"]), tuple(json.loads(tags["generator.image_shape"])),
                             reused=True)
    return None


def _log_generator(client, generator, run_id: str, key: str) -> LoggedRun:
    import mlflow.pytorch
    import torch
    from mlflow.entities import RunTag

    example = generator.example_inputs(EXAMPLE_BATCH, seed=0)
    with torch.no_grad():
        image_shape = tuple(generator(example).shape[1:])
    shape = {"latent_dim": generator.latent_dim, "num_classes": generator.num_classes,
             "image_shape": list(image_shape)}
    info = mlflow.pytorch.log_model(
        generator, name=GENERATOR_NAME, input_example=example.numpy(), serialization_format="pt2",
        # explicit requirements: MLflow's inference of them re-loads the model in a subprocess (seconds)
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"], metadata=shape,
    )
    _check_any_batch_size(generator, info.model_uri)
    client.log_batch(run_id, tags=[RunTag(f"generator.{name}", json.dumps(value)) for name, value in shape.items()])
    return LoggedRun(run_id, info.model_uri, key, generator.latent_dim, generator.num_classes, image_shape)


def _check_any_batch_size(generator, model_uri: str) -> None:
    """The logged graph must generate batches of any size and match the eager generator."""
    import mlflow.pytorch
    import torch

    loaded = mlflow.pytorch.load_model(model_uri)
    for n in (1, 3):
        inputs = generator.example_inputs(n, seed=n)
        try:
            with torch.no_grad():
                same = torch.allclose(loaded(inputs), generator(inputs), atol=1e-4)
        except Exception as exc:
            raise GanzooError(f"{model_uri}: the exported generator fails on a batch of {n} "
                              f"({type(exc).__name__}); its forward must not fix the batch size") from None
        if not same:
            raise GanzooError(f"{model_uri}: the exported generator's output differs from the checkpoint's")
