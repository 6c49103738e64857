"""Launch one family's training on Ray Train (local cluster or ``train.ray_address``)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.config import Params
from components.data import PreparedDataset
from components.families import DataSpec, get_family
from components.training.loop import LoopSettings


@dataclass
class TrainingOutcome:
    """How a family's training ended; ``checkpoint`` is the final checkpoint's path or URI."""

    family: str
    status: str  # finished | diverged | failed
    run_name: str
    run_path: str
    checkpoint: str | None = None
    step: int = 0
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "finished"


PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def ensure_ray(address: str | None = None) -> None:
    """Connect to ``address`` (``auto``, ``ray://host:10001``) or start a local cluster once per process."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")  # set inside a Ray job: join its cluster
    local_only = {} if address else {"include_dashboard": False}  # Ray refuses these when joining a cluster
    # Ray starts its workers at niceness 15, below its own services (raylet, GCS, log monitor) at 0: each time
    # one of those wakes, it preempts a training thread and the other thread waits at torch's next barrier.
    # On 2 cores that cost DCGAN a quarter of its speed; training workers run at the services' niceness.
    env_vars = {"RAY_worker_niceness": "0"}
    if not address:  # Ray Train's preemption watcher polls for node drains, which only an autoscaler makes: on
        env_vars[PREEMPTION_WATCHER_ENV] = "0"  # a local cluster it is one more actor waking every few seconds
    ray.init(address=address, logging_config=ray.LoggingConfig(log_level="WARNING"),
             runtime_env={"worker_process_setup_hook": "components.training.launcher.quiet_worker_logs",
                          "env_vars": env_vars}, **local_only)


def quiet_worker_logs() -> None:
    """Runs in every Ray worker: keep Ray Train's per-report INFO lines and the placement-group
    cleaner's state-API warnings (no dashboard runs locally) out of the user's terminal."""
    import logging

    logging.getLogger("ray.train").setLevel(logging.ERROR)
    try:  # Ray Train V2 logs each report at INFO through a logger named after its file, not its module
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def run_name_for(params: Params, family: str, data_hash: str) -> str:
    """Same family, hyperparameters, training settings and data -> same run, so a restart resumes it."""
    digest = hashlib.sha256(f"{params.params_hash(family)}:{data_hash}".encode()).hexdigest()
    return f"{family}-{digest[:10]}"


# Checkpoint storage on S3: each request is retried with the AWS SDK's exponential backoff, and a store that
# stops answering fails a request within the timeouts instead of hanging the upload (then Ray Train's
# FailureConfig restarts the workers from the last complete checkpoint, or the run fails with the reason).
S3_ATTEMPTS = 5
S3_CONNECT_TIMEOUT_S = 5.0
S3_REQUEST_TIMEOUT_S = 30.0


def storage_for(storage_path: str, endpoint_url: str | None) -> tuple[str, Any]:
    """(storage_path, pyarrow filesystem or None): pyarrow ignores AWS_ENDPOINT_URL, so pass it explicitly."""
    if not storage_path.startswith("s3://"):
        return str(Path(storage_path).resolve()), None
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return storage_path, None
    from pyarrow import fs

    scheme = "https" if endpoint.startswith("https") else "http"
    host = endpoint.split("://", 1)[-1]
    return storage_path.removeprefix("s3://"), fs.S3FileSystem(
        endpoint_override=host, scheme=scheme, connect_timeout=S3_CONNECT_TIMEOUT_S,
        request_timeout=S3_REQUEST_TIMEOUT_S, retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS))


def loop_settings(params: Params, family: str, prepared: PreparedDataset) -> LoopSettings:
    spec = DataSpec(prepared.channels, prepared.image_size, prepared.num_classes, prepared.input_channels,
                    len(prepared.map_classes), len(prepared.domain_names), len(prepared.attribute_names),
                    tuple(prepared.label_sets))
    t = params.train
    resolved = params.family_config(family)
    return LoopSettings(
        family=family, overrides=dataclasses.asdict(resolved), spec=spec, steps=t.steps,
        batch_size=t.batch_size, threads=t.cpus_per_worker, seed=t.seed, checkpoint_every=t.checkpoint_every,
        report_every=t.report_every, sample_every=t.sample_every, precision=t.precision,
        channels_last=t.channels_last, compile=t.compile, max_seconds=t.max_seconds,
        meta={"data_hash": prepared.data_hash(), "data_source": prepared.manifest.get("source"),
              "params_hash": params.params_hash(family), "seed": t.seed, "train": t.model_dump(
                  exclude={"storage_endpoint_url", "ray_address"})},
    )


def training_arrays(prepared: PreparedDataset) -> dict[str, Any]:
    """The training rows the workers shard: held-out rows of translation data stay out of training."""
    rows = slice(0, prepared.train_count)

    def part(array: Any) -> Any:
        return None if array is None else array[rows]

    return {"images": part(prepared.images), "labels": part(prepared.labels), "inputs": part(prepared.inputs),
            "label_maps": part(prepared.label_maps), "domains": part(prepared.domains),
            "attributes": part(prepared.attributes), "attribute_mask": part(prepared.attribute_mask)}


