"""The trainer's phase runner: repeats, intervals, batch reuse, divergence detection."""

import numpy as np
import torch
from torch import nn

from components.families import ImageBatch, Phase
from components.training.loop import first_non_finite, run_iteration
from components.training.sampler import ShardSampler


class CountingSampler:
    def __init__(self):
        self.drawn = 0

    def next_batch(self):
        self.drawn += 1
        return ImageBatch(torch.full((4, 1, 2, 2), float(self.drawn)))


def make_phase(name, log, **kwargs):
    def loss(batch, nets):
        log.append((name, batch.images[0, 0, 0, 0].item()))
        value = (nets[name].weight * batch.images.mean()).sum()
        return value, {f"{name}_loss": value.item()}

    return Phase(name, (name,), loss, **kwargs)


def test_repeats_draw_fresh_batches_and_generator_steps_reuse_the_last():
    nets = {"D": nn.Linear(1, 1), "G": nn.Linear(1, 1)}
    optimizers = {k: torch.optim.SGD(m.parameters(), 0.1) for k, m in nets.items()}
    log, sampler = [], CountingSampler()
    phases = [make_phase("D", log, repeats=3), make_phase("G", log, uses_data=False)]
    logs, images = run_iteration(0, phases, nets, optimizers, sampler, torch.device("cpu"))
    assert log == [("D", 1.0), ("D", 2.0), ("D", 3.0), ("G", 3.0)]
    assert images == 12 and set(logs) == {"D_loss", "G_loss"}


def test_every_skips_a_phase_between_its_steps():
    nets = {"D": nn.Linear(1, 1), "R": nn.Linear(1, 1)}
    optimizers = {k: torch.optim.SGD(m.parameters(), 0.1) for k, m in nets.items()}
    log = []
    phases = [make_phase("D", log), make_phase("R", log, every=4)]
    for step in range(8):
        run_iteration(step, phases, nets, optimizers, CountingSampler(), torch.device("cpu"))
    assert [name for name, _ in log].count("R") == 2


def test_first_non_finite_names_the_loss():
    assert first_non_finite({"d_loss": 1.0, "g_loss": 2.0}) is None
    assert first_non_finite({"d_loss": 1.0, "g_loss": float("nan")}) == "g_loss=nan"


def test_shard_sampler_splits_data_and_resumes_identically():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    labels = np.arange(10)
    shards = [ShardSampler(images, labels, rank, 2, 2, seed=0) for rank in (0, 1)]
    seen = [set(s.labels.tolist()) for s in shards]
    assert seen == [{0, 2, 4, 6, 8}, {1, 3, 5, 7, 9}]
    first = shards[0]
    first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch().labels.tolist() for _ in range(4)]
    resumed = ShardSampler(images, labels, 0, 2, 2, seed=99)
    resumed.load_state_dict(state)
    assert [resumed.next_batch().labels.tolist() for _ in range(4)] == expected
    # float images in [-1, 1], converted once
    assert first.images.min() == -1.0 and first.images.dtype == torch.float32


def _settings(steps, max_seconds=None):
    from components.families import DataSpec
    from components.training.loop import LoopSettings

    return LoopSettings(family="dcgan", overrides={}, spec=DataSpec(1, 28), steps=steps, batch_size=4, threads=1,
                        seed=0, checkpoint_every=10, report_every=1, sample_every=10, max_seconds=max_seconds)


def test_a_run_ends_at_whichever_of_steps_or_seconds_comes_first():
    by_steps = _settings(100)
    assert not by_steps.run_is_over(99, elapsed_s=1e9)  # no time budget: seconds never end it
    assert by_steps.run_is_over(100, elapsed_s=0.0)
    timed = _settings(100, max_seconds=30.0)
    assert not timed.run_is_over(50, elapsed_s=29.9)
    assert timed.run_is_over(50, elapsed_s=30.0)
    assert timed.run_is_over(100, elapsed_s=1.0)


def test_fraction_done_follows_the_budget_that_is_further_along():
    assert _settings(200).fraction_done(50, elapsed_s=1e9) == 0.25
    timed = _settings(1000, max_seconds=40.0)
    assert timed.fraction_done(100, elapsed_s=10.0) == 0.25  # seconds: 10 / 40, steps only 0.1
    assert timed.fraction_done(900, elapsed_s=10.0) == 0.9  # steps further along
    assert timed.fraction_done(10, elapsed_s=80.0) == 1.0  # capped


def test_agree_step_alone_returns_its_own_flag_and_clock():
    from components.training.loop import agree_step

    assert agree_step(False, 12.5, world=1) == (False, 12.5)
    assert agree_step(True, 0.0, world=1) == (True, 0.0)
