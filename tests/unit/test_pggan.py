"""PGGAN: its blocks and losses against hand values, the growth schedule over the run, fade-in and resume."""

import math

import pytest
import torch
from torch import nn

from components import losses
from components.errors import ConfigError
from components.families import DataSpec, ImageBatch, build_family
from components.families.pggan import PGGANConfig
from components.nets.progressive import (EqualizedConv2d, EqualizedLinear, GrowthSchedule, MinibatchStdDev, PixelNorm,
                                         ProgressiveDiscriminator, reals_at_stage, stage_resolutions, stage_widths,
                                         upsample2x)
from components.training.checkpoint import TrainingState, load_family, restore_into, save_checkpoint
from components.training.loop import run_phase

TINY = {"z_dim": 4, "width_base": 8, "max_width": 4}


def tiny_pggan(image_size=28, **overrides):
    torch.manual_seed(0)
    return build_family("pggan", DataSpec(channels=1, image_size=image_size), {**TINY, **overrides})


class StageStub(nn.Module):
    """A generator stand-in at a fixed (stage, alpha) that draws every pixel as ``value``."""

    def __init__(self, stage, alpha, size, value=0.0):
        super().__init__()
        self.stage, self.alpha, self.size, self.value = stage, alpha, size, value

    def growth(self):
        return self.stage, self.alpha

    def forward(self, z, training_resolution=False):
        return torch.full((z.size(0), 1, self.size, self.size), self.value)


