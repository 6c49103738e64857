"""The original GAN (Goodfellow et al., 2014): MLP generator, maxout discriminator, minimax BCE.

D maximises V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))]. The paper trains G on
the non-saturating -log D(G(z)) instead of minimising log(1 - D(G(z))), because
the latter has vanishing gradients early on; both are available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import Family, ImageBatch, LossResult, Networks, Phase, TaskKind
from components.nets.mlp import maxout_mlp, relu_mlp


@dataclass
class GANConfig:
    z_dim: int = 100
    g_hidden: tuple[int, ...] = (1200, 1200)  # the paper's MNIST generator
    d_hidden: tuple[int, ...] = (240, 240)  # maxout units of the paper's MNIST discriminator
    maxout_pieces: int = 5
    dropout: float = 0.5
    d_steps: int = 1  # the paper's k: discriminator updates per generator update
    generator_loss: Literal["nonsaturating", "minimax"] = "nonsaturating"
    lr: float = 2e-4
    beta1: float = 0.5


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, hidden: tuple[int, ...], out_shape: tuple[int, int, int]):
        super().__init__()
        self.body = relu_mlp([z_dim, *hidden])
        self.out = nn.Linear(hidden[-1], out_shape[0] * out_shape[1] * out_shape[2])
        self.out_shape = out_shape

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(self.out(self.body(z))).view(z.size(0), *self.out_shape)


class MaxoutDiscriminator(nn.Module):
    def __init__(self, in_features: int, hidden: tuple[int, ...], pieces: int, dropout: float):
        super().__init__()
        self.body = maxout_mlp([in_features, *hidden], pieces, dropout)
        self.out = nn.Linear(hidden[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x.flatten(1))).squeeze(1)


@register
class VanillaGAN(Family):
    name = "gan"
    task = TaskKind.UNCONDITIONAL
    paper = "Goodfellow et al., Generative Adversarial Nets, NeurIPS 2014 (arXiv:1406.2661)"
    Config = GANConfig

    def build_networks(self) -> dict[str, nn.Module]:
        c, s = self.spec.channels, self.spec.image_size
        cfg = self.config
        return {
            "G": MLPGenerator(cfg.z_dim, cfg.g_hidden, (c, s, s)),
            "D": MaxoutDiscriminator(c * s * s, cfg.d_hidden, cfg.maxout_pieces, cfg.dropout),
        }

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, 0.999))

    def phases(self) -> list[Phase]:
        return [
            Phase("D", ("D",), self.discriminator_loss, repeats=self.config.d_steps),
            Phase("G", ("G",), self.generator_loss, uses_data=False),
        ]

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device))
        real_logits, fake_logits = nets["D"](batch.images), nets["D"](fake)
        return losses.bce_discriminator_loss_with_logs(real_logits, fake_logits)

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        fake_logits = nets["D"](nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device)))
        if self.config.generator_loss == "minimax":
            loss = losses.minimax_generator_loss(fake_logits)
        else:
            loss = losses.nonsaturating_generator_loss(fake_logits)
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.nets["G"](self.latent(n, self.config.z_dim))
