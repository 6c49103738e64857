"""LSGAN (Mao et al., 2017): the DCGAN architecture with least-squares objectives.

D regresses raw scores towards b = 1 on real and a = 0 on generated images; G
pulls its scores towards c = 1 (the 0-1 coding of Section 3.2.2, eq. 9).
The Pearson chi^2 reading of the objective needs b - c = 1 and b - a = 2
(a = -1, b = 1, c = 0); the paper reports both codings perform alike and uses
0-1 in its experiments. Adam(lr 2e-4, beta1 0.5), as in the paper's experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import Family, ImageBatch, LossResult, Networks, Phase, TaskKind
from components.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass
class LSGANConfig:
    z_dim: int = 100
    g_width: int = 32
    d_width: int = 32
    fake_target: float = 0.0  # a: D's target for generated images
    real_target: float = 1.0  # b: D's target for real images
    generator_target: float = 1.0  # c: the score G wants D to give its images
    lr: float = 2e-4
    beta1: float = 0.5


@register
class LSGAN(Family):
    """Least-squares GAN on the DCGAN networks, 0-1 coding (a = 0, b = c = 1)."""

    name = "lsgan"
    task = TaskKind.UNCONDITIONAL
    paper = "Mao et al., Least Squares Generative Adversarial Networks, ICCV 2017 (arXiv:1611.04076)"
    Config = LSGANConfig
    tiny = {"g_width": 4, "d_width": 4, "z_dim": 8}

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        return {"G": DCGANGenerator(cfg.z_dim, c, s, cfg.g_width), "D": DCGANDiscriminator(c, s, cfg.d_width)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, 0.999))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        cfg = self.config
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), cfg.z_dim, batch.images.device))
        real_scores, fake_scores = nets["D"](batch.images), nets["D"](fake)
        loss = losses.least_squares_discriminator_loss(real_scores, fake_scores, cfg.real_target, cfg.fake_target)
        return loss, {"d_loss": loss.item(), "d_real": real_scores.mean().item(),
                      "d_fake": fake_scores.mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        scores = nets["D"](nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device)))
        loss = losses.least_squares_generator_loss(scores, self.config.generator_target)
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.nets["G"](self.latent(n, self.config.z_dim))
