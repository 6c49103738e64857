"""UNIT (Liu, Breuel and Kautz, 2017): unpaired translation through a shared latent space of coupled VAE-GANs.

Assumption: a pair of corresponding images x1 (domain A) and x2 (domain B)
map to one code z of a shared latent space. Each domain has a VAE: encoder
E_i gives the mean of q_i(z | x_i) = N(E_i(x_i), I), and generator G_i
decodes z; translation is G_2(E_1(x1)) (A -> B) and G_1(E_2(x2)) (B -> A). The
shared space is enforced by weight sharing: the LAST layers of E_1 and E_2 are
one module (``shared_encoder``), and so are the FIRST layers of G_1 and G_2
(``shared_decoder``), so high-level features are common and only the
low-level ones (textures, colours) are per domain. All four networks are one
module ``G`` with one optimizer; the two discriminators D_1 (A) and D_2 (B)
are module ``D``.

Losses (the paper's eqs. 2-6), for each domain i with the other domain j:

- VAE: lambda_1 KL(q_i(z | x_i) || N(0, I)) + lambda_2 |G_i(z_i) - x_i|_1, with
  z_i = E_i(x_i) + eps, eps ~ N(0, I) (the reparameterisation; the mean is the
  encoder's output and the variance fixed at one, as in the paper and its code).
  With unit variance the KL is ||mu||^2 / 2; see ``unit_variance_kl`` for its
  normalisation.
- GAN: lambda_0 times the adversarial loss of D_j on the translation G_j(z_i).
- Cycle: lambda_3 KL(q_j(z | x_i->j) || N(0, I)) + lambda_4 |G_i(E_j(x_i->j) + eps) - x_i|_1.
  The paper's cycle term also repeats the KL of the first code; that is the
  VAE's KL again, so only the re-encoded code's KL is added here (as in the
  official code): the first code's KL weight is lambda_1, not lambda_1 + lambda_3.

Weights are the paper's: lambda_0 = 10, lambda_1 = lambda_3 = 0.1, lambda_2 =
lambda_4 = 100. The later official code uses 1, 0.01, 10: the same ratios, a
factor 10 lower, which Adam's scale invariance makes the same update. The GAN
loss is least squares (the official code's ``lsgan``; the paper writes the
standard GAN value function, available as ``gan_loss = "bce"``). Adam, betas
(0.5, 0.999), lr 4e-4 rather than the paper's 1e-4 (measured below); one D step
then one G step per batch.

At generate and export time the code is the mean E_i(x) (no noise): a
deterministic translation, the mode of q_i.

Left out: the official code's multi-scale discriminator (one PatchGAN scale
here: the digits are 32 px) and its weight decay 1e-4; the paper's domain
adaptation variant (a classifier sharing D's layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DomainCondition, Family, ImageBatch, LossResult, Networks, Phase,
                                      TaskKind, TranslationExport, unwrap)
from components.nets.dcgan import dcgan_init
from components.nets.patchgan import PatchDiscriminator

GAN_LOSSES = ("lsgan", "bce")


def unit_variance_kl(mu: Tensor, per_dimension: bool = True) -> Tensor:
    """KL(N(mu, I) || N(0, I)) = ||mu||^2 / 2 per sample, averaged over the batch.

    ``per_dimension`` divides it by the code's size (0.5 * mean(mu^2) over all
    elements): the paper's lambda_1 = 0.1 was set with the official code's
    element mean of mu^2 next to an element-mean L1, and the code here has
    4 * width * (size / 4)^2 dimensions, so the per-sample sum would weigh the
    KL thousands of times more against the reconstruction than the paper did.
    (The official code also drops the 1/2: a factor 2 in lambda_1.)
    """
    per_sample = 0.5 * mu.pow(2).flatten(1).sum(dim=1)
    if per_dimension:
        per_sample = per_sample / mu[0].numel()
    return per_sample.mean()


def vae_terms(mu: Tensor, reconstruction: Tensor, images: Tensor, kl_weight: float,
              l1_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """(weighted sum, KL, L1): lambda KL(N(mu, I) || N(0, I)) + lambda' |reconstruction - images|_1.

    The VAE term (lambda_1, lambda_2) with mu = E_i(x_i) and the reconstruction
    G_i(z_i); the cycle term (lambda_3, lambda_4) with mu the re-encoded
    translation's code and the reconstruction the translation translated back.
    The L1 is the Laplacian negative log-likelihood the paper's generators model.
    """
    kl = unit_variance_kl(mu)
    l1 = losses.l1_reconstruction_loss(reconstruction, images)
    return kl_weight * kl + l1_weight * l1, kl, l1


def unit_discriminator_loss(real_scores: Tensor, fake_scores: Tensor, kind: str = "lsgan") -> Tensor:
    """One discriminator's loss: least squares E[(D(x) - 1)^2] + E[D(fake)^2] (official code), or BCE (paper)."""
    if kind == "lsgan":
        return 2 * losses.least_squares_discriminator_loss(real_scores, fake_scores)  # without LSGAN's 1/2
    if kind == "bce":
        return losses.bce_discriminator_loss(real_scores, fake_scores)
    raise ValueError(f"unknown GAN loss {kind!r}; expected one of {GAN_LOSSES}")