def labelled_rows(params: Params, family: str, prepared: PreparedDataset) -> Any:
    """A semi-supervised family's fixed labelled subset (its config names labelled_per_class), chosen among the
    evaluator's train rows (those real_split hands task_metrics), so no held-out label is trained on."""
    config = params.family_config(family)
    if getattr(config, "labelled_per_class", None) is None or prepared.labels is None:
        return None
    from components.data.prepared import labelled_subset
    from components.evaluation.extractors import real_split_rows

    train_rows, _ = real_split_rows(len(prepared.images), params.evaluation.seed)
    candidates = train_rows[train_rows < prepared.train_count]  # only rows the workers receive
    return labelled_subset(prepared.labels, config.labelled_per_class, config.label_seed, candidates)


def train_family(params: Params, family: str, prepared: PreparedDataset, run_name: str | None = None,
                 show_progress: bool = True) -> TrainingOutcome:
    """Train ``family`` on ``prepared`` data with Ray Train; resume the run of the same name if it exists."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from ray.util.queue import Queue

    from components.training.progress import fit_with_progress
    from components.training.worker import train_loop_per_worker

    settings = loop_settings(params, family, prepared)
    get_family(family).check_spec(settings.spec)
    t = params.train
    ensure_ray(t.ray_address)
    run_name = run_name or run_name_for(params, family, prepared.data_hash())
    storage_path, filesystem = storage_for(t.storage_path, t.storage_endpoint_url)
    local_run = None if t.storage_path.startswith("s3://") else Path(storage_path) / run_name
    run_path = str(local_run) if local_run else f"{t.storage_path.rstrip('/')}/{run_name}"
    use_gpu = t.gpus_per_worker > 0
    progress = Queue(actor_options={"num_cpus": 0})
    resources = {"CPU": t.cpus_per_worker, **({"GPU": t.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "settings": settings,
            "data_ref": ray.put({**training_arrays(prepared), "labelled": labelled_rows(params, family, prepared)}),
            "samples_dir": str(local_run / "samples") if local_run else None,
            "progress": progress,
            "fallback_checkpoint": latest_complete_checkpoint(storage_path, filesystem, run_name),
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=t.workers, use_gpu=use_gpu, resources_per_worker=resources,
                                               placement_strategy=t.placement.upper()),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    outcome = TrainingOutcome(family=family, status="failed", run_name=run_name, run_path=run_path)
    try:
        result, metrics = fit_with_progress(trainer.fit, progress, t.steps, family, show=show_progress)
    except Exception as exc:  # Ray wraps worker errors; keep the first line for the user
        outcome.reason = f"training failed: {_first_line(exc)}"
        return outcome
    finally:
        progress.shutdown()
    metrics = metrics or dict(result.metrics or {})
    outcome.metrics = metrics
    outcome.step = int(metrics.get("step", 0))
    outcome.checkpoint = result.checkpoint.path if result.checkpoint else None
    if metrics.get("status") == "diverged":
        outcome.status, outcome.reason = "diverged", metrics.get("reason")
    else:
        outcome.status = "finished"
    return outcome


def latest_complete_checkpoint(storage_path: str, filesystem: Any, run_name: str) -> Any:
    """The run's newest checkpoint in storage whose files are all there (COMPLETE, config.json, state.pt), as a
    ray.train.Checkpoint, or None. An S3 object appears only once its upload finished, so a checkpoint cut
    short by a lost store lacks one of them and is never chosen."""
    import ray.train
    from pyarrow import fs as pafs

    from components.training.checkpoint import COMPLETE_FILE, CONFIG_FILE, STATE_FILE

    filesystem = filesystem or pafs.LocalFileSystem()
    root = f"{storage_path.rstrip('/')}/{run_name}"
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError:  # an unreachable store: Ray Train meets it too and reports it
        return None
    files = {e.path for e in entries if e.type == pafs.FileType.File}
    found = []
    for path in files:
        folder, name = path.rsplit("/", 1)
        match = re.fullmatch(r"checkpoint_(\d+)", folder.rsplit("/", 1)[-1])
        if match and name == COMPLETE_FILE and {f"{folder}/{STATE_FILE}", f"{folder}/{CONFIG_FILE}"} <= files:
            found.append((int(match.group(1)), folder))
    return ray.train.Checkpoint(max(found)[1], filesystem=filesystem) if found else None


def _first_line(exc: BaseException) -> str:
    """The first line of the error, and the worker's (or Ray Train controller's) own exception when Ray wraps one."""
    inner = getattr(exc, "controller_failure", None)  # e.g. the store failing under the checkpoint bookkeeping
    if isinstance(inner, BaseException):
        head = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        detail = (str(inner).strip().splitlines() or [""])[0][:300]
        return f"{head} {type(inner).__name__}: {detail}"
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = text.splitlines()
    cause = [line.strip() for line in lines[1:] if re.match(r"^\s*[A-Za-z_.]*(Error|Exception)\b.*:", line)]
    return f"{lines[0]} {cause[-1]}" if cause and cause[-1] not in lines[0] else lines[0]
