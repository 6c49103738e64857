"""GPU readiness on CPU: fp16 with a loss scaler, channels_last and torch.compile train as fp32 does.

bf16 over every family is in test_family_contract.py; these use one small family each.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from components.families import DataSpec, ImageBatch, Phase, build_family, get_family
from components.training.checkpoint import TrainingState, load_state, restore_into, save_checkpoint
from components.training.loop import (Precision, first_non_finite, run_iteration, run_phase, to_channels_last,
                                      wrap_for_data_parallel)
from components.training.sampler import ShardSampler

CPU = torch.device("cpu")
RGB = DataSpec(channels=3, image_size=8, num_classes=3)  # 3 channels: with 1, NCHW and NHWC strides coincide


def tiny(name: str, spec: DataSpec = RGB):
    torch.manual_seed(0)
    return build_family(name, spec, get_family(name).tiny)


def sampler_for(spec: DataSpec, n: int = 24, batch: int = 6) -> ShardSampler:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, spec.channels, spec.image_size, spec.image_size), dtype=np.uint8)
    return ShardSampler(images, np.arange(n) % spec.num_classes, 0, 1, batch, seed=0)


def train(family, steps: int, precision: Precision, channels_last: bool = False, compile: bool = False):
    """``steps`` iterations of the loop as a worker runs them; the logs of each."""
    optimizers = family.build_optimizers()
    nets = wrap_for_data_parallel(family, CPU, 1, channels_last, compile)
    sampler, phases = sampler_for(family.spec), family.phases()
    return [run_iteration(step, phases, nets, optimizers, sampler, CPU, precision, channels_last)[0]
            for step in range(steps)], optimizers


def weights(family) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in family.nets.state_dict().items() if v.dtype.is_floating_point}


def test_fp16_trains_with_a_loss_scaler_and_plain_float_logs():
    family = tiny("dcgan")
    before = weights(family)
    precision = Precision("fp16", CPU)
    history, _ = train(family, 6, precision)
    for logs in history:
        assert logs and all(type(v) is float and math.isfinite(v) for v in logs.values()), logs
    state = precision.state_dict()
    # the scaler starts at 2**16 and halves on each overflowing step (skipped): it must have run, and the
    # networks must still have moved, i.e. some steps were taken
    assert 0 < state["scale"] <= 2.0 ** 16
    after = weights(family)
    assert any(not torch.equal(before[k], after[k]) for k in before if "running" not in k)


def test_fp16_keeps_the_step_then_clip_order_of_wgan():
    family = tiny("wgan", DataSpec(channels=1, image_size=8, num_classes=3))
    train(family, 3, Precision("fp16", CPU))
    clip = family.config.clip
    assert all(p.abs().max() <= clip for p in family.nets["D"].parameters())


def test_a_non_finite_fp16_loss_is_still_caught():
    net = torch.nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0), net.bias.zero_()
    optimizers = {"D": torch.optim.SGD(net.parameters(), 0.1)}

    def overflow(batch, nets):  # 1e5 is beyond fp16's range (65504): the forward itself overflows
        value = nets["D"](batch.images.reshape(-1, 1) * 1e5).sum()
        return value, {"d_loss": value.item()}

    logs = run_phase(Phase("D", ("D",), overflow), ImageBatch(torch.ones(4, 1, 1, 1)), {"D": net}, optimizers,
                     Precision("fp16", CPU))
    assert first_non_finite(logs) == "d_loss=inf"


def test_the_scaler_state_survives_a_checkpoint(tmp_path):
    family = tiny("dcgan")
    precision = Precision("fp16", CPU)
    _, optimizers = train(family, 4, precision)
    saved = precision.state_dict()
    save_checkpoint(tmp_path / "ckpt", family, optimizers, TrainingState(step=4, scaler=saved))
    assert load_state(tmp_path / "ckpt")["scaler"] == saved  # weights_only=True load of plain numbers

    resumed_family = tiny("dcgan")
    state = restore_into(tmp_path / "ckpt", resumed_family, resumed_family.build_optimizers())
    resumed = Precision("fp16", CPU)
    resumed.load_state_dict(state.scaler)
    assert resumed.state_dict() == saved


def test_a_checkpoint_without_scaler_state_starts_a_fresh_scaler(tmp_path):
    family = tiny("dcgan")
    save_checkpoint(tmp_path / "ckpt", family, family.build_optimizers(), TrainingState(step=1))
    assert "scaler" not in load_state(tmp_path / "ckpt")  # fp32 and bf16 checkpoints are as before
    state = restore_into(tmp_path / "ckpt", tiny("dcgan"))
    assert state.scaler == {}
    precision = Precision("fp16", CPU)
    precision.load_state_dict(state.scaler)
    assert precision.state_dict() == Precision("fp16", CPU).state_dict()
    assert Precision("bf16", CPU).scaler is None and Precision("bf16", CPU).state_dict() == {}


def test_channels_last_networks_and_batches_train_as_contiguous_ones():
    seen = []
    contiguous, cl = tiny("dcgan"), tiny("dcgan")
    phases = cl.phases

    def spy(loss):  # notes the memory format of every batch a phase gets
        def recorded(batch, nets):
            seen.append(batch.images.is_contiguous(memory_format=torch.channels_last))
            return loss(batch, nets)

        return recorded

    cl.phases = lambda: [dataclasses.replace(p, loss=spy(p.loss)) for p in phases()]
    torch.manual_seed(5)
    expected, _ = train(contiguous, 2, Precision())
    torch.manual_seed(5)
    got, _ = train(cl, 2, Precision(), channels_last=True)
    assert seen and all(seen)
    convs = [p for p in cl.nets.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert list(cl.nets.state_dict()) == list(contiguous.nets.state_dict())
    for want, have in zip(expected, got):
        assert have.keys() == want.keys()
        assert all(math.isclose(have[k], want[k], rel_tol=1e-4, abs_tol=1e-5) for k in want), (want, have)
    for key, value in contiguous.nets.state_dict().items():
        torch.testing.assert_close(cl.nets.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_to_channels_last_leaves_label_maps_and_labels_alone():
    batch = ImageBatch(torch.rand(2, 3, 4, 4), torch.arange(2), torch.rand(2, 3, 4, 4),
                       torch.zeros(2, 4, 4, dtype=torch.long))
    converted = to_channels_last(batch)
    assert converted.images.is_contiguous(memory_format=torch.channels_last)
    assert converted.inputs.is_contiguous(memory_format=torch.channels_last)
    assert converted.label_maps.is_contiguous() and torch.equal(converted.labels, batch.labels)
    assert torch.equal(converted.images, batch.images)


def test_compile_wraps_the_loops_modules_not_the_familys():
    family = tiny("dcgan")
    keys = list(family.nets.state_dict())
    nets = wrap_for_data_parallel(family, CPU, 1, compile=True)  # torch.compile is lazy: nothing compiles yet
    assert all(hasattr(net, "_orig_mod") for net in nets.values())
    assert not any(hasattr(net, "_orig_mod") for net in family.nets.values())
    assert list(family.nets.state_dict()) == keys


@pytest.mark.slow  # Inductor's first compile on CPU (gcc): ~45 s on a busy 2-core machine, ~4 s once cached
def test_compiled_networks_train_one_iteration_and_checkpoints_keep_their_keys(tmp_path):
    family = tiny("dcgan")
    keys = {name: list(module.state_dict()) for name, module in family.nets.items()}
    before = weights(family)
    history, optimizers = train(family, 1, Precision(), compile=True)
    assert all(type(v) is float and math.isfinite(v) for v in history[0].values()), history
    after = weights(family)
    assert any(not torch.equal(before[k], after[k]) for k in before if "running" not in k)
    assert {name: list(module.state_dict()) for name, module in family.nets.items()} == keys
    save_checkpoint(tmp_path / "ckpt", family, optimizers, TrainingState(step=1))
    restore_into(tmp_path / "ckpt", tiny("dcgan"))  # an uncompiled family loads it: same names and shapes
