"""The per-worker training loop: family-agnostic, it runs the phases a family declares.

This is the one seam with Ray Train (context, report, checkpoint). Everything
family-specific (networks, losses, n_critic, regularisation intervals) comes
from the family's phases.
"""

from __future__ import annotations

import contextlib

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from components.families import DataSpec, Family, ImageBatch, Phase
from components.training.sampler import ShardSampler


@dataclass
class LoopSettings:
    """What a worker needs besides the data; built by the launcher from params."""

    family: str
    overrides: dict[str, Any]
    spec: DataSpec
    steps: int
    batch_size: int
    threads: int
    seed: int
    checkpoint_every: int
    report_every: int
    sample_every: int
    meta: dict[str, Any] = field(default_factory=dict)  # written beside every checkpoint


def wrap_for_data_parallel(family: Family, device: torch.device, world: int) -> dict[str, nn.Module]:
    """Each network in its own DDP wrapper, so one network's update never syncs another's gradients."""
    family.nets.to(device)
    if world == 1:
        return dict(family.nets.items())
    ids = [device.index] if device.type == "cuda" else None
    return {
        name: DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False,
                                      gradient_as_bucket_view=True)
        if any(p.requires_grad for p in module.parameters()) else module
        for name, module in family.nets.items()
    }


def run_phase(phase: Phase, batch: ImageBatch, nets: dict[str, nn.Module],
              optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
    """One update of ``phase.modules``; the other networks neither keep nor sync gradients."""
    for name, net in nets.items():
        net.requires_grad_(name in phase.modules)
    for name in phase.modules:
        optimizers[name].zero_grad(set_to_none=True)
    with contextlib.ExitStack() as frozen:
        for name, net in nets.items():
            if name not in phase.modules and isinstance(net, DistributedDataParallel):
                frozen.enter_context(net.no_sync())
        loss, logs = phase.loss(batch, nets)
        loss.backward()
    for name in phase.modules:
        optimizers[name].step()
    if phase.after_step is not None:
        phase.after_step(nets)
    return logs


def run_iteration(step: int, phases: list[Phase], nets: dict[str, nn.Module],
                  optimizers: dict[str, torch.optim.Optimizer], sampler: ShardSampler,
                  device: torch.device) -> tuple[dict[str, float], int]:
    """All phases due at ``step``; returns the last logs of each phase and the real images drawn."""
    logs: dict[str, float] = {}
    images, batch = 0, None
    for phase in phases:
        if not phase.runs_at(step):
            continue
        for _ in range(phase.repeats):
            if phase.uses_data or batch is None:
                batch = sampler.next_batch().to(device)
                images += len(batch)
            logs.update(run_phase(phase, batch, nets, optimizers))
    return logs, images


def first_non_finite(logs: dict[str, float]) -> str | None:
    return next((f"{k}={v}" for k, v in logs.items() if not math.isfinite(v)), None)


def agree_diverged(local_bad: bool, world: int) -> bool:
    """True on every rank if any rank saw a non-finite loss, so all ranks stop at the same step."""
    if world == 1:
        return local_bad
    flag = torch.tensor([1.0 if local_bad else 0.0])
    dist.all_reduce(flag)
    return bool(flag.item() > 0)


def rng_state(sampler: ShardSampler) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), **sampler.state_dict()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, torch.Tensor], sampler: ShardSampler) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    sampler.load_state_dict(state)