def unit_generator_adversarial_loss(fake_scores: Tensor, kind: str = "lsgan") -> Tensor:
    """G's side: E[(D(fake) - 1)^2] (least squares), or -E[log D(fake)] (non-saturating BCE)."""
    if kind == "lsgan":
        return 2 * losses.least_squares_generator_loss(fake_scores)
    if kind == "bce":
        return losses.nonsaturating_generator_loss(fake_scores)
    raise ValueError(f"unknown GAN loss {kind!r}; expected one of {GAN_LOSSES}")


@dataclass
class UNITConfig:
    # E_i: a 7x7 stride-1 convolution of ``width`` channels, ``downsamplings`` 4x4 stride-2 ones doubling it, then
    # ``private_blocks`` residual blocks of its own and ``shared_blocks`` shared ones; G_i mirrors it with 4x4
    # stride-2 transposed convolutions and a 1x1 output (the paper's table: width 64, 2 downsamplings, 3 private
    # and 1 shared block, at 256 px). The G phase runs the encoders 4 times and the generators 6, so width 8 and
    # one private block (a 32 x 8 x 8 code at 32 px) keep an iteration (D + G, batch 32, 32 x 32) at about
    # 0.17 s of CPU on one thread; width 16 takes 0.37 s.
    width: int = 8
    downsamplings: int = 2
    private_blocks: int = 1
    shared_blocks: int = 1
    # D_i: a PatchGAN without normalisation (the official code's choice): ``d_layers`` stride-2 4x4 convolutions,
    # a stride-1 one and the logits, 6 x 6 patch scores of 34 x 34 pixels at 32 px (the paper's D, six stride-2
    # layers at 256 px, sees most of the image too)
    d_width: int = 16
    d_layers: int = 2
    gan_loss: str = "lsgan"  # "lsgan" (official code) or "bce" (the paper's GAN value function)
    gan_weight: float = 10.0  # lambda_0
    kl_weight: float = 0.1  # lambda_1
    reconstruction_weight: float = 100.0  # lambda_2
    cycle_kl_weight: float = 0.1  # lambda_3
    cycle_weight: float = 100.0  # lambda_4
    # The paper's 1e-4 is slow at short budgets (docs/zoo.md, "Shipped defaults that depart from the papers")
    lr: float = 4e-4
    beta1: float = 0.5
    beta2: float = 0.999


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))): 3x3 convolutions keeping the channels and the size."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.InstanceNorm2d(channels),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.InstanceNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def kaiming_init(module: nn.Module) -> None:
    """He-normal convolution weights, zero biases: the official code's generator initialisation."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, a=0.0, mode="fan_in")
        nn.init.zeros_(module.bias)


def residual_stack(channels: int, blocks: int) -> nn.Module:
    return nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))


def private_encoder(channels: int, width: int, downsamplings: int, blocks: int) -> nn.Sequential:
    """A domain's low-level encoder layers: image -> (width * 2^d) x size / 2^d x size / 2^d features."""
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 7, padding=3), nn.InstanceNorm2d(width), nn.LeakyReLU(0.2)]
    for k in range(downsamplings):
        layers += [nn.Conv2d(width * 2 ** k, width * 2 ** (k + 1), 4, 2, 1), nn.InstanceNorm2d(width * 2 ** (k + 1)),
                   nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, residual_stack(width * 2 ** downsamplings, blocks))


