"""DiscoGAN (Kim et al., 2017): two coupled GANs that discover a cross-domain relation from unpaired data.

G_AB maps domain A to B and G_BA maps back; D_B judges G_AB's outputs against
real B images and D_A judges G_BA's against real A. Every translation is also
mapped back, and the round trip must return the input: the reconstruction
L_CONST_A = d(G_BA(G_AB(x_A)), x_A), with d the mean squared error, and the
same from B. The generator objective is L_G = L_GAN_B + L_CONST_A + L_GAN_A +
L_CONST_B (non-saturating L_GAN = -E[log D(G(x))]), the discriminators'
L_D = L_D_A + L_D_B (the standard BCE).

The generators are plain encoder-decoders: 4 x 4 stride-2 convolutions with
LeakyReLU(0.2) (batch norm on all but the first) down to a 4 x 4 bottleneck,
then 4 x 4 stride-2 transposed convolutions with batch norm and ReLU, and tanh
on the image. Unlike pix2pix's U-Net there are no skip connections: every
output pixel is decoded from the bottleneck alone, which is what lets the
generators change shape (handbags to shoes) and not only texture. The
discriminators are DCGAN classifiers of the same depth (``DCGANDiscriminator``)
ending in one logit. Adam, lr 2e-4, betas (0.5, 0.999), and the official
code's weight decay of 1e-5 (the paper states none).

Each phase changes only its own module, buffers included: the frozen
module's forward pass (G's under D's phase, D's under G's) still normalises
with batch statistics, as in training, but leaves its running averages as
they were (``running_stats_frozen``).

Left out, from the official code (SKTBrain/DiscoGAN), none of it in the paper:
its generator loss 0.1 GAN + 0.9 feature matching (a hinge on D's mean
features), weighted against the reconstruction by 0.99 / 0.01 for the first
10k iterations and 0.5 / 0.5 after; its D update only every third iteration
(G on the other two); D's halved loss; and its sigmoid outputs for images in
[0, 1] (tanh here, for ganzoo's [-1, 1]).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DataSpec, DomainCondition, Family, ImageBatch, LossResult, Networks, Phase,
                                      TaskKind, TranslationExport, unwrap)
from components.nets.dcgan import DCGANDiscriminator, dcgan_init

# --- losses ----------------------------------------------------------------------------------------


def discogan_reconstruction_loss(reconstructed: Tensor, original: Tensor) -> Tensor:
    """L_CONST = d(G_BA(G_AB(x_A)), x_A) with d the mean squared error (the paper's L2 distance)."""
    return F.mse_loss(reconstructed, original)


def discogan_generator_loss(fake_b_logits: Tensor, fake_a_logits: Tensor, reconstructed_a: Tensor, real_a: Tensor,
                            reconstructed_b: Tensor, real_b: Tensor, gan_weight: float = 1.0,
                            reconstruction_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """(L_G, its four terms): L_GAN_B + L_CONST_A + L_GAN_A + L_CONST_B, the GAN and reconstruction terms weighted.

    ``fake_b_logits`` are D_B's logits of G_AB(x_A), ``fake_a_logits`` D_A's of
    G_BA(x_B); the GAN terms are non-saturating, -E[log D(G(x))].
    """
    terms = {"gan_b": losses.nonsaturating_generator_loss(fake_b_logits),
             "const_a": discogan_reconstruction_loss(reconstructed_a, real_a),
             "gan_a": losses.nonsaturating_generator_loss(fake_a_logits),
             "const_b": discogan_reconstruction_loss(reconstructed_b, real_b)}
    total = (gan_weight * (terms["gan_b"] + terms["gan_a"])
             + reconstruction_weight * (terms["const_a"] + terms["const_b"]))
    return total, terms


def discogan_discriminator_loss(real_a_logits: Tensor, fake_a_logits: Tensor, real_b_logits: Tensor,
                                fake_b_logits: Tensor) -> Tensor:
    """L_D = L_D_A + L_D_B, each the BCE -E[log D(x)] - E[log(1 - D(G(x)))] of its domain."""
    return (losses.bce_discriminator_loss(real_a_logits, fake_a_logits)
            + losses.bce_discriminator_loss(real_b_logits, fake_b_logits))


# --- frozen batch statistics -----------------------------------------------------------------------


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Batch norm inside normalises with batch statistics but leaves its running averages unchanged.

    Momentum 0 makes the running update x <- 1 * x + 0 * batch exact; the batch
    counter is put back afterwards. The frozen module's phase-mate thus changes
    nothing of it, buffers included.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


# --- networks --------------------------------------------------------------------------------------


def encoder_depth(image_size: int, bottleneck_size: int) -> int:
    """How many stride-2 layers halve ``image_size`` down to ``bottleneck_size`` (at least one)."""
    depth, size = 0, image_size
    while size > bottleneck_size and size % 2 == 0:
        size //= 2
        depth += 1
    if size != bottleneck_size or depth == 0:
        raise ConfigError(f"family discogan: image_size {image_size} is not bottleneck_size {bottleneck_size} "
                          "times a power of two")
    return depth


class EncoderDecoder(nn.Module):
    """image -> bottleneck -> image in [-1, 1]: no skip connections, the decoder sees the bottleneck only."""

    def __init__(self, channels: int, image_size: int, bottleneck_size: int, width: int, max_width: int):
        super().__init__()
        depth = encoder_depth(image_size, bottleneck_size)
        widths = [min(width * 2 ** i, max_width) for i in range(depth)]
        encoder: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for w_in, w_out in zip(widths, widths[1:]):
            encoder += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2, True)]
        decoder: list[nn.Module] = []
        for w_in, w_out in zip(widths[::-1], widths[-2::-1]):
            decoder += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        decoder += [nn.ConvTranspose2d(widths[0], channels, 4, 2, 1), nn.Tanh()]
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)
        self.depth = depth
        self.apply(dcgan_init)

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.encoder(images))


