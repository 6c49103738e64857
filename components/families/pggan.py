"""PGGAN (Karras, Aila, Laine & Lehtinen, 2018): progressive growing, trained as WGAN-GP with a drift term.

G and D are mirror images that start at a small resolution and grow by
doubling; each new stage is faded in, its output blended with the 2x-upsampled
output of the previous stage by alpha rising from 0 to 1, then trained stable.
G uses pixel norm after every conv; every layer of both networks uses the
equalised learning rate; D has a minibatch standard deviation feature map
before its last block (blocks in ``components/nets/progressive.py``).

Loss (WGAN-GP, n_critic = 1): L_D = E[D(G(z))] - E[D(x)] + lambda E[(||grad D(x^)|| - 1)^2]
+ epsilon E[D(x)^2], with lambda = 10 and the drift weight epsilon = 0.001;
L_G = -E[D(G(z))]. Adam(lr 1e-3, beta1 0, beta2 0.99).

Resolution: stages double from the base of the data size's spatial plan:
32 px grows 4 -> 8 -> 16 -> 32 as in the paper, and the bundled 28 px digits
grow 7 -> 14 -> 28. A 7x7 base (not 3.5, nor 32 px resampled to 28) keeps every
stage an exact 2x nearest upsampling in G and 2x2 average pooling of the real
images, which is how the paper relates its stages; resampling 32 -> 28 would
add an interpolation that D sees in every fake and no real image has.

Schedule: the stage and alpha are a function of the fraction of the run done,
which the trainer passes to ``set_progress`` before every iteration (the larger
of step / steps and elapsed / train.max_seconds, the same on every rank), so
PGGAN reaches its full resolution whichever budget stops the run. The fraction
is a float buffer of G: checkpoints, resumes, ``generate`` and the export after
loading a checkpoint agree on the stage and alpha. A freshly built family is
at 0 (the first stage); a finished run is at 1 (the final stage, alpha 1).
Stage s starts at s * stage_fraction; stages after the first fade in over
fade_fraction and train stable until the next stage starts; the last stage
trains until the end. The paper uses 800k images for each fade-in and each
stabilisation; the defaults (0.2 of the run per stage, 0.1 of fading) keep its
1:1 ratio, and with the 3 stages of 28 px data fade 14 px in over 0.2-0.3 and
28 px over 0.4-0.5 of the run, which leaves its second half to the full
resolution. More stages finish growing later (32 px at 0.7, 64 px at 0.9 of
the run); a schedule whose last fade-in would not end before the run does is
refused when the family is built, as the defaults are for 128 px and larger
(6 stages or more), which need a smaller stage_fraction and fade_fraction.
Real images are box-downsampled to the current resolution and, during
fade-in, blended between the two resolutions with the same alpha. Generated
images are always nearest-upsampled to the data size, so evaluation sees the
data's shape at every stage.

Sizes: widths min(max_width, width_base / 2^stage) mirror the paper's fmap_base
/ fmap_max rule, scaled from 512 channels to 64 for CPUs (28 px: 64, 64, 32
channels at 7, 14, 28 px; z: 512 -> 128). Not
kept from the paper: its EMA of G's weights for evaluation (the trainer keeps
none) and its minibatch-size schedule per resolution (the batch size is the
trainer's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError
from components.families import register
from components.families.base import (ExportedGenerator, Family, ImageBatch, LossResult, Networks, Phase, TaskKind,
                                      unwrap)
from components.nets.progressive import (FixedStageGenerator, GrowthSchedule, ProgressiveDiscriminator,
                                         ProgressiveGenerator, reals_at_stage, stage_resolutions, stage_widths)


@dataclass
class PGGANConfig:
    z_dim: int = 128  # paper: 512
    width_base: int = 128  # channels per stage: min(max_width, width_base / 2^stage); paper: 8192 / 2^log2(res)
    max_width: int = 64  # paper: 512
    mbstd_group: int = 4  # samples per minibatch-stddev group, as in the paper's code
    stage_fraction: float = 0.2  # share of the run per resolution stage (fade-in included); the last runs on
    fade_fraction: float = 0.1  # share of the run over which alpha rises 0 -> 1 at the start of each new stage
    gp_weight: float = 10.0  # lambda
    drift_weight: float = 0.001  # epsilon
    n_critic: int = 1
    lr: float = 1e-3
    beta1: float = 0.0
    beta2: float = 0.99

    def __post_init__(self) -> None:
        if not 0.0 < self.stage_fraction < 1.0:
            raise ValueError(f"stage_fraction is a share of the run and must be in (0, 1), got {self.stage_fraction}")
        if not 0.0 <= self.fade_fraction <= self.stage_fraction:
            raise ValueError(f"fade_fraction must be in [0, stage_fraction] (a fade-in fits in its stage), got "
                             f"{self.fade_fraction} with stage_fraction {self.stage_fraction}")
        if self.n_critic < 1:
            raise ValueError(f"n_critic must be at least 1, got {self.n_critic}")


def growth_schedule(resolutions: list[int], stage_fraction: float, fade_fraction: float) -> GrowthSchedule:
    """The schedule over ``resolutions``, refused when its last fade-in would not end before the run does
    (the score would then be of a blend, never of the full-resolution network alone)."""
    schedule = GrowthSchedule(len(resolutions), stage_fraction, fade_fraction)
    if schedule.grown_at >= 1.0:
        stages = len(resolutions)
        suggested = math.floor(1000 / (2 * stages - 1)) / 1000  # grown by about half the run, fade = stage / 2
        raise ConfigError(
            f"pggan grows {stages} stages ({' -> '.join(map(str, resolutions))} px): with stage_fraction "
            f"{stage_fraction} and fade_fraction {fade_fraction} the {resolutions[-1]} px stage would be fully "
            f"faded in at {schedule.grown_at:.3g} of the run, not before it ends; (stages - 1) x stage_fraction "
            f"+ fade_fraction must be below 1, e.g. stage_fraction {suggested} and fade_fraction {suggested / 2}")
    return schedule


@register
class PGGAN(Family):
    name = "pggan"
    task = TaskKind.UNCONDITIONAL
    paper = ("Karras et al., Progressive Growing of GANs for Improved Quality, Stability, and Variation, "
             "ICLR 2018 (arXiv:1710.10196)")
    Config = PGGANConfig
    tiny = {"z_dim": 4, "width_base": 8, "max_width": 4}  # the schedule is a share of the run: no size to shrink

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        self.resolutions = stage_resolutions(s)
        widths = stage_widths(len(self.resolutions), cfg.width_base, cfg.max_width)
        schedule = growth_schedule(self.resolutions, cfg.stage_fraction, cfg.fade_fraction)
        return {"G": ProgressiveGenerator(cfg.z_dim, c, s, widths, schedule),
                "D": ProgressiveDiscriminator(c, s, widths, cfg.mbstd_group)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.critic_loss, repeats=self.config.n_critic),
                Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def set_progress(self, fraction: float) -> None:
        """Store how far the run is in G, where the stage and alpha are read from (and checkpointed)."""
        unwrap(self.nets["G"]).set_progress(fraction)

    def growth(self, nets: Networks | None = None) -> tuple[int, float]:
        """(stage, alpha) at the fraction of the run stored in the generator."""
        return unwrap((nets or self.nets)["G"]).growth()

    def critic_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        stage, alpha = self.growth(nets)
        real = reals_at_stage(batch.images, self.resolutions, stage, alpha)
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, real.device), training_resolution=True)

        def critic(images: Tensor) -> Tensor:
            return nets["D"](images, stage=stage, alpha=alpha)

        real_scores, fake_scores = critic(real), critic(fake)
        wasserstein = losses.wasserstein_critic_loss(real_scores, fake_scores)
        mix = torch.rand(real.size(0), device=real.device)
        penalty = losses.gradient_penalty(critic, losses.interpolate(real, fake, mix))
        drift = losses.drift_penalty(real_scores)
        loss = wasserstein + self.config.gp_weight * penalty + self.config.drift_weight * drift
        return loss, {"d_loss": loss.item(), "wasserstein": -wasserstein.item(), "gp": penalty.item(),
                      "drift": drift.item(), "resolution": float(self.resolutions[stage]), "alpha": alpha}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        stage, alpha = self.growth(nets)
        fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device), training_resolution=True)
        loss = losses.wasserstein_generator_loss(nets["D"](fake, stage=stage, alpha=alpha))
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        """n images at the data size from the current stage (upsampled while the growth is not done)."""
        return self.nets["G"](self.latent(n, self.config.z_dim))

    def export_generator(self) -> ExportedGenerator:
        stage, alpha = self.growth()
        return ExportedGenerator(FixedStageGenerator(self.nets["G"], stage, alpha), self.config.z_dim)
