"""AC-GAN (Odena, Olah & Shlens, 2017): D also classifies, so G must make images of the asked class.

G(z, c) takes noise and a class; D outputs a source logit P(S | X) and class
logits P(C | X) from one body (DCGAN architecture, ``components/nets/dcgan.py``).
With L_S = E[log P(S=real | x)] + E[log P(S=fake | G(z, c))] and
L_C = E[log P(C=c | x)] + E[log P(C=c | G(z, c))], D maximises L_S + L_C and G
maximises L_C - L_S. Paper defaults: Adam lr 2e-4, beta1 0.5, a 100-d z joined
with the one-hot class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import Family, ImageBatch, LossResult, Networks, Phase, TaskKind
from components.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass
class ACGANConfig:
    z_dim: int = 100
    g_width: int = 32  # as DCGAN's configs here: the width of G's last hidden layer, doubling toward z
    d_width: int = 32
    class_weight: float = 1.0  # weight of L_C against L_S; the paper weights them equally
    lr: float = 2e-4
    beta1: float = 0.5


class ClassConditionalGenerator(nn.Module):
    """G(z, labels): the DCGAN generator fed z joined with the one-hot class."""

    def __init__(self, z_dim: int, num_classes: int, channels: int, image_size: int, width: int):
        super().__init__()
        self.net = DCGANGenerator(z_dim, channels, image_size, width, cond_dim=num_classes)
        self.num_classes = num_classes

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.net(z, F.one_hot(labels, self.num_classes).to(z.dtype))


def split_heads(outputs: Tensor) -> tuple[Tensor, Tensor]:
    """D's output columns: the source logit first, then the class logits."""
    return outputs[:, 0], outputs[:, 1:]


@register
class ACGAN(Family):
    name = "acgan"
    task = TaskKind.CLASS_CONDITIONAL
    paper = ("Odena, Olah & Shlens, Conditional Image Synthesis with Auxiliary Classifier GANs, ICML 2017 "
             "(arXiv:1610.09585)")
    Config = ACGANConfig
    tiny = {"z_dim": 8, "g_width": 4, "d_width": 4}

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, k, cfg = self.spec.channels, self.spec.image_size, self.spec.num_classes, self.config
        return {"G": ClassConditionalGenerator(cfg.z_dim, k, c, s, cfg.g_width),
                "D": DCGANDiscriminator(c, s, cfg.d_width, out_dim=1 + k)}  # one body, source + class heads

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, 0.999))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def _random_labels(self, n: int, device: torch.device) -> Tensor:
        return torch.randint(0, self.spec.num_classes, (n,), device=device)

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        """-(L_S + L_C): the source BCE plus the class cross entropy on real and on fake images."""
        device = batch.images.device
        fake_labels = self._random_labels(len(batch), device)
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, device), fake_labels)
        real_source, real_class = split_heads(nets["D"](batch.images))
        fake_source, fake_class = split_heads(nets["D"](fake))
        source_loss = losses.bce_discriminator_loss(real_source, fake_source)
        class_loss = (losses.auxiliary_class_loss(real_class, batch.labels)
                      + losses.auxiliary_class_loss(fake_class, fake_labels))
        loss = source_loss + self.config.class_weight * class_loss
        accuracy = (real_class.argmax(1) == batch.labels).float().mean()
        return loss, {"d_loss": loss.item(), "d_source": source_loss.item(), "d_class": class_loss.item(),
                      "aux_acc_real": accuracy.item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        """-(L_C - L_S) with L_S's fake term in its non-saturating form -log P(S=real | G(z, c)).

        The paper's G maximises L_C - L_S; minimising log(1 - D) saturates early,
        so, as is common, G minimises -log D(G(z, c)) plus the class cross
        entropy of its images.
        """
        device = batch.images.device
        labels = self._random_labels(len(batch), device)
        source, class_logits = split_heads(nets["D"](nets["G"](self.latent(len(batch), self.config.z_dim, device),
                                                                labels)))
        source_loss = losses.nonsaturating_generator_loss(source)
        class_loss = losses.auxiliary_class_loss(class_logits, labels)
        loss = source_loss + self.config.class_weight * class_loss
        return loss, {"g_loss": loss.item(), "g_source": source_loss.item(), "g_class": class_loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | None = None) -> Tensor:
        labels = self.sample_conditions(n) if condition is None else condition
        return self.nets["G"](self.latent(n, self.config.z_dim), labels.to(self.device))
