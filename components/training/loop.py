"""The per-worker training loop: family-agnostic, it runs the phases a family declares.

This is the one seam with Ray Train (context, report, checkpoint). Everything
family-specific (networks, losses, n_critic, regularisation intervals) comes
from the family's phases.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    precision: str = "fp32"  # fp32 | bf16 | fp16, see Precision
    channels_last: bool = False
    compile: bool = False
    max_seconds: float | None = None  # training wall time: stop at whichever of steps or seconds comes first

    def run_is_over(self, step: int, elapsed_s: float) -> bool:
        """True once ``steps`` are done or, with a time budget, ``max_seconds`` of training have passed."""
        return step >= self.steps or (self.max_seconds is not None and elapsed_s >= self.max_seconds)

    def fraction_done(self, step: int, elapsed_s: float) -> float:
        """How far the run is, 0 to 1: the larger of the steps' and the seconds' share, so a schedule that
        follows it (progressive growing) ends on time whichever budget stops the run."""
        done = step / self.steps
        if self.max_seconds is not None:
            done = max(done, elapsed_s / self.max_seconds)
        return min(1.0, done)


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """How a phase runs its forward, loss and update: fp32, or under autocast to bf16 or fp16.

    fp16 also scales the loss (one GradScaler shared by every phase), since its
    small gradients would underflow; bf16 has fp32's range and needs no scaler.
    The default, fp32, is exactly the loop without autocast.
    """

    def __init__(self, setting: str = "fp32", device: torch.device | str = "cpu"):
        if setting not in AUTOCAST_DTYPES:
            raise ValueError(f"precision: expected one of {', '.join(map(repr, AUTOCAST_DTYPES))}, got {setting!r}")
        self.setting = setting
        self.dtype = AUTOCAST_DTYPES[setting]
        self.device_type = torch.device(device).type
        scaler_device = "cuda" if self.device_type == "cuda" else "cpu"
        self.scaler = torch.amp.GradScaler(scaler_device) if setting == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Step each optimizer; with a scaler, one whose gradients overflowed skips this step."""
        if self.scaler is None:
            for opt in optimizers:
                opt.step()
            return
        # GradScaler refuses an optimizer, and an update, that saw no gradient at all: opt.step() would be a no-op
        stepped = [opt for opt in optimizers if _has_grads(opt)]
        for opt in stepped:
            self.scaler.step(opt)
        if stepped:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state (plain numbers, so weights_only loads accept it); empty without a scaler."""
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Resume the scaler; a checkpoint without scaler state (fp32, bf16, older runs) starts a fresh one."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


FP32 = Precision()  # run_phase's default: stateless, so sharing it is safe


def _has_grads(opt: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for group in opt.param_groups for p in group["params"])


def wrap_for_data_parallel(family: Family, device: torch.device, world: int, channels_last: bool = False,
                           compile: bool = False) -> dict[str, nn.Module]:
    """Each network in its own DDP wrapper, so one network's update never syncs another's gradients.

    ``compile`` compiles the returned modules, never ``family.nets`` itself: its
    state_dict keys (checkpoints), generation and export stay those of the bare networks.
    """
    family.nets.to(device)
    if channels_last:  # changes strides only: the weights' values and state_dict keys stay
        family.nets.to(memory_format=torch.channels_last)
    trained = {name: any(p.requires_grad for p in module.parameters()) for name, module in family.nets.items()}
    nets = dict(family.nets.items())
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        nets = {name: DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False,
                                              gradient_as_bucket_view=True) if trained[name] else module
                for name, module in nets.items()}
    if compile:
        nets = {name: torch.compile(module) if trained[name] else module for name, module in nets.items()}
    return nets


def _ddp(net: nn.Module) -> DistributedDataParallel | None:
    """The DDP wrapper of ``net``, also when torch.compile wraps it in turn."""
    inner = getattr(net, "_orig_mod", net)
    return inner if isinstance(inner, DistributedDataParallel) else None


def to_channels_last(batch: ImageBatch) -> ImageBatch:
    """The batch with its 4-D tensors (images, inputs) in channels_last; label maps and labels as they are."""
    def convert(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() == 4:
            return value.contiguous(memory_format=torch.channels_last)
        return value

    return dataclasses.replace(batch, **{f.name: convert(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


def run_phase(phase: Phase, batch: ImageBatch, nets: dict[str, nn.Module],
              optimizers: dict[str, torch.optim.Optimizer], precision: Precision = FP32) -> dict[str, float]:
    """One update of ``phase.modules``; the other networks neither keep nor sync gradients."""
    for name, net in nets.items():
        net.requires_grad_(name in phase.modules)
    for name in phase.modules:
        optimizers[name].zero_grad(set_to_none=True)
    with contextlib.ExitStack() as frozen:
        for name, net in nets.items():
            ddp = _ddp(net)
            if name not in phase.modules and ddp is not None:
                frozen.enter_context(ddp.no_sync())
        with precision.autocast():  # forward and loss only: backward runs in the forward's dtypes anyway
            loss, logs = phase.loss(batch, nets)
        precision.backward(loss)
    precision.step([optimizers[name] for name in phase.modules])
    if phase.after_step is not None:
        phase.after_step(nets)
    return logs


def run_iteration(step: int, phases: list[Phase], nets: dict[str, nn.Module],
                  optimizers: dict[str, torch.optim.Optimizer], sampler: ShardSampler,
                  device: torch.device, precision: Precision = FP32,
                  channels_last: bool = False) -> tuple[dict[str, float], int]:
    """All phases due at ``step``; returns the last logs of each phase and the real images drawn."""
    logs: dict[str, float] = {}
    images, batch = 0, None
    for phase in phases:
        if not phase.runs_at(step):
            continue
        for _ in range(phase.repeats):
            if phase.uses_data or batch is None:
                batch = sampler.next_batch().to(device)
                if channels_last:
                    batch = to_channels_last(batch)
                images += len(batch)
            logs.update(run_phase(phase, batch, nets, optimizers, precision))
    return logs, images


def first_non_finite(logs: dict[str, float]) -> str | None:
    return next((f"{k}={v}" for k, v in logs.items() if not math.isfinite(v)), None)


def agree_step(local_bad: bool, elapsed_s: float, world: int) -> tuple[bool, float]:
    """(any rank diverged, the largest elapsed time of any rank), the same on every rank.

    One all-reduce per step serves both: every rank then stops at the same step, for a
    non-finite loss or for the time budget, and follows one schedule of ``fraction_done``.
    """
    if world == 1:
        return local_bad, elapsed_s
    flags = torch.tensor([1.0 if local_bad else 0.0, elapsed_s], dtype=torch.float64)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0].item() > 0), float(flags[1].item())


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