class MeanScore(nn.Module):
    """Score = scale x mean pixel, whatever the stage."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x, stage=None, alpha=1.0):
        return self.scale * x.flatten(1).mean(1)


# --- shared blocks -------------------------------------------------------------------------------


def test_pixel_norm_scales_each_pixel_to_unit_rms_over_channels():
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    # mean square (9 + 16) / 2 = 12.5
    assert PixelNorm()(x).flatten().tolist() == pytest.approx([3 / math.sqrt(12.5), 4 / math.sqrt(12.5)])


def test_equalized_layers_scale_unit_weights_by_he_constant_at_run_time():
    torch.manual_seed(0)
    linear = EqualizedLinear(50, 3)
    x = torch.randn(2, 50)
    expected = x @ (linear.weight * math.sqrt(2) / math.sqrt(50)).t()
    assert torch.allclose(linear(x), expected)
    conv = EqualizedConv2d(4, 2, 3, gain=1.0)
    assert conv.weight_scale == pytest.approx(1 / math.sqrt(4 * 9))
    big = EqualizedLinear(400, 400)
    assert big.weight.std().item() == pytest.approx(1.0, rel=0.02)  # stored weights are N(0, 1)


def test_learning_rate_multiplier_keeps_the_initial_function_and_slows_training():
    torch.manual_seed(0)
    slow = EqualizedLinear(400, 400, lr_multiplier=0.01, bias_init=0.5)
    assert slow.weight.std().item() == pytest.approx(100.0, rel=0.02)  # stored / 0.01 ...
    effective = slow.weight * slow.weight_scale
    assert effective.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)  # ... same effective init
    assert (slow.bias * slow.bias_scale).tolist() == pytest.approx([0.5] * 400)
    # one Adam step moves the stored weights by ~lr whatever their scale: the effective weights by lr x 0.01 x c
    before = effective.detach().clone()
    optimizer = torch.optim.Adam(slow.parameters(), lr=1.0, betas=(0.0, 0.99))
    slow(torch.randn(8, 400)).sum().backward()
    optimizer.step()
    moved = (slow.weight * slow.weight_scale - before).abs().max().item()
    assert moved == pytest.approx(0.01 * math.sqrt(2 / 400), rel=0.05)


def test_minibatch_stddev_appends_the_mean_feature_std_of_each_group():
    # two samples of one 1x2 feature map: pixel stds |1 - 3| / 2 = 1 and |0 - 4| / 2 = 2, mean 1.5
    x = torch.tensor([[1.0, 0.0], [3.0, 4.0]]).view(2, 1, 1, 2)
    out = MinibatchStdDev(group_size=4)(x)  # a batch of 2 forms one group of 2
    assert out.shape == (2, 2, 1, 2)
    assert torch.equal(out[:, :1], x)
    assert out[:, 1].flatten().tolist() == pytest.approx([1.5] * 4)


def test_minibatch_stddev_groups_samples_strided_and_falls_back_to_a_divisor():
    # 6 samples, group 4 -> groups of 3: samples (0, 2, 4) and (1, 3, 5)
    x = torch.tensor([0.0, 10.0, 3.0, 10.0, 6.0, 10.0]).view(6, 1, 1, 1)
    stat = MinibatchStdDev(group_size=4)(x)[:, 1].flatten()
    std_first = math.sqrt(((0 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3)
    assert stat.tolist() == pytest.approx([std_first, 1e-4, std_first, 1e-4, std_first, 1e-4], abs=1e-6)


def test_stage_plan_of_28_and_32_pixel_data():
    assert stage_resolutions(28) == [7, 14, 28]
    assert stage_resolutions(32) == [4, 8, 16, 32]
    assert stage_widths(3, 128, 64) == [64, 64, 32]


def test_drift_penalty_hand_value():
    # (1 + 4 + 9) / 3
    assert losses.drift_penalty(torch.tensor([1.0, -2.0, 3.0])).item() == pytest.approx(14 / 3)


def test_reals_are_box_downsampled_and_blended_during_fade_in():
    block = torch.tensor([[0.0, 4.0], [8.0, 12.0]])
    images = block.repeat(4, 4).view(1, 1, 8, 8)  # every 2x2 block averages to 6
    resolutions = [4, 8]
    assert torch.equal(reals_at_stage(images, resolutions, 0, 1.0), torch.full((1, 1, 4, 4), 6.0))
    assert torch.equal(reals_at_stage(images, resolutions, 1, 1.0), images)
    # alpha 0.25: 6 + 0.25 (x - 6)
    faded = reals_at_stage(images, resolutions, 1, 0.25)
    assert faded[0, 0, :2, :2].tolist() == [[4.5, 5.5], [6.5, 7.5]]


# --- the family's losses -------------------------------------------------------------------------


@pytest.mark.parametrize("stage,scale,expected", [
    # 8 px: D(real) = 16, D(fake) = 0; grad of 16 x mean over 64 px has norm 16 / 8 = 2 -> GP (2 - 1)^2 = 1;
    # drift 16^2 = 256: loss = -16 + 10 x 1 + 0.001 x 256
    (1, 16.0, -16 + 10 + 0.256),
    # 4 px (reals pooled to 4x4, still all ones): D(real) = 8, grad norm 8 / 4 = 2: -8 + 10 + 0.001 x 64
    (0, 8.0, -8 + 10 + 0.064),
])
def test_critic_loss_is_wgan_gp_plus_drift_at_the_current_resolution(stage, scale, expected):
    family = build_family("pggan", DataSpec(channels=1, image_size=8), TINY)
    size = [4, 8][stage]
    nets = {"G": StageStub(stage, 1.0, size), "D": MeanScore(scale)}
    loss, logs = family.critic_loss(ImageBatch(torch.ones(4, 1, 8, 8)), nets)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["wasserstein"] == pytest.approx(scale) and logs["gp"] == pytest.approx(1.0, rel=1e-5)
    assert logs["drift"] == pytest.approx(scale ** 2) and logs["resolution"] == size
    g_loss, _ = family.generator_loss(ImageBatch(torch.ones(4, 1, 8, 8)),
                                      {"G": StageStub(stage, 1.0, size, value=0.5), "D": MeanScore(scale)})
    assert g_loss.item() == pytest.approx(-0.5 * scale)


class SquareScore(nn.Module):
    """Score = sum of squared pixels: a non-linear critic whose gradient 2x differs at every point."""

    def forward(self, x, stage=None, alpha=1.0):
        return x.pow(2).flatten(1).sum(1)


def test_gradient_penalty_is_taken_between_each_real_and_its_fake(monkeypatch):
    # reals all 1, fakes all 0, 8x8 px at the final stage: the point mixing a real with weight m is m
    # everywhere, the critic's gradient there is 2m at 64 pixels, its norm 2m x 8 = 16 m
    family = build_family("pggan", DataSpec(channels=1, image_size=8), TINY)
    mix = torch.tensor([0.125, 0.25, 0.5, 0.0625])  # norms 2, 4, 8, 1

    def rand(*size, **kwargs):
        assert size == (4,)  # one mixing weight per sample
        return mix.clone()

    monkeypatch.setattr(torch, "rand", rand)
    nets = {"G": StageStub(1, 1.0, 8, value=0.0), "D": SquareScore()}
    loss, logs = family.critic_loss(ImageBatch(torch.ones(4, 1, 8, 8)), nets)
    penalty = ((2 - 1) ** 2 + (4 - 1) ** 2 + (8 - 1) ** 2 + (1 - 1) ** 2) / 4  # 14.75
    # at the reals the norm is 16 (penalty 225), at the fakes 0 (penalty 1), with the weights swapped
    # (1 - m on the real) 14, 12, 8, 15 (penalty 146.75): only the right points give 14.75
    assert logs["gp"] == pytest.approx(penalty, rel=1e-6)
    # D(real) = 64, D(fake) = 0: -64 + 10 x 14.75 + 0.001 x 64^2
    assert loss.item() == pytest.approx(-64 + 10 * penalty + 0.001 * 64 ** 2, rel=1e-6)


def test_paper_hyperparameters():
    family = tiny_pggan()
    cfg = family.config
    assert (cfg.gp_weight, cfg.drift_weight, cfg.n_critic) == (10.0, 0.001, 1)
    for optimizer in family.build_optimizers().values():
        group = optimizer.param_groups[0]
        assert isinstance(optimizer, torch.optim.Adam) and group["lr"] == 1e-3 and group["betas"] == (0.0, 0.99)
    phases = family.phases()
    assert [(p.name, p.repeats) for p in phases] == [("D", 1), ("G", 1)]
    assert phases[0].after_step is None and phases[1].after_step is None  # the trainer sets the progress


# --- growth --------------------------------------------------------------------------------------


def test_schedule_fades_alpha_linearly_then_holds_each_stage():
    schedule = GrowthSchedule(stages=3, stage_fraction=0.25, fade_fraction=0.125)
    assert [schedule.at(k / 16) for k in range(17)] == [
        (0, 1.0), (0, 1.0), (0, 1.0), (0, 1.0),
        (1, 0.0), (1, 0.5), (1, 1.0), (1, 1.0),
        (2, 0.0), (2, 0.5), (2, 1.0), (2, 1.0), (2, 1.0), (2, 1.0), (2, 1.0), (2, 1.0), (2, 1.0)]
    assert schedule.grown_at == 0.625
    assert GrowthSchedule(3, 0.25, 0.0).at(0.25) == (1, 1.0)  # no fade: the new stage switches on at once


# the defaults on 28 px data (7 -> 14 -> 28): stage s starts at 0.2 s; 14 px fades in over 0.2-0.3 and is
# stable over 0.3-0.4; 28 px fades in over 0.4-0.5 and trains stable for the rest of the run
DEFAULT_SCHEDULE_28PX = [
    (0.0, (0, 1.0)), (0.1, (0, 1.0)), (0.19, (0, 1.0)),
    (0.2, (1, 0.0)), (0.22, (1, 0.2)), (0.25, (1, 0.5)), (0.3, (1, 1.0)), (0.35, (1, 1.0)),
    (0.4, (2, 0.0)), (0.45, (2, 0.5)), (0.48, (2, 0.8)), (0.5, (2, 1.0)), (0.75, (2, 1.0)), (1.0, (2, 1.0))]


def test_stage_and_alpha_follow_the_fraction_of_the_run():
    family = tiny_pggan()
    assert (family.config.stage_fraction, family.config.fade_fraction) == (0.2, 0.1)
    assert family.growth() == (0, 1.0)  # before any set_progress: the first stage
    for fraction, (stage, alpha) in DEFAULT_SCHEDULE_28PX:
        family.set_progress(fraction)
        got_stage, got_alpha = family.growth()
        assert (got_stage, got_alpha) == (stage, pytest.approx(alpha, abs=1e-6)), fraction
    family.set_progress(0.0)  # the schedule is a function of the fraction, not of how it got there
    assert family.growth() == (0, 1.0)


def test_a_finished_run_generates_data_size_images_from_the_full_resolution_path():
    family = tiny_pggan()
    family.set_progress(1.0)
    assert family.growth() == (2, 1.0)
    generator = family.nets["G"]
    family.nets.eval()
    torch.manual_seed(3)
    images = family.generate(3)
    torch.manual_seed(3)
    z = torch.randn(3, 4)
    with torch.no_grad():
        native = generator(z, training_resolution=True)
        stage_1 = generator(z, training_resolution=True, stage=1, alpha=1.0)
    assert images.shape == (3, 1, 28, 28) and native.shape == (3, 1, 28, 28)
    assert torch.equal(images, native.clamp(-1, 1))  # 28 px from the last toRGB, no upsampling, no blend
    assert not torch.allclose(images, upsample2x(stage_1).clamp(-1, 1))


def test_progress_outside_the_run_is_refused():
    family = tiny_pggan()
    for fraction in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
            family.set_progress(fraction)
    assert family.growth() == (0, 1.0)


@pytest.mark.parametrize("overrides,message", [
    ({"stage_fraction": 0.0}, "stage_fraction is a share of the run and must be in \\(0, 1\\), got 0.0"),
    ({"stage_fraction": 1.0}, "stage_fraction is a share of the run and must be in \\(0, 1\\), got 1.0"),
    ({"fade_fraction": 0.3}, "fade_fraction must be in \\[0, stage_fraction\\].*got 0.3 with stage_fraction 0.2"),
])
def test_schedule_fields_are_validated(overrides, message):
    with pytest.raises(ConfigError, match=f"overrides.pggan: {message}"):
        tiny_pggan(**overrides)
    with pytest.raises(ValueError, match=message):
        PGGANConfig(**overrides)


def test_a_schedule_that_would_not_finish_growing_before_the_end_is_refused():
    # 28 px, 3 stages: 2 x 0.45 + 0.2 = 1.1
    with pytest.raises(ConfigError, match="3 stages \\(7 -> 14 -> 28 px\\).*at 1.1 of the run"):
        tiny_pggan(stage_fraction=0.45, fade_fraction=0.2)
    # 128 px, 6 stages: the defaults end at 5 x 0.2 + 0.1 = 1.1; suggested 1 / 11 per stage
    with pytest.raises(ConfigError, match="6 stages.*e.g. stage_fraction 0.09 and fade_fraction 0.045"):
        tiny_pggan(image_size=128)
    assert tiny_pggan(stage_fraction=0.4, fade_fraction=0.1).nets["G"].schedule.grown_at == pytest.approx(0.9)


def test_training_grows_7_14_28_with_fade_in_and_always_generates_28_px():
    family = tiny_pggan()
    optimizers, nets = family.build_optimizers(), dict(family.nets.items())
    generator = family.nets["G"]
    seen = []
    for step in range(12):
        family.set_progress(step / 20)  # as the trainer does: 12 of 20 steps, stopped early by a time budget
        stage, alpha = family.growth()
        with torch.no_grad():
            native = generator(torch.randn(3, 4), training_resolution=True)
        family.nets.eval()
        images = family.generate(3)
        family.nets.train()
        seen.append((stage, pytest.approx(alpha, abs=1e-6), native.size(-1)))
        assert images.shape == (3, 1, 28, 28) and images.abs().max() <= 1
        batch = ImageBatch(torch.rand(6, 1, 28, 28) * 2 - 1)
        for phase in family.phases():
            logs = run_phase(phase, batch, nets, optimizers)
            assert all(math.isfinite(v) for v in logs.values())
            assert logs.get("alpha", alpha) == pytest.approx(alpha, abs=1e-6)
    assert seen == [(0, 1.0, 7)] * 4 + [(1, 0.0, 14), (1, 0.5, 14), (1, 1.0, 14), (1, 1.0, 14),
                                        (2, 0.0, 28), (2, 0.5, 28), (2, 1.0, 28), (2, 1.0, 28)]
    assert generator.progress.item() == pytest.approx(11 / 20)  # the phases leave the fraction alone


def test_fade_in_starts_exactly_at_the_previous_stage():
    family = tiny_pggan()
    generator, discriminator = family.nets["G"], family.nets["D"]
    z = torch.randn(3, 4)
    with torch.no_grad():
        old = generator(z, training_resolution=True, stage=0, alpha=1.0)
        new = generator(z, training_resolution=True, stage=1, alpha=0.0)
        assert torch.allclose(new, upsample2x(old))  # alpha 0: the new layers do not show yet
        x = torch.randn(4, 1, 14, 14)
        assert torch.allclose(discriminator(x, stage=1, alpha=0.0),
                              discriminator(torch.nn.functional.avg_pool2d(x, 2), stage=0))


def test_every_parameter_gets_a_gradient_at_every_stage():
    # each network is its own DDP without find_unused_parameters: a layer left out of the graph would fail
    family = tiny_pggan()
    generator, discriminator = family.nets["G"], family.nets["D"]
    for stage, alpha in [(0, 1.0), (1, 0.5), (2, 1.0)]:
        family.nets.zero_grad(set_to_none=True)
        fake = generator(torch.randn(4, 4), training_resolution=True, stage=stage, alpha=alpha)
        discriminator(fake, stage=stage, alpha=alpha).sum().backward()
        missing = [name for name, p in family.nets.named_parameters() if p.grad is None]
        assert not missing, (stage, missing)


def test_discriminator_refuses_images_of_another_resolution():
    discriminator = ProgressiveDiscriminator(1, 28, [4, 4, 2])
    with pytest.raises(ValueError, match="stage 1 expects 14 px"):
        discriminator(torch.zeros(2, 1, 28, 28), stage=1)


def test_checkpoint_round_trip_keeps_the_fraction_stage_and_alpha(tmp_path):
    family = tiny_pggan()
    optimizers = family.build_optimizers()
    family.set_progress(0.25)  # stage 1, halfway through its fade-in
    assert family.growth() == (1, 0.5)
    save_checkpoint(tmp_path / "ckpt", family, optimizers, TrainingState(step=5))
    loaded, _ = load_family(tmp_path / "ckpt")  # generate and export after loading
    resumed = tiny_pggan()  # resume: a fresh family (at 0) restored in place
    assert resumed.growth() == (0, 1.0)
    state = restore_into(tmp_path / "ckpt", resumed, resumed.build_optimizers())
    assert state.step == 5
    for restored in (loaded, resumed):
        assert restored.nets["G"].progress.item() == pytest.approx(0.25)
        assert restored.growth() == (1, 0.5)
        export = restored.export_generator()
        assert (export.generator.stage, export.generator.alpha) == (1, 0.5)
    for f in (family, loaded, resumed):
        f.nets.eval()
    torch.manual_seed(1)
    expected = family.generate(2)
    for restored in (loaded, resumed):
        torch.manual_seed(1)
        assert torch.equal(restored.generate(2), expected)
    resumed.set_progress(0.3)  # the trainer goes on from there
    assert resumed.growth() == (1, 1.0)


def test_export_is_a_traceable_graph_with_any_batch_size():
    family = tiny_pggan()
    family.set_progress(0.25)  # mid fade-in: the blend of two stages is traced with alpha as a constant
    family.nets.eval()
    exported = family.export_generator().eval()
    example = exported.example_inputs(4)
    program = torch.export.export(exported, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        z = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            assert torch.allclose(program.module()(z), exported(z), atol=1e-5)
    assert exported(example).shape == (4, 1, 28, 28)
