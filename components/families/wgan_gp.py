"""WGAN-GP (Gulrajani et al., 2017): Wasserstein critic with a gradient penalty.

The critic has no sigmoid and no batch norm (the penalty is per sample, so the
paper replaces batch norm by layer norm in the critic). Each iteration trains
the critic n_critic = 5 times, each on a fresh batch, then the generator once;
Adam(1e-4, beta1 0, beta2 0.9), lambda = 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import Family, ImageBatch, LossResult, Networks, Phase, TaskKind
from components.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from components.nets.ema import check_ema_decay, with_generator_average


@dataclass
class WGANGPConfig:
    z_dim: int = 100
    g_width: int = 32
    d_width: int = 32
    critic_norm: Literal["layer", "none"] = "layer"
    n_critic: int = 2  # paper: 5; at a fixed CPU budget fewer critic steps buy more G updates (docs/zoo.md)
    gp_weight: float = 10.0
    lr: float = 8e-4  # paper: 1e-4 (docs/zoo.md)
    beta1: float = 0.0
    beta2: float = 0.9
    ema_decay: float = 0.0  # > 0: sample from G_ema, G's moving average (warmed up); 0: from G, as the paper

    def __post_init__(self) -> None:
        check_ema_decay(self.ema_decay)


@register
class WGANGP(Family):
    name = "wgan_gp"
    task = TaskKind.UNCONDITIONAL
    paper = "Gulrajani et al., Improved Training of Wasserstein GANs, NeurIPS 2017 (arXiv:1704.00028)"
    Config = WGANGPConfig

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        return with_generator_average({
            "G": DCGANGenerator(cfg.z_dim, c, s, cfg.g_width),
            "D": DCGANDiscriminator(c, s, cfg.d_width, norm=cfg.critic_norm),
        }, cfg.ema_decay)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        return [
            Phase("critic", ("D",), self.critic_loss, repeats=self.config.n_critic),
            Phase("G", ("G",), self.generator_loss, uses_data=False,
              after_step=self.update_generator_average if self.config.ema_decay else None),
        ]

    def critic_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        real = batch.images
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, real.device))
        critic = nets["D"]
        wasserstein = losses.wasserstein_critic_loss(critic(real), critic(fake))
        alpha = torch.rand(real.size(0), device=real.device)
        penalty = losses.gradient_penalty(critic, losses.interpolate(real, fake, alpha))
        loss = wasserstein + self.config.gp_weight * penalty
        return loss, {"d_loss": loss.item(), "wasserstein": -wasserstein.item(), "gp": penalty.item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        scores = nets["D"](nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device)))
        loss = losses.wasserstein_generator_loss(scores)
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.sampling_generator(self.latent(n, self.config.z_dim))