def private_generator(channels: int, width: int, downsamplings: int, blocks: int) -> nn.Sequential:
    """A domain's low-level generator layers: shared features -> image in [-1, 1]."""
    layers: list[nn.Module] = [residual_stack(width * 2 ** downsamplings, blocks)]
    for k in reversed(range(downsamplings)):
        layers += [nn.ConvTranspose2d(width * 2 ** (k + 1), width * 2 ** k, 4, 2, 1), nn.InstanceNorm2d(width * 2 ** k),
                   nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Conv2d(width, channels, 1), nn.Tanh())


class UNITTranslator(nn.Module):
    """E_1, E_2, G_1, G_2 with shared high-level layers: index 0 is domain 1 (A), index 1 domain 2 (B).

    ``encode(x, i)`` = shared_encoder(encoders[i](x)), the mean of z;
    ``decode(z, i)`` = decoders[i](shared_decoder(z)). ``forward(a, b)`` runs
    everything one G step needs in one call (DistributedDataParallel wants the
    module's forward, not its parts).
    """

    def __init__(self, encoders: list[nn.Module], shared_encoder: nn.Module, shared_decoder: nn.Module,
                 decoders: list[nn.Module]):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.shared_encoder = shared_encoder
        self.shared_decoder = shared_decoder
        self.decoders = nn.ModuleList(decoders)

    def encode(self, images: Tensor, domain: int) -> Tensor:
        return self.shared_encoder(self.encoders[domain](images))

    def decode(self, codes: Tensor, domain: int) -> Tensor:
        return self.decoders[domain](self.shared_decoder(codes))

    def sample(self, mu: Tensor) -> Tensor:
        """z = mu + eps, eps ~ N(0, I): the reparameterised draw from q(z | x) of unit variance."""
        return mu + torch.randn_like(mu)

    def translate(self, images: Tensor, source: Tensor, target: Tensor) -> Tensor:
        """G_target(E_source(x)) per row at the mean code; source == target reconstructs."""
        def rows(domains: Tensor) -> Tensor:
            return domains.view(-1, 1, 1, 1) == 1

        codes = torch.where(rows(source), self.encode(images, 1), self.encode(images, 0))
        return torch.where(rows(target), self.decode(codes, 1), self.decode(codes, 0))

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """Codes, reconstructions, translations and cycle reconstructions of domain-A images a and B images b."""
        mu_a, mu_b = self.encode(a, 0), self.encode(b, 1)
        z_a, z_b = self.sample(mu_a), self.sample(mu_b)
        a_to_b, b_to_a = self.decode(z_a, 1), self.decode(z_b, 0)
        mu_ab, mu_ba = self.encode(a_to_b, 1), self.encode(b_to_a, 0)
        return {"mu_a": mu_a, "mu_b": mu_b, "recon_a": self.decode(z_a, 0), "recon_b": self.decode(z_b, 1),
                "a_to_b": a_to_b, "b_to_a": b_to_a, "mu_ab": mu_ab, "mu_ba": mu_ba,
                "cycle_a": self.decode(self.sample(mu_ab), 0), "cycle_b": self.decode(self.sample(mu_ba), 1)}


