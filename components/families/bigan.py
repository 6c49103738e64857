"""BiGAN / ALI (Donahue et al., 2017; Dumoulin et al., 2017): D tells (x, E(x)) pairs from (G(z), z) pairs.

An encoder E maps images to latents and a generator G maps latents to images.
D sees joint pairs: a convolutional path for x, an MLP path for z, and an MLP
on both (ALI's layout: 512 features per path, two 1024-unit joint layers,
dropout 0.2). D is trained with BCE, encoder pairs real and generator pairs
fake; E and G are trained together in one phase with the labels inverted. At
the optimum E inverts G, so G(E(x)) is logged as a reconstruction error.
BiGAN's MNIST settings: z in U(-1, 1)^50, Adam(2e-4, beta1 0.5), weight
decay 2.5e-5.

The two papers differ in the prior and the encoder. BiGAN (the default) draws
z from U(-1, 1) and encodes deterministically, z = E(x). ALI draws z from
N(0, I) and encodes stochastically, z = mu(x) + sigma(x) * eps with
eps ~ N(0, I) (the reparameterisation trick, so E still gets gradients): select
it with ``prior: normal`` and ``encoder: gaussian``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

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
    encoder: Literal["deterministic", "gaussian"] = "deterministic"  # BiGAN: z = E(x); ALI: z ~ N(mu(x), sigma(x)^2)
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

    def __post_init__(self) -> None:
        if self.z_dim < 1:
            raise ValueError(f"z_dim: expected at least 1, got {self.z_dim}")
        if not 0 <= self.d_dropout < 1:
            raise ValueError(f"d_dropout: expected a probability in [0, 1), got {self.d_dropout}")


class ConvEncoder(nn.Module):
    """x -> z: a DCGAN discriminator body whose last layer outputs z_dim values (no squashing)."""

    def __init__(self, channels: int, image_size: int, width: int, z_dim: int):
        super().__init__()
        self.net = DCGANDiscriminator(channels, image_size, width, out_dim=z_dim)
        self.z_dim = z_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(x.size(0), self.z_dim)


class GaussianConvEncoder(nn.Module):
    """ALI's q(z | x) = N(mu(x), diag(sigma(x)^2)): one DCGAN body outputs mu and log sigma.

    In training mode it samples z = mu + sigma * eps, so gradients reach mu and
    sigma through the sample. In eval mode it returns mu, as dropout turns itself
    off, so that the probe and the reconstruction metric are deterministic.
    """

    def __init__(self, channels: int, image_size: int, width: int, z_dim: int):
        super().__init__()
        self.net = DCGANDiscriminator(channels, image_size, width, out_dim=2 * z_dim)
        self.z_dim = z_dim

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma), each N x z_dim."""
        mean, log_sigma = self.net(x).view(x.size(0), 2, self.z_dim).unbind(1)
        return mean, log_sigma

    def forward(self, x: Tensor) -> Tensor:
        mean, log_sigma = self.posterior(x)
        if not self.training:
            return mean
        return reparameterise(mean, log_sigma, torch.randn_like(mean))


def reparameterise(mean: Tensor, log_sigma: Tensor, noise: Tensor) -> Tensor:
    """mu + sigma * eps: a sample of N(mu, sigma^2) that is differentiable in mu and sigma."""
    return mean + log_sigma.exp() * noise


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


def in_chunks(fn: Callable[[Tensor], Tensor], inputs: Tensor, chunk: int = 500) -> Tensor:
    """fn over the rows of inputs a chunk at a time: the evaluator's splits hold up to 10,000 images."""
    return torch.cat([fn(part) for part in inputs.split(chunk)])


def linear_probe_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                          test_labels: Tensor) -> float:
    """Accuracy on the test rows of a logistic regression fit on the train rows only.

    Features are standardised with the train rows' statistics (still a linear
    probe: an affine map folds into the weights) so that L-BFGS converges
    whatever the encoder's output scale.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(train_features.double().numpy(), train_labels.numpy())
    return float(probe.score(test_features.double().numpy(), test_labels.numpy()))


def class_agreement(probabilities: Tensor, labels: Tensor) -> float:
    """The fraction of rows whose most probable class is their label."""
    return (probabilities.argmax(1) == labels).double().mean().item()


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
        encoder = GaussianConvEncoder if cfg.encoder == "gaussian" else ConvEncoder
        return {"G": DCGANGenerator(cfg.z_dim, c, s, cfg.g_width), "E": encoder(c, s, cfg.e_width, cfg.z_dim),
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
        """How well E inverts G on the evaluator's held-out images, and what E(x) knows of the class.

        ``reconstruction_mse``: mean squared pixel error of G(E(x)) against x.
        ``linear_probe_accuracy``: a logistic regression fit on E(train images) and
        their labels, scored on E(held-out images) (the papers' case for the features).
        ``reconstruction_class_agreement``: the fraction of held-out x whose G(E(x))
        the evaluator's classifier assigns to x's label (chance is 1 / classes).
        ALI's encoder gives its posterior mean here (eval mode).
        """
        was_training = self.nets.training
        self.nets.eval()
        try:
            return self._held_out_scores(real)
        finally:
            self.nets.train(was_training)

    def _held_out_scores(self, real: RealSplit) -> dict[str, float]:
        encoder, generator = self.nets["E"], self.nets["G"]
        test_images = real.test_images.to(self.device)
        encoded_test = in_chunks(encoder, test_images)
        reconstructed = in_chunks(generator, encoded_test)
        scores = {"reconstruction_mse": F.mse_loss(reconstructed, test_images).item()}
        if real.train_labels is None or real.test_labels is None:
            return scores
        encoded_train = in_chunks(encoder, real.train_images.to(self.device))
        scores["linear_probe_accuracy"] = linear_probe_accuracy(encoded_train.cpu(), real.train_labels,
                                                                encoded_test.cpu(), real.test_labels)
        if real.classify is not None:
            # clamped as the evaluator's other samples are: the classifier expects images in [-1, 1]
            predicted = real.classify(reconstructed.clamp(-1, 1).cpu())
            scores["reconstruction_class_agreement"] = class_agreement(predicted, real.test_labels)
        return scores
