"""DCGAN (Radford, Metz & Chintala, 2016): the convolutional architecture rules with the BCE game.

Architecture in ``components/nets/dcgan.py``; training as in the paper: Adam
(lr 2e-4, beta1 0.5), batch norm in G and D, non-saturating generator loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import Family, ImageBatch, LossResult, Networks, Phase, TaskKind
from components.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from components.nets.ema import check_ema_decay, with_generator_average


@dataclass
class DCGANConfig:
    z_dim: int = 100
    g_width: int = 32  # channels of G's last hidden layer; doubles toward the input (paper: 128 at 64x64)
    d_width: int = 32
    lr: float = 8e-4  # paper: 2e-4; 4x learns faster on the 2-worker CPU budget (docs/zoo.md)
    beta1: float = 0.5
    ema_decay: float = 0.0  # > 0: sample from G_ema, G's moving average (warmed up); 0: from G, as the paper

    def __post_init__(self) -> None:
        check_ema_decay(self.ema_decay)


@register
class DCGAN(Family):
    name = "dcgan"
    task = TaskKind.UNCONDITIONAL
    paper = "Radford et al., Unsupervised Representation Learning with Deep Convolutional GANs, ICLR 2016 (arXiv:1511.06434)"
    Config = DCGANConfig

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        return with_generator_average({"G": DCGANGenerator(cfg.z_dim, c, s, cfg.g_width),
                                       "D": DCGANDiscriminator(c, s, cfg.d_width)}, cfg.ema_decay)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, 0.999))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False,
              after_step=self.update_generator_average if self.config.ema_decay else None)]

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device))
        real_logits, fake_logits = nets["D"](batch.images), nets["D"](fake)
        return losses.bce_discriminator_loss_with_logs(real_logits, fake_logits)

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        fake_logits = nets["D"](nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device)))
        loss = losses.nonsaturating_generator_loss(fake_logits)
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.sampling_generator(self.latent(n, self.config.z_dim))