class CoupledDiscriminators(nn.Module):
    """D_1 (judges domain A) and D_2 (domain B); ``forward(a, b)`` gives both patch score maps in one call."""

    def __init__(self, channels: int, width: int, layers: int):
        super().__init__()
        self.judges = nn.ModuleList(PatchDiscriminator(channels, width, layers, norm="none") for _ in range(2))

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        return self.judges[0](a)[-1], self.judges[1](b)[-1]


class UNITExport(nn.Module):
    """concat(image, target plane t) -> t * G_2(E_1(x)) + (1 - t) * G_1(E_2(x)), at the mean codes.

    t = 0 asks for domain A (the image is from B), t = 1 for domain B. Both
    translations are computed and blended, so no branch depends on the data.
    """

    def __init__(self, translator: UNITTranslator, channels: int):
        super().__init__()
        self.translator, self.channels = translator, channels

    def forward(self, inputs: Tensor) -> Tensor:
        images, target = inputs[:, :self.channels], inputs[:, self.channels:self.channels + 1]
        to_b = self.translator.decode(self.translator.encode(images, 0), 1)
        to_a = self.translator.decode(self.translator.encode(images, 1), 0)
        return target * to_b + (1 - target) * to_a


class UNITTranslationExport(TranslationExport):
    """The registered UNIT model: inputs are the source image and one constant target-domain plane."""

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random images in [-1, 1] with alternating targets (B, A, B, ...): rows of domain A go to B."""
        g = torch.Generator().manual_seed(seed)
        channels, height, width = self.condition_shape
        images = torch.rand(n, channels - 1, height, width, generator=g) * 2 - 1
        target = (1 - torch.arange(n) % 2).float().view(n, 1, 1, 1).expand(n, 1, height, width)
        return torch.cat([images, target], dim=1)


@register
class UNIT(Family):
    name = "unit"
    task = TaskKind.UNPAIRED_TRANSLATION
    paper = ("Liu, Breuel and Kautz, Unsupervised Image-to-Image Translation Networks, NeurIPS 2017 "
             "(arXiv:1703.00848)")
    Config = UNITConfig
    tiny = {"width": 4, "d_width": 4, "d_layers": 1}

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        if cfg.gan_loss not in GAN_LOSSES:
            raise ConfigError(f"family {self.name}: gan_loss {cfg.gan_loss!r} is not one of {GAN_LOSSES}")
        if spec.image_size % 2 ** cfg.downsamplings or spec.image_size // 2 ** cfg.downsamplings < 2:
            # instance norm needs codes of at least 2 x 2
            raise ConfigError(f"family {self.name}: image_size {spec.image_size} must be a multiple of "
                              f"{2 ** cfg.downsamplings} and at least {2 ** (cfg.downsamplings + 1)} for "
                              f"{cfg.downsamplings} downsamplings")
        code_channels = cfg.width * 2 ** cfg.downsamplings
        translator = UNITTranslator(
            [private_encoder(spec.channels, cfg.width, cfg.downsamplings, cfg.private_blocks) for _ in range(2)],
            residual_stack(code_channels, cfg.shared_blocks), residual_stack(code_channels, cfg.shared_blocks),
            [private_generator(spec.channels, cfg.width, cfg.downsamplings, cfg.private_blocks) for _ in range(2)])
        translator.apply(kaiming_init)
        discriminators = CoupledDiscriminators(spec.channels, cfg.d_width, cfg.d_layers)
        discriminators.apply(dcgan_init)  # the official code's N(0, 0.02) for D
        return {"G": translator, "D": discriminators}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        # G translates the images D just judged (the official code's dis_update then gen_update on one batch)
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    @staticmethod
    def split_domains(batch: ImageBatch) -> tuple[Tensor, Tensor]:
        if batch.domains is None:
            raise DataError("unit: the batch has no domains")
        a, b = batch.images[batch.domains == 0], batch.images[batch.domains == 1]
        if len(a) == 0 or len(b) == 0:
            raise DataError(f"unit: a batch needs images of both domains; it has {len(a)} of A, {len(b)} of B")
        return a, b

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        a, b = self.split_domains(batch)
        with torch.no_grad():
            translator: UNITTranslator = unwrap(nets["G"])
            a_to_b = translator.decode(translator.sample(translator.encode(a, 0)), 1)
            b_to_a = translator.decode(translator.sample(translator.encode(b, 1)), 0)
        # one call judges real then translated images of each domain
        scores_a, scores_b = nets["D"](torch.cat([a, b_to_a]), torch.cat([b, a_to_b]))
        real_a, fake_a = scores_a[:len(a)], scores_a[len(a):]
        real_b, fake_b = scores_b[:len(b)], scores_b[len(b):]
        kind = self.config.gan_loss
        loss_a, loss_b = unit_discriminator_loss(real_a, fake_a, kind), unit_discriminator_loss(real_b, fake_b, kind)
        loss = loss_a + loss_b
        return loss, {"d_loss": loss.item(), "d_loss_a": loss_a.item(), "d_loss_b": loss_b.item(),
                      "d_real": torch.cat([real_a.flatten(), real_b.flatten()]).mean().item(),
                      "d_fake": torch.cat([fake_a.flatten(), fake_b.flatten()]).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        cfg = self.config
        a, b = self.split_domains(batch)
        out = nets["G"](a, b)
        scores_a, scores_b = nets["D"](out["b_to_a"], out["a_to_b"])
        adversarial = (unit_generator_adversarial_loss(scores_a, cfg.gan_loss)
                       + unit_generator_adversarial_loss(scores_b, cfg.gan_loss))
        vae_a, kl_a, recon_a = vae_terms(out["mu_a"], out["recon_a"], a, cfg.kl_weight, cfg.reconstruction_weight)
        vae_b, kl_b, recon_b = vae_terms(out["mu_b"], out["recon_b"], b, cfg.kl_weight, cfg.reconstruction_weight)
        cycle_a, cycle_kl_a, cycle_l1_a = vae_terms(out["mu_ab"], out["cycle_a"], a, cfg.cycle_kl_weight,
                                                    cfg.cycle_weight)
        cycle_b, cycle_kl_b, cycle_l1_b = vae_terms(out["mu_ba"], out["cycle_b"], b, cfg.cycle_kl_weight,
                                                    cfg.cycle_weight)
        loss = cfg.gan_weight * adversarial + vae_a + vae_b + cycle_a + cycle_b
        return loss, {"g_loss": loss.item(), "g_adv": adversarial.item(), "g_kl": (kl_a + kl_b).item(),
                      "g_recon": (recon_a + recon_b).item(), "g_cycle_kl": (cycle_kl_a + cycle_kl_b).item(),
                      "g_cycle": (cycle_l1_a + cycle_l1_b).item()}

    @torch.no_grad()
    def generate(self, n: int, condition: DomainCondition | None = None) -> Tensor:
        """G_target(E_source(x)) for each source image at the mean code (no latent noise): source 0 (A) -> G_2(E_1(x)),
        source 1 (B) -> G_1(E_2(x)); a target equal to the source gives the VAE reconstruction."""
        if not isinstance(condition, DomainCondition):
            raise DataError(f"family {self.name} translates images: generate needs a DomainCondition")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} source images for {n} outputs")
        condition = condition.to(self.device)
        return unwrap(self.nets["G"]).translate(condition.images, condition.source, condition.target)

    def export_generator(self) -> TranslationExport:
        spec = self.spec
        return UNITTranslationExport(UNITExport(unwrap(self.nets["G"]), spec.channels),
                                     (spec.channels + 1, spec.image_size, spec.image_size), "image")