class GeneratorPair(nn.Module):
    """Module "G": ``forward(a, b)`` = (G_AB(a), G_BA(b)); calling it on (G_BA(b), G_AB(a)) closes both cycles."""

    def __init__(self, channels: int, image_size: int, bottleneck_size: int, width: int, max_width: int):
        super().__init__()
        self.a_to_b = EncoderDecoder(channels, image_size, bottleneck_size, width, max_width)
        self.b_to_a = EncoderDecoder(channels, image_size, bottleneck_size, width, max_width)

    def forward(self, images_a: Tensor, images_b: Tensor) -> tuple[Tensor, Tensor]:
        return self.a_to_b(images_a), self.b_to_a(images_b)


class DiscriminatorPair(nn.Module):
    """Module "D": ``forward(a, b)`` = (D_A(a), D_B(b)), one logit per image."""

    def __init__(self, channels: int, image_size: int, width: int):
        super().__init__()
        self.a = DCGANDiscriminator(channels, image_size, width, norm="batch")
        self.b = DCGANDiscriminator(channels, image_size, width, norm="batch")

    def forward(self, images_a: Tensor, images_b: Tensor) -> tuple[Tensor, Tensor]:
        return self.a(images_a), self.b(images_b)


# --- export ----------------------------------------------------------------------------------------


class TargetMixedTranslator(nn.Module):
    """inputs = image and a target plane t (0 = A, 1 = B) -> (1 - t) G_BA(x) + t G_AB(x): no branch on values."""

    def __init__(self, generators: GeneratorPair, channels: int):
        super().__init__()
        self.generators, self.channels = generators, channels

    def forward(self, inputs: Tensor) -> Tensor:
        images, target = inputs[:, :self.channels], inputs[:, self.channels:self.channels + 1]
        return (1 - target) * self.generators.b_to_a(images) + target * self.generators.a_to_b(images)


