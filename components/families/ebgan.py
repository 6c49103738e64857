"""EBGAN (Zhao, Mathieu & LeCun, 2017): an auto-encoder discriminator whose energy is its reconstruction error.

D(x) = ||Dec(Enc(x)) - x|| (per-sample MSE, ``components/nets/autoencoder.py``).
D minimises D(x) + [m - D(G(z))]^+: low energy on data, energy at least m on
fakes. G minimises D(G(z)) + lambda_PT * f_PT(S), the pulling-away term on the
encoder codes S of its batch (EBGAN-PT), which discourages mode collapse. The
generator is the DCGAN generator, as in the paper's image experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import Family, ImageBatch, LossResult, Networks, Phase, TaskKind
from components.nets.autoencoder import AutoEncoderDiscriminator
from components.nets.dcgan import DCGANGenerator


@dataclass
class EBGANConfig:
    z_dim: int = 100
    g_width: int = 32
    d_width: int = 32  # channels of the auto-encoder's first encoder layer; doubles toward the code
    margin: float = 10.0  # m: the paper's MNIST value (20 at 64x64, 40 at 128x128: it grows with the side)
    pt_weight: float = 0.1  # lambda_PT, the paper's value for EBGAN-PT
    lr: float = 1e-3
    beta1: float = 0.5


@register
class EBGAN(Family):
    """Energy-based GAN with an auto-encoder discriminator and the pulling-away term (EBGAN-PT)."""

    name = "ebgan"
    task = TaskKind.UNCONDITIONAL
    paper = "Zhao, Mathieu & LeCun, Energy-based Generative Adversarial Network, ICLR 2017 (arXiv:1609.03126)"
    Config = EBGANConfig
    tiny = {"g_width": 4, "d_width": 4, "z_dim": 8}

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        return {"G": DCGANGenerator(cfg.z_dim, c, s, cfg.g_width), "D": AutoEncoderDiscriminator(c, s, cfg.d_width)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, 0.999))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device))
        (real_energy, _), (fake_energy, _) = nets["D"](batch.images), nets["D"](fake)
        loss = losses.energy_margin_discriminator_loss(real_energy, fake_energy, self.config.margin)
        return loss, {"d_loss": loss.item(), "energy_real": real_energy.mean().item(),
                      "energy_fake": fake_energy.mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        fake_energy, codes = nets["D"](nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device)))
        pull_away = losses.pulling_away_term(codes)
        loss = fake_energy.mean() + self.config.pt_weight * pull_away
        return loss, {"g_loss": loss.item(), "pt": pull_away.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.nets["G"](self.latent(n, self.config.z_dim))
