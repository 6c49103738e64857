"""BiGAN / ALI (Donahue et al., 2017; Dumoulin et al., 2017): D tells (x, E(x)) pairs from (G(z), z) pairs.

An encoder E maps images to latents and a generator G maps latents to images.
D sees joint pairs: a convolutional path for x, an MLP path for z, and an MLP
on both (ALI's layout: 512 features per path, two 1024-unit joint layers,
dropout 0.2). D is trained with BCE, encoder pairs real and generator pairs
fake; E and G are trained together in one phase with the labels inverted. At
the optimum E inverts G, so G(E(x)) is logged as a reconstruction error.
BiGAN's MNIST settings: z in U(-1, 1)^50, Adam(2e-4, beta1 0.5), weight
decay 2.5e-5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import Family, ImageBatch, LossResult, Networks, Phase, RealSplit, TaskKind
from components.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass
class BiGANConfig:
    z_dim: int = 50
    prior: Literal["uniform", "normal"] = "uniform"  # BiGAN: U(-1, 1); ALI: N(0, I)
    g_width: int = 32
    e_width: int = 32
    d_width: int = 32
    d_x_features: int = 512
    d_z_hidden: int = 512
    d_joint_hidden: int = 1024
    d_dropout: float = 0.2
    lr: float = 2e-4
    beta1: float = 0.5
    weight_decay: float = 2.5e-5


class ConvEncoder(nn.Module):
    """x -> z: a DCGAN discriminator body whose last layer outputs z_dim values (no squashing)."""

    def __init__(self, channels: int, image_size: int, width: int, z_dim: int):
        super().__init__()
        self.net = DCGANDiscriminator(channels, image_size, width, out_dim=z_dim)
        self.z_dim = z_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(x.size(0), self.z_dim)


def leaky_mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class JointDiscriminator(nn.Module):
    """(x, z) -> one logit: conv features of x and MLP features of z, joined by an MLP."""

    def __init__(self, cfg: BiGANConfig, channels: int, image_size: int):
        super().__init__()
        self.x_path = DCGANDiscriminator(channels, image_size, cfg.d_width, norm="batch", out_dim=cfg.d_x_features)
        self.x_out = nn.Sequential(nn.LeakyReLU(0.2, True), nn.Dropout(cfg.d_dropout))
        self.z_path = leaky_mlp([cfg.z_dim, cfg.d_z_hidden, cfg.d_z_hidden], cfg.d_dropout)
        self.joint = leaky_mlp([cfg.d_x_features + cfg.d_z_hidden, cfg.d_joint_hidden, cfg.d_joint_hidden],
                               cfg.d_dropout)
        self.out = nn.Linear(cfg.d_joint_hidden, 1)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        x_features = self.x_out(self.x_path(x).view(x.size(0), -1))
        return self.out(self.joint(torch.cat([x_features, self.z_path(z)], dim=1))).squeeze(1)


@register
class BiGAN(Family):
    name = "bigan"
    task = TaskKind.UNCONDITIONAL
    paper = ("Donahue, Kraehenbuehl & Darrell, Adversarial Feature Learning, ICLR 2017 (arXiv:1605.09782); "
             "Dumoulin et al., Adversarially Learned Inference, ICLR 2017 (arXiv:1606.00704)")
    Config = BiGANConfig
    tiny = {"z_dim": 4, "g_width": 8, "e_width": 8, "d_width": 8, "d_x_features": 16, "d_z_hidden": 16,
            "d_joint_hidden": 16}

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        return {"G": DCGANGenerator(cfg.z_dim, c, s, cfg.g_width), "E": ConvEncoder(c, s, cfg.e_width, cfg.z_dim),
                "D": JointDiscriminator(cfg, c, s)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        return {name: torch.optim.Adam(self.nets[name].parameters(), cfg.lr, betas=(cfg.beta1, 0.999),
                                       weight_decay=cfg.weight_decay) for name in ("G", "E", "D")}

    def phases(self) -> list[Phase]:
        # E needs real images, so the E+G phase draws its own batch (uses_data stays True)
        return [Phase("D", ("D",), self.discriminator_loss), Phase("EG", ("E", "G"), self.encoder_generator_loss)]

    def prior(self, n: int, device: torch.device | None = None) -> Tensor:
        if self.config.prior == "uniform":
            return torch.rand(n, self.config.z_dim, device=device or self.device) * 2 - 1
        return self.latent(n, self.config.z_dim, device)

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        real = batch.images
        z = self.prior(len(batch), real.device)
        with torch.no_grad():
            encoded, fake = nets["E"](real), nets["G"](z)
        return losses.bce_discriminator_loss_with_logs(nets["D"](real, encoded), nets["D"](fake, z))

    def encoder_generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        real = batch.images
        z = self.prior(len(batch), real.device)
        encoded = nets["E"](real)
        loss = losses.bigan_encoder_generator_loss(nets["D"](real, encoded), nets["D"](nets["G"](z), z))
        with torch.no_grad():  # a diagnostic of inversion, not a training signal (BiGAN has no reconstruction loss)
            reconstruction_mse = F.mse_loss(nets["G"](encoded), real)
        return loss, {"g_loss": loss.item(), "recon_mse": reconstruction_mse.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.nets["G"](self.prior(n))

    @torch.no_grad()
    def task_metrics(self, real: RealSplit) -> dict[str, float]:
        """How well E inverts G on held-out images, and how linearly separable the classes are in E(x):
        the paper's case for BiGAN features (a logistic regression fit on the training split)."""
        from sklearn.linear_model import LogisticRegression

        self.nets.eval()
        encoded_test = self.nets["E"](real.test_images)
        scores = {"reconstruction_mse": F.mse_loss(self.nets["G"](encoded_test), real.test_images).item()}
        if real.train_labels is not None and real.test_labels is not None:
            probe = LogisticRegression(max_iter=1000).fit(self.nets["E"](real.train_images).numpy(),
                                                          real.train_labels.numpy())
            scores["linear_probe_accuracy"] = float(probe.score(encoded_test.numpy(), real.test_labels.numpy()))
        return scores