class DiscoGANExport(TranslationExport):
    """The registry's DiscoGAN: inputs N x (C + 1) x H x W, the source image then a constant target-domain plane."""

    def __init__(self, generators: GeneratorPair, spec: DataSpec):
        super().__init__(TargetMixedTranslator(generators, spec.channels),
                         (spec.channels + 1, spec.image_size, spec.image_size), "image_and_target_domain")
        self.channels = spec.channels

    @staticmethod
    def inputs(images: Tensor, target: Tensor) -> Tensor:
        """The export's input of source images and their target domains (int64 N, 0 = A, 1 = B)."""
        plane = target.to(images.dtype).view(-1, 1, 1, 1).expand(-1, 1, *images.shape[2:])
        return torch.cat([images, plane], dim=1)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random images in [-1, 1], translated to B and A in turn."""
        g = torch.Generator().manual_seed(seed)
        _, height, width = self.condition_shape
        images = torch.rand(n, self.channels, height, width, generator=g) * 2 - 1
        return self.inputs(images, (torch.arange(n) + 1) % 2)


# --- the family ------------------------------------------------------------------------------------


@dataclass
class DiscoGANConfig:
    # Encoder-decoder: first layer's channels, doubling per stride-2 layer up to g_max_width, down to a
    # bottleneck_size square (the paper: 64 -> 512 channels, 64 px to 4 x 4). At 32 px: 16, 32, 64 channels to
    # 4 x 4 x 64, and D 16, 32, 64 then a 4 x 4 logit, so one iteration (D and G phases, batch 32, 32 x 32)
    # takes about 0.09 s of one CPU thread (median process CPU time; widths 32 take 0.15 s).
    g_width: int = 16
    g_max_width: int = 128
    bottleneck_size: int = 4
    d_width: int = 16
    gan_weight: float = 1.0  # the paper's L_G weighs its four terms equally
    reconstruction_weight: float = 1.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-5  # the official code's, on G and D (the paper names none)


@register
class DiscoGAN(Family):
    name = "discogan"
    task = TaskKind.UNPAIRED_TRANSLATION
    paper = ("Kim et al., Learning to Discover Cross-Domain Relations with Generative Adversarial Networks, "
             "ICML 2017 (arXiv:1703.05192)")
    Config = DiscoGANConfig
    tiny = {"g_width": 4, "g_max_width": 8, "d_width": 4}

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        return {"G": GeneratorPair(spec.channels, spec.image_size, cfg.bottleneck_size, cfg.g_width, cfg.g_max_width),
                "D": DiscriminatorPair(spec.channels, spec.image_size, cfg.d_width)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        return {name: torch.optim.Adam(self.nets[name].parameters(), cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                       weight_decay=cfg.weight_decay) for name in ("G", "D")}

    def phases(self) -> list[Phase]:
        # G translates the very images D has just judged: it reuses D's batch
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    @staticmethod
    def split_domains(batch: ImageBatch) -> tuple[Tensor, Tensor]:
        """(the batch's A images, its B images); the sampler balances them."""
        if batch.domains is None:
            raise DataError("family discogan: the batch has no domains")
        a, b = batch.images[batch.domains == 0], batch.images[batch.domains == 1]
        if len(a) == 0 or len(b) == 0:
            raise DataError(f"family discogan: a batch needs images of both domains (A: {len(a)}, B: {len(b)})")
        return a, b

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        real_a, real_b = self.split_domains(batch)
        with torch.no_grad(), running_stats_frozen(nets["G"]):
            fake_b, fake_a = nets["G"](real_a, real_b)
        real_a_logits, real_b_logits = nets["D"](real_a, real_b)
        fake_a_logits, fake_b_logits = nets["D"](fake_a, fake_b)
        loss = discogan_discriminator_loss(real_a_logits, fake_a_logits, real_b_logits, fake_b_logits)
        real_logits, fake_logits = torch.cat([real_a_logits, real_b_logits]), torch.cat([fake_a_logits, fake_b_logits])
        return loss, {"d_loss": loss.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
                      "d_fake": torch.sigmoid(fake_logits).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        real_a, real_b = self.split_domains(batch)
        fake_b, fake_a = nets["G"](real_a, real_b)
        reconstructed_b, reconstructed_a = nets["G"](fake_a, fake_b)
        with running_stats_frozen(nets["D"]):
            fake_a_logits, fake_b_logits = nets["D"](fake_a, fake_b)
        cfg = self.config
        loss, terms = discogan_generator_loss(fake_b_logits, fake_a_logits, reconstructed_a, real_a, reconstructed_b,
                                              real_b, cfg.gan_weight, cfg.reconstruction_weight)
        return loss, {"g_loss": loss.item(), **{f"g_{k}": v.item() for k, v in terms.items()}}

    @torch.no_grad()
    def generate(self, n: int, condition: DomainCondition | None = None) -> Tensor:
        """Each image of ``condition`` translated to its target domain: G_AB to B (1), G_BA to A (0).

        The target picks the generator, as in the export; for unpaired data it is the
        source's other domain, so source A means G_AB and source B means G_BA.
        """
        if condition is None:
            raise DataError(f"family {self.name} translates images: generate needs a DomainCondition")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} source images for {n} outputs")
        generators: GeneratorPair = unwrap(self.nets["G"])
        images, target = condition.images.to(self.device), condition.target.to(self.device)
        to_b = target == 1
        outputs = torch.empty_like(images)
        if to_b.any():
            outputs[to_b] = generators.a_to_b(images[to_b])
        if (~to_b).any():
            outputs[~to_b] = generators.b_to_a(images[~to_b])
        return outputs

    def export_generator(self) -> DiscoGANExport:
        return DiscoGANExport(unwrap(self.nets["G"]), self.spec)
