"""Exponential moving averages of a network's weights, for families that sample from the average.

The average is a copy whose parameters are buffers (``buffers_only_copy``), so no
optimizer, ``requires_grad_`` switch or DDP wrapper treats it as trainable, and it
is checkpointed with the family's other networks.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def ema_decay_at(step: int | Tensor, decay: float, warmup: bool = True) -> float:
    """The EMA's decay at update ``step``: ``decay``, or with ``warmup`` min(decay, (1 + t) / (10 + t)).

    The warm-up (TensorFlow's ExponentialMovingAverage with num_updates) lets
    the average leave the initial weights within a short run: 0.999 alone
    still gives them weight 0.999^600 = 0.55 after 600 iterations. It reaches
    0.999 after 8,991 updates, so a run of a paper's length (100k) averages
    as the paper does.
    """
    return min(decay, (1.0 + float(step)) / (10.0 + float(step))) if warmup else decay


@torch.no_grad()
def ema_update_(averages: list[Tensor], values: list[Tensor], decay: float) -> None:
    """average <- decay * average + (1 - decay) * value, in place, pairwise."""
    for average, value in zip(averages, values):
        average.lerp_(value.detach(), 1.0 - decay)


def buffers_only_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose parameters are buffers: it computes the same, but no optimizer, autograd
    switch (``requires_grad_``) or DistributedDataParallel wrapper treats its weights as trainable."""
    shadow = copy.deepcopy(net)
    for module in shadow.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None:
                del module._parameters[name]
                module.register_buffer(name, parameter.detach().clone())
    return shadow


class WithEMA(nn.Module):
    """A trained network (``net``, what ``forward`` runs) with its exponential moving average (``ema``).

    ``steps`` counts the EMA updates, one per training iteration.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.ema = buffers_only_copy(net)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, *args: Tensor) -> Tensor:
        return self.net(*args)

    @torch.no_grad()
    def update_ema(self, decay: float, warmup: bool = False) -> None:
        """One EMA update with ``decay`` (warmed up by ``ema_decay_at`` when asked); counts the step."""
        decay = ema_decay_at(self.steps, decay, warmup)
        parameters, shadow = dict(self.net.named_parameters()), dict(self.ema.named_buffers())
        ema_update_([shadow[name] for name in parameters], list(parameters.values()), decay)
        self.steps += 1


class WeightAverage(nn.Module):
    """The moving average of another network's weights, kept beside it (e.g. ``G_ema`` beside ``G``).

    ``update`` moves the averaged weights toward the network's and copies its
    other buffers (batch-norm statistics), which are estimates, not trained
    weights; ``updates`` counts the updates for the decay's warm-up.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.average = buffers_only_copy(net)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, *args: Tensor) -> Tensor:
        return self.average(*args)

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float, warmup: bool = True) -> None:
        decay = ema_decay_at(self.updates, decay, warmup)
        parameters, buffers = dict(net.named_parameters()), dict(net.named_buffers())
        for name, average in self.average.named_buffers():
            if name in parameters:
                average.lerp_(parameters[name].detach(), 1.0 - decay)
            else:
                average.copy_(buffers[name])
        self.updates += 1


AVERAGE_OF_G = "G_ema"  # the name families give G's moving average among their networks


def check_ema_decay(decay: float) -> None:
    """A config's ``__post_init__`` check, so a bad decay fails when the params load, not when training starts."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) (0 samples from G itself), got {decay}")


def with_generator_average(nets: dict[str, nn.Module], decay: float) -> dict[str, nn.Module]:
    """``nets`` and, when ``decay`` > 0, ``G_ema``: the moving average of ``nets["G"]``, starting at G's weights."""
    check_ema_decay(decay)
    return {**nets, AVERAGE_OF_G: WeightAverage(nets["G"])} if decay > 0 else nets
