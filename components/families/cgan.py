"""Conditional GAN (Mirza & Osindero, 2014): both G and D see the class label y.

The paper's MNIST model: G maps z (100) to 200 ReLU units and the one-hot y to
1000 ReLU units, joins them into 1200 ReLU units and outputs 784 pixels. D maps
x to 240 maxout units (5 pieces) and y to 50 maxout units (5 pieces), joins them
into 240 maxout units (4 pieces) and outputs one logit. Dropout in D.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import Family, ImageBatch, LossResult, Networks, Phase, TaskKind
from components.nets.ema import check_ema_decay, with_generator_average
from components.nets.mlp import Maxout, relu_mlp


@dataclass
class CGANConfig:
    z_dim: int = 100
    g_z_hidden: int = 200
    g_y_hidden: int = 1000
    g_joint_hidden: int = 1200
    d_x_hidden: int = 240
    d_y_hidden: int = 50
    d_joint_hidden: int = 240
    d_x_pieces: int = 5
    d_y_pieces: int = 5
    d_joint_pieces: int = 4
    dropout: float = 0.5
    lr: float = 2e-3  # Adam at the usual 2e-4 plateaus on the MLP cGAN at a CPU budget (docs/zoo.md)
    beta1: float = 0.5
    ema_decay: float = 0.0  # > 0: sample from G_ema, G's moving average (warmed up); 0: from G, as the paper

    def __post_init__(self) -> None:
        check_ema_decay(self.ema_decay)


class ConditionalGenerator(nn.Module):
    def __init__(self, cfg: CGANConfig, num_classes: int, out_shape: tuple[int, int, int]):
        super().__init__()
        self.z_path = relu_mlp([cfg.z_dim, cfg.g_z_hidden])
        self.y_path = relu_mlp([num_classes, cfg.g_y_hidden])
        self.joint = relu_mlp([cfg.g_z_hidden + cfg.g_y_hidden, cfg.g_joint_hidden])
        self.out = nn.Linear(cfg.g_joint_hidden, out_shape[0] * out_shape[1] * out_shape[2])
        self.num_classes, self.out_shape = num_classes, out_shape

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        y = F.one_hot(labels, self.num_classes).float()
        h = self.joint(torch.cat([self.z_path(z), self.y_path(y)], dim=1))
        return torch.tanh(self.out(h)).view(z.size(0), *self.out_shape)


class ConditionalDiscriminator(nn.Module):
    def __init__(self, cfg: CGANConfig, num_classes: int, in_features: int):
        super().__init__()
        self.x_path = nn.Sequential(Maxout(in_features, cfg.d_x_hidden, cfg.d_x_pieces), nn.Dropout(cfg.dropout))
        self.y_path = nn.Sequential(Maxout(num_classes, cfg.d_y_hidden, cfg.d_y_pieces), nn.Dropout(cfg.dropout))
        self.joint = nn.Sequential(
            Maxout(cfg.d_x_hidden + cfg.d_y_hidden, cfg.d_joint_hidden, cfg.d_joint_pieces), nn.Dropout(cfg.dropout)
        )
        self.out = nn.Linear(cfg.d_joint_hidden, 1)
        self.num_classes = num_classes

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        y = F.one_hot(labels, self.num_classes).float()
        h = self.joint(torch.cat([self.x_path(x.flatten(1)), self.y_path(y)], dim=1))
        return self.out(h).squeeze(1)


@register
class CGAN(Family):
    name = "cgan"
    task = TaskKind.CLASS_CONDITIONAL
    paper = "Mirza & Osindero, Conditional Generative Adversarial Nets, 2014 (arXiv:1411.1784)"
    Config = CGANConfig

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, k = self.spec.channels, self.spec.image_size, self.spec.num_classes
        return with_generator_average({"G": ConditionalGenerator(self.config, k, (c, s, s)),
                                       "D": ConditionalDiscriminator(self.config, k, c * s * s)}, self.config.ema_decay)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, 0.999))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False,
              after_step=self.update_generator_average if self.config.ema_decay else None)]

    def _random_labels(self, n: int, device: torch.device) -> Tensor:
        return torch.randint(0, self.spec.num_classes, (n,), device=device)

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        device = batch.images.device
        fake_labels = self._random_labels(len(batch), device)
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, device), fake_labels)
        real_logits = nets["D"](batch.images, batch.labels)
        fake_logits = nets["D"](fake, fake_labels)
        return losses.bce_discriminator_loss_with_logs(real_logits, fake_logits)

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        device = batch.images.device
        labels = self._random_labels(len(batch), device)
        fake = nets["G"](self.latent(len(batch), self.config.z_dim, device), labels)
        loss = losses.nonsaturating_generator_loss(nets["D"](fake, labels))
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | None = None) -> Tensor:
        labels = self.sample_conditions(n) if condition is None else condition
        return self.sampling_generator(self.latent(n, self.config.z_dim), labels.to(self.device))
