"""``train_loop_per_worker``: what every Ray Train worker runs."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from components.data.images import save_image_grid
from components.families import Family, build_family
from components.training.allocator import keep_freed_memory
from components.training.checkpoint import HISTORY_FILE, TrainingState, read_history, restore_into, save_checkpoint
from components.training.launcher import quiet_worker_logs
from components.training.loop import (LoopSettings, Precision, agree_step, first_non_finite, restore_rng, rng_state,
                                      run_iteration, wrap_for_data_parallel)
from components.training.sampler import ShardSampler
from components.training.sampling import translation_grid

GRID_SEED = 1234  # the same latents at every step, so grids show progress rather than noise


def train_loop_per_worker(config: dict[str, Any]) -> None:
    settings: LoopSettings = config["settings"]
    quiet_worker_logs()  # again: Ray Train configures its worker logger after the process setup hook
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(settings.threads)
    keep_freed_memory()  # this function runs in a thread, whose malloc arena would refault each step's memory
    torch.manual_seed(settings.seed)  # identical initial weights on every rank
    device = ray.train.torch.get_device()

    family = build_family(settings.family, settings.spec, settings.overrides)
    family.nets.to(device)
    optimizers = family.build_optimizers()
    arrays = ray.get(config["data_ref"])
    sampler = ShardSampler(arrays["images"], arrays["labels"], rank, world, settings.batch_size, settings.seed,
                           arrays["inputs"], arrays["label_maps"], arrays.get("domains"), arrays.get("attributes"),
                           arrays.get("attribute_mask"), arrays.get("labelled"),
                           getattr(family.config, "labelled_share", 0.0))
    torch.manual_seed(settings.seed * 7919 + rank + 1)  # distinct latents per rank
    state, history = _resume(family, optimizers, sampler, rank, world, config.get("fallback_checkpoint"))
    precision = Precision(settings.precision, device)
    precision.load_state_dict(state.scaler)
    nets = wrap_for_data_parallel(family, device, world, settings.channels_last, settings.compile)
    phases = family.phases()
    progress = _Progress(rank, config.get("progress"), state.step, history)

    started = time.perf_counter()
    resumed_elapsed = state.elapsed_s
    while not settings.run_is_over(state.step, state.elapsed_s):
        step = state.step
        family.set_progress(settings.fraction_done(step, state.elapsed_s))
        logs, consumed = run_iteration(step, phases, nets, optimizers, sampler, device, precision,
                                       settings.channels_last)
        progress.count(consumed * world)
        bad = first_non_finite(logs)
        diverged, elapsed = agree_step(bad is not None, resumed_elapsed + time.perf_counter() - started, world)
        if diverged:
            reason = f"diverged at step {step + 1}: non-finite loss {bad or 'on another worker'}"
            ray.train.report(progress.send({"status": "diverged", "reason": reason, "step": step + 1, **_finite(logs)}))
            return
        done = step + 1
        state.step, state.elapsed_s = done, elapsed
        over = settings.run_is_over(done, elapsed)
        if done % settings.sample_every == 0 and rank == 0 and config.get("samples_dir"):
            images, per_row = _grid(family, sampler)
            save_image_grid(images, Path(config["samples_dir"]) / f"step_{done:07d}.png", per_row)
        if done % settings.checkpoint_every == 0 or over:
            metrics = progress.metrics(done, logs, elapsed)
            state.scaler = precision.state_dict()
            _report_checkpoint(family, optimizers, sampler, state, settings, metrics, progress.history, rank, world)
        elif done % settings.report_every == 0:
            progress.metrics(done, logs, elapsed)  # to the driver's queue and the history only: ray.train.report
            # is a barrier across workers through the controller, and costs more than the steps between reports
    if progress.start == state.step:  # resumed a run that had already ended: nothing new was reported
        ray.train.report(progress.send({"status": "finished", "step": state.step, "start_step": state.step,
                                        "elapsed_s": state.elapsed_s}))


def _resume(family: Family, optimizers: dict, sampler: ShardSampler, rank: int, world: int,
            fallback: "ray.train.Checkpoint | None" = None) -> tuple[TrainingState, list[dict]]:
    # Ray's own record of the run first; else the newest complete checkpoint in storage (Ray's record is written
    # after the upload, so a store lost in between leaves a checkpoint Ray does not know of)
    checkpoint = ray.train.get_checkpoint() or fallback
    if checkpoint is None:
        return TrainingState(), []
    with checkpoint.as_directory() as directory:
        state = restore_into(directory, family, optimizers)
        history = read_history(directory)
    per_rank = state.rng.get("ranks") if isinstance(state.rng, dict) else None
    if per_rank is not None and len(per_rank) == world:
        restore_rng(per_rank[rank], sampler)
    return state, [row for row in history if row.get("step", 0) <= state.step]


def _report_checkpoint(family: Family, optimizers: dict, sampler: ShardSampler, state: TrainingState,
                       settings: LoopSettings, metrics: dict, history: list[dict], rank: int, world: int) -> None:
    mine = (rng_state(sampler), ray.get_runtime_context().get_node_id())
    gathered = [mine]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
    ranks = [rng for rng, _ in gathered]
    name = f"checkpoint_{state.step:07d}"
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    with tempfile.TemporaryDirectory(prefix="ganzoo-ckpt-") as tmp:
        state.rng = {"ranks": ranks}
        images, per_row = _grid(family, sampler)
        save_image_grid(images, Path(tmp) / "samples.png", per_row)
        (Path(tmp) / HISTORY_FILE).write_text(json.dumps(history))
        save_checkpoint(tmp, family, optimizers, state,
                        extra={**settings.meta, "worker_nodes": [node for _, node in gathered]})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)


def _grid(family: Family, sampler: ShardSampler, n: int = 64) -> tuple[torch.Tensor, int | None]:
    """(images, images per row): 64 samples, or for a translation family 8 rows of input | output | target."""
    was_training = family.nets.training
    family.nets.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(GRID_SEED)
        if family.translates:
            grid = translation_grid(family, sampler.first_rows(8).to(family.device))
        else:
            grid = family.generate(n, family.sample_conditions(n)).cpu(), None
    family.nets.train(was_training)
    return grid


def _finite(logs: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in logs.items() if v == v and abs(v) != float("inf")}


class _Progress:
    """Step counter, images/s and the loss history; rank 0 sends each report to the driver's progress bar.

    The history (one row per report) travels inside every checkpoint, so the
    loss curves of a resumed run still start at step 1.
    """

    def __init__(self, rank: int, queue: Any, start: int, history: list[dict]):
        self.start, self.images, self.since = start, 0, time.perf_counter()
        self.queue = queue if rank == 0 else None
        self.history = history

    def count(self, images: int) -> None:
        self.images += images

    def metrics(self, step: int, logs: dict[str, float], elapsed_s: float) -> dict[str, Any]:
        interval = time.perf_counter() - self.since
        rate = self.images / interval if interval > 0 else 0.0
        self.images, self.since = 0, time.perf_counter()
        self.history.append({"step": step, "images_per_s": rate, "elapsed_s": elapsed_s, **logs})
        return self.send({"status": "running", "step": step, "start_step": self.start, "images_per_s": rate,
                          "elapsed_s": elapsed_s, **logs})

    def send(self, metrics: dict[str, Any]) -> dict[str, Any]:
        if self.queue is not None:
            self.queue.put_nowait(metrics)
        return metrics
