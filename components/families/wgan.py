"""WGAN (Arjovsky, Chintala & Bottou, 2017): a weight-clipped critic estimates the Wasserstein-1 distance.

The critic is the DCGAN discriminator without the sigmoid (raw scores), with
batch norm as in the paper's DCGAN critic. Algorithm 1: per generator update,
n_critic = 5 critic updates on fresh batches, RMSProp (lr 5e-5; the paper
reports momentum-based optimisers such as Adam destabilise the critic), and
after each critic update every critic weight is clipped to [-c, c], c = 0.01.
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


@dataclass
class WGANConfig:
    z_dim: int = 100
    g_width: int = 32
    d_width: int = 32
    critic_norm: Literal["batch", "none"] = "batch"  # the paper's DCGAN critic keeps batch norm
    n_critic: int = 5  # Algorithm 1
    clip: float = 0.01  # c in Algorithm 1
    lr: float = 5e-5  # alpha in Algorithm 1


@register
class WGAN(Family):
    """Wasserstein GAN with weight clipping and RMSProp, as in Algorithm 1 of the paper."""

    name = "wgan"
    task = TaskKind.UNCONDITIONAL
    paper = "Arjovsky, Chintala & Bottou, Wasserstein GAN, ICML 2017 (arXiv:1701.07875)"
    Config = WGANConfig
    tiny = {"g_width": 4, "d_width": 4, "z_dim": 8}

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        critic = DCGANDiscriminator(c, s, cfg.d_width, norm=cfg.critic_norm)
        losses.clip_weights_(critic, cfg.clip)  # start inside the clipped set, so it holds at every step
        return {"G": DCGANGenerator(cfg.z_dim, c, s, cfg.g_width), "D": critic}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {name: torch.optim.RMSprop(self.nets[name].parameters(), self.config.lr) for name in ("G", "D")}

    def phases(self) -> list[Phase]:
        # Clipping runs after the critic's optimizer step (Algorithm 1, lines 7-8), through the
        # Phase hook rather than at the start of the next loss, so the generator step and every
        # checkpoint see a critic that is inside [-c, c].
        return [
            Phase("critic", ("D",), self.critic_loss, repeats=self.config.n_critic, after_step=self.clip_critic),
            Phase("G", ("G",), self.generator_loss, uses_data=False),
        ]

    def clip_critic(self, nets: Networks) -> None:
        losses.clip_weights_(nets["D"], self.config.clip)

    def critic_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device))
        loss = losses.wasserstein_critic_loss(nets["D"](batch.images), nets["D"](fake))
        return loss, {"d_loss": loss.item(), "wasserstein": -loss.item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        scores = nets["D"](nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device)))
        loss = losses.wasserstein_generator_loss(scores)
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.nets["G"](self.latent(n, self.config.z_dim))
