"""MUNIT (Huang, Liu, Belongie & Kautz, 2018): multimodal unsupervised image-to-image translation.

Each domain i has an auto-encoder: a content encoder E^c_i (a 7x7 convolution,
stride-2 downsampling convolutions and residual blocks, all with instance norm:
the content code c is a spatial map), a style encoder E^s_i (convolutions
without normalisation, which would erase the very statistics that carry style,
global average pooling and a 1x1 convolution to an 8-dimensional style code s)
and a decoder G_i (residual blocks with adaptive instance norm
AdaIN(z, gamma, beta) = gamma (z - mu(z)) / sigma(z) + beta, whose gammas and
betas an MLP computes from s; nearest-neighbour upsampling with 5x5
convolutions and layer norm; a 7x7 convolution and tanh). A translation keeps
the content and draws the style: x_{1->2} = G_2(E^c_1(x_1), s_2) with
s_2 ~ N(0, I), so one input has many outputs.

Objective (the paper's eq. 5), for both directions:
    L_GAN^{x1} + L_GAN^{x2} + lambda_x (L^{x1} + L^{x2}) + lambda_c (L^{c1} + L^{c2}) + lambda_s (L^{s1} + L^{s2})
with L^{x1} = E|G_1(E^c_1(x_1), E^s_1(x_1)) - x_1| (image reconstruction),
L^{c1} = E|E^c_2(x_{1->2}) - c_1| and L^{s2} = E|E^s_2(x_{1->2}) - s_2| (latent
reconstruction), lambda_x = 10, lambda_c = lambda_s = 1, and LSGAN adversarial
terms from one multi-scale PatchGAN per domain (no normalisation, leaky ReLU),
summed over its scales. The explicit cycle term lambda_cyc E|x_{1->2->1} - x_1|
(decoding x_{1->2}'s content with x_1's own style) is the paper's option for
some datasets; it is off (0) by default as in most of its experiments.
Adam(lr 1e-4, betas (0.5, 0.999), weight decay 1e-4); D's step, then G's on
the same batch. Initialisation as the authors' code: He (Kaiming) for G, N(0,
0.02) for D.

Sampling: ``generate`` draws a new style per image and call from N(0, I)
(latent-guided), or, when the condition carries references, uses the target
domain's style encoder on them (reference-guided, the paper's example-guided
translation). The export takes [image | target plane t | style planes] and mixes
both directions as t G_B(E^c_A(x), s) + (1 - t) G_A(E^c_B(x), s), so one graph
serves A -> B and B -> A without branching on values.

Left out: the paper's step decay of the learning rate (halved every 100k
iterations, longer than the runs here); the authors' optional VGG perceptual
term (off in the paper's main results); the official code's variant of layer
norm (per-sample standard deviation, uniform-initialised gains): here it is
GroupNorm with one group, unit gains; its reflection padding (zero padding
here, a fifth cheaper on CPU). Widths, kernels and the discriminator are
shrunk for 32 px digits on CPUs (see the Config).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DomainCondition, Family, ImageBatch, LossResult, Networks, Phase, TaskKind,
                                      TranslationExport, unwrap)
from components.nets.dcgan import dcgan_init
from components.nets.patchgan import MultiScaleDiscriminator

DOMAIN_A, DOMAIN_B = 0, 1


# --- pure pieces of the method -------------------------------------------------------------------


def adaptive_instance_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """gamma (x - mu(x)) / sigma(x) + beta per instance and channel; gamma, beta are N x C (the style MLP's output).

    sigma is the biased standard deviation over the spatial positions, as instance norm computes it.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    normalised = (x - mean) * torch.rsqrt(var + eps)
    return gamma[:, :, None, None] * normalised + beta[:, :, None, None]


def lsgan_multiscale_discriminator_loss(real_scales: list[Tensor], fake_scales: list[Tensor]) -> Tensor:
    """sum_k E[(D_k(x) - 1)^2] + E[D_k(x_fake)^2]: the paper's LSGAN objective, summed over D's scales.

    The shared LSGAN loss carries a factor 1/2; the paper's weights (lambda_x = 10 against an adversarial
    weight of 1) are relative to the unhalved terms, hence the 2.
    """
    return sum(2 * losses.least_squares_discriminator_loss(real, fake) for real, fake in zip(real_scales, fake_scales))


def lsgan_multiscale_generator_loss(fake_scales: list[Tensor]) -> Tensor:
    """sum_k E[(D_k(x_fake) - 1)^2]: G wants every scale to score its translations as real."""
    return sum(2 * losses.least_squares_generator_loss(fake) for fake in fake_scales)


def reconstruction_terms(outputs: dict[str, Tensor], images_a: Tensor, images_b: Tensor, styles_a: Tensor,
                         styles_b: Tensor) -> dict[str, Tensor]:
    """MUNIT's L1 terms, each summed over both domains, from ``MUNITGenerator.forward``'s outputs.

    ``image``: E|x_1' - x_1| + E|x_2' - x_2| (auto-encoding with the image's own style);
    ``content``: E|E^c_2(x_{1->2}) - c_1| + E|E^c_1(x_{2->1}) - c_2|;
    ``style``: E|E^s_2(x_{1->2}) - s_2| + E|E^s_1(x_{2->1}) - s_1| with s_1, s_2 the sampled styles
    (``styles_a`` decoded x_{2->1}, ``styles_b`` x_{1->2});
    ``cycle`` (only when the outputs hold the cycle images): E|x_{1->2->1} - x_1| + E|x_{2->1->2} - x_2|.
    """
    l1 = losses.l1_reconstruction_loss
    terms = {
        "image": l1(outputs["recon_a"], images_a) + l1(outputs["recon_b"], images_b),
        "content": l1(outputs["content_a_back"], outputs["content_a"])
        + l1(outputs["content_b_back"], outputs["content_b"]),
        "style": l1(outputs["style_a_back"], styles_a) + l1(outputs["style_b_back"], styles_b),
    }
    if "cycle_a" in outputs:
        terms["cycle"] = l1(outputs["cycle_a"], images_a) + l1(outputs["cycle_b"], images_b)
    return terms


def munit_generator_objective(adversarial: Tensor, terms: dict[str, Tensor], image_weight: float,
                              content_weight: float, style_weight: float, cycle_weight: float = 0.0) -> Tensor:
    """L_GAN + lambda_x L_x + lambda_c L_c + lambda_s L_s (+ lambda_cyc L_cyc when the cycle term is there)."""
    total = (adversarial + image_weight * terms["image"] + content_weight * terms["content"]
             + style_weight * terms["style"])
    if "cycle" in terms:
        total = total + cycle_weight * terms["cycle"]
    return total


# --- networks ------------------------------------------------------------------------------------


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """A "same" convolution (stride 1, odd kernel) or a halving one (stride 2, kernel 4).

    Zero padding, where the authors' code reflects: the separate padding op cost a fifth of an iteration on CPU.
    """
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 1)


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))): the content encoder's blocks."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(),
                                  conv(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class AdaINResidualBlock(nn.Module):
    """x + AdaIN(conv(ReLU(AdaIN(conv(x))))): the decoder's blocks.

    ``params`` (N x 4C, from the style MLP) are (gamma_1, beta_1, gamma_2, beta_2), C values each.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.conv_1, self.conv_2 = conv(channels, channels, 3), conv(channels, channels, 3)

    @property
    def num_params(self) -> int:
        return 4 * self.channels

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        gamma_1, beta_1, gamma_2, beta_2 = params.split(self.channels, dim=1)
        h = F.relu(adaptive_instance_norm(self.conv_1(x), gamma_1, beta_1))
        return x + adaptive_instance_norm(self.conv_2(h), gamma_2, beta_2)


class ContentEncoder(nn.Module):
    """Image -> content code N x width 2^d x H / 2^d x W / 2^d (d downsamplings), instance norm throughout."""

    def __init__(self, channels: int, width: int, downsamples: int, residual_blocks: int, edge_kernel: int = 7):
        super().__init__()
        layers: list[nn.Module] = [conv(channels, width, edge_kernel), nn.InstanceNorm2d(width), nn.ReLU()]
        for _ in range(downsamples):
            layers += [conv(width, 2 * width, 4, stride=2), nn.InstanceNorm2d(2 * width), nn.ReLU()]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(residual_blocks)]
        self.net = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class StyleEncoder(nn.Module):
    """Image -> style code N x style_dim: convolutions with ReLU and no normalisation, global average pool, 1x1 conv.

    Widths double over the first two downsamplings and then stay (the paper's 64, 128, 256, 256, 256).
    """

    def __init__(self, channels: int, width: int, downsamples: int, style_dim: int, edge_kernel: int = 7):
        super().__init__()
        layers: list[nn.Module] = [conv(channels, width, edge_kernel), nn.ReLU()]
        for k in range(downsamples):
            out = 2 * width if k < 2 else width
            layers += [conv(width, out, 4, stride=2), nn.ReLU()]
            width = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, style_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).flatten(1)


class Decoder(nn.Module):
    """(content, style) -> image in [-1, 1]: AdaIN residual blocks fed by the style MLP, upsampling with layer
    norm, tanh."""

    def __init__(self, channels: int, content_channels: int, upsamples: int, residual_blocks: int, style_dim: int,
                 mlp_dim: int, edge_kernel: int = 7, upsample_kernel: int = 5):
        super().__init__()
        self.blocks = nn.ModuleList(AdaINResidualBlock(content_channels) for _ in range(residual_blocks))
        self.mlp = nn.Sequential(nn.Linear(style_dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, mlp_dim), nn.ReLU(),
                                 nn.Linear(mlp_dim, sum(block.num_params for block in self.blocks)))
        layers: list[nn.Module] = []
        width = content_channels
        for _ in range(upsamples):
            # GroupNorm with one group: layer norm over (C, H, W) per image, with per-channel gains and biases
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv(width, width // 2, upsample_kernel),
                       nn.GroupNorm(1, width // 2), nn.ReLU()]
            width //= 2
        layers += [conv(width, channels, edge_kernel), nn.Tanh()]
        self.upsample = nn.Sequential(*layers)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        params = self.mlp(style).split([block.num_params for block in self.blocks], dim=1)
        x = content
        for block, block_params in zip(self.blocks, params):
            x = block(x, block_params)
        return self.upsample(x)


class DomainAutoEncoder(nn.Module):
    """One domain's content encoder, style encoder and decoder."""

    def __init__(self, channels: int, cfg: "MUNITConfig"):
        super().__init__()
        self.content_encoder = ContentEncoder(channels, cfg.width, cfg.downsamples, cfg.residual_blocks,
                                              cfg.edge_kernel)
        self.style_encoder = StyleEncoder(channels, cfg.width, cfg.style_downsamples, cfg.style_dim, cfg.edge_kernel)
        self.decoder = Decoder(channels, self.content_encoder.out_channels, cfg.downsamples, cfg.residual_blocks,
                               cfg.style_dim, cfg.mlp_dim, cfg.edge_kernel, cfg.upsample_kernel)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.content_encoder(images), self.style_encoder(images)


class MUNITGenerator(nn.Module):
    """G: both domains' auto-encoders (``domains[0]`` is A, ``domains[1]`` B).

    ``forward`` computes, in one call (so the module works inside
    DistributedDataParallel), everything G's losses read; ``translate`` and
    ``style_of`` serve sampling.
    """

    def __init__(self, channels: int, cfg: "MUNITConfig"):
        super().__init__()
        self.domains = nn.ModuleList(DomainAutoEncoder(channels, cfg) for _ in range(2))

    def forward(self, images_a: Tensor, images_b: Tensor, styles_a: Tensor, styles_b: Tensor,
                cycle: bool = False) -> dict[str, Tensor]:
        """Auto-encodings, translations x_{B->A} = G_A(c_B, styles_a) and x_{A->B} = G_B(c_A, styles_b),
        and the codes re-encoded from the translations (and, with ``cycle``, the images decoded back)."""
        auto_a, auto_b = self.domains
        content_a, own_style_a = auto_a.encode(images_a)
        content_b, own_style_b = auto_b.encode(images_b)
        fake_ba = auto_a.decoder(content_b, styles_a)
        fake_ab = auto_b.decoder(content_a, styles_b)
        content_b_back, style_a_back = auto_a.encode(fake_ba)
        content_a_back, style_b_back = auto_b.encode(fake_ab)
        outputs = {"content_a": content_a, "content_b": content_b,
                   "recon_a": auto_a.decoder(content_a, own_style_a), "recon_b": auto_b.decoder(content_b, own_style_b),
                   "fake_ba": fake_ba, "fake_ab": fake_ab, "content_a_back": content_a_back,
                   "content_b_back": content_b_back, "style_a_back": style_a_back, "style_b_back": style_b_back}
        if cycle:
            outputs["cycle_a"] = auto_a.decoder(content_a_back, own_style_a)
            outputs["cycle_b"] = auto_b.decoder(content_b_back, own_style_b)
        return outputs

    def translate(self, images: Tensor, source_domain: int, style: Tensor) -> Tensor:
        """G_other(E^c_source(images), style): ``images`` of ``source_domain`` into the other domain."""
        content = self.domains[source_domain].content_encoder(images)
        return self.domains[1 - source_domain].decoder(content, style)

    def style_of(self, images: Tensor, domain: int) -> Tensor:
        """E^s_domain(images): the style codes of images of ``domain``."""
        return self.domains[domain].style_encoder(images)


class MUNITDiscriminators(nn.Module):
    """D: one multi-scale LSGAN PatchGAN per domain; ``forward(a, b)`` gives each one's per-scale logits."""

    def __init__(self, channels: int, cfg: "MUNITConfig"):
        super().__init__()
        self.domains = nn.ModuleList(
            MultiScaleDiscriminator(channels, cfg.d_scales, cfg.d_width, cfg.d_layers, norm="none", spectral=False)
            for _ in range(2))

    def forward(self, images_a: Tensor, images_b: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return tuple([scale[-1] for scale in d(images)] for d, images in zip(self.domains, (images_a, images_b)))


def pick_by_domain(domains: Tensor, of_a: Tensor, of_b: Tensor) -> Tensor:
    """Row i of ``of_a`` where domains[i] is A, of ``of_b`` where it is B."""
    rows_b = (domains == DOMAIN_B).view(-1, *([1] * (of_a.dim() - 1)))
    return torch.where(rows_b, of_b, of_a)


def kaiming_init(module: nn.Module) -> None:
    """He-normal weights (fan in) and zero biases: the authors' initialisation of G."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=0.0, mode="fan_in")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def logit_side(image_size: int, scale: int, layers: int) -> int:
    """Side of MultiScaleDiscriminator's logit map at ``scale`` (0 = full size): its avg-pools, then the convs."""
    side = image_size
    for _ in range(scale):
        side = (side - 1) // 2 + 1  # avg_pool2d(3, stride 2, padding 1)
    for stride in [2] * layers + [1, 1]:  # the first conv and layers - 1 more with stride 2, then two of stride 1
        side = (side + 2 - 4) // stride + 1
    return side


# --- the family ----------------------------------------------------------------------------------


@dataclass
class MUNITConfig:
    # Auto-encoders (paper: width 64, two downsamplings, four residual blocks, a 3-layer MLP of 256 units).
    # One iteration (D + G, batch 32 = 16 per domain, 32 x 32) takes about 0.19 s of CPU on one thread (pix2pix's
    # default 0.08 in the same measurement): G's step runs both encoders on each image and on its translation
    # and the decoder twice, four full-resolution passes forward and back, and at 8 channels CPU convolutions
    # cost by the pixel, not the width (width 4 is hardly cheaper). residual_blocks=1 gives 0.16 s. Two
    # downsamplings keep the paper's content code at a quarter of the image side (8 x 8 at 32 px).
    width: int = 8
    downsamples: int = 2
    residual_blocks: int = 2
    style_downsamples: int = 4  # the paper's five stages: 32 px -> 2 x 2 before the global pool
    style_dim: int = 8  # the paper's
    mlp_dim: int = 64  # paper: 256; the style only has 8 dimensions to expand
    # Kernels of the full-resolution first and last convolutions (paper: 7) and of the decoder's after each
    # upsampling (paper: 5). The paper's see 3% and 2% of a 256 px side; 3 x 3 already sees a tenth of 32 px,
    # and costs a quarter less time per iteration (CPU convolutions at 8 channels are bound by the pixels)
    edge_kernel: int = 3
    upsample_kernel: int = 3
    # Discriminators (paper: 3 scales of four stride-2 convolutions from 64 channels at 256 px). At 32 px, two
    # scales with one stride-2 layer (PatchDiscriminator's layers=1: 16 px patches at full size, the whole
    # digit at half size) judge stroke and shape; a third scale would be 8 px wide and fail at 16 px.
    d_width: int = 16
    d_layers: int = 1
    d_scales: int = 2
    image_weight: float = 10.0  # lambda_x
    content_weight: float = 1.0  # lambda_c
    style_weight: float = 1.0  # lambda_s
    cycle_weight: float = 0.0  # lambda_cyc: the paper's default for most datasets
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-4


@register
class MUNIT(Family):
    name = "munit"
    task = TaskKind.UNPAIRED_TRANSLATION
    paper = ("Huang, Liu, Belongie & Kautz, Multimodal Unsupervised Image-to-Image Translation, ECCV 2018 "
             "(arXiv:1804.04732)")
    Config = MUNITConfig
    tiny = {"width": 4, "residual_blocks": 1, "mlp_dim": 8, "d_width": 4}

    # generate copies a reference's style, or samples a style code without references
    style_guided = True

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        self._check_sizes()
        generator, discriminators = MUNITGenerator(spec.channels, cfg), MUNITDiscriminators(spec.channels, cfg)
        generator.apply(kaiming_init)
        discriminators.apply(dcgan_init)  # the authors' N(0, 0.02) for D
        return {"G": generator, "D": discriminators}

    def _check_sizes(self) -> None:
        size, cfg = self.spec.image_size, self.config
        if size % 2 ** cfg.downsamples:
            raise ConfigError(f"family {self.name}: image_size {size} is not divisible by 2^downsamples "
                              f"= {2 ** cfg.downsamples}, so the decoder could not restore it")
        if size // 2 ** (cfg.style_downsamples - 1) < 2:
            raise ConfigError(f"family {self.name}: {cfg.style_downsamples} style downsamplings are too many for "
                              f"{size} px (the last one needs at least 2 x 2)")
        if logit_side(size, cfg.d_scales - 1, cfg.d_layers) < 1:
            raise ConfigError(f"family {self.name}: the discriminator's coarsest scale has no logits at {size} px "
                              f"(d_scales {cfg.d_scales}, d_layers {cfg.d_layers}); lower one of them")

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        return {name: torch.optim.Adam(self.nets[name].parameters(), cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                       weight_decay=cfg.weight_decay) for name in ("G", "D")}

    def phases(self) -> list[Phase]:
        # G's step uses D's batch, as the authors' loop updates both on each pair of images
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def sample_styles(self, n: int) -> Tensor:
        """n style codes from the prior N(0, I)."""
        return self.latent(n, self.config.style_dim)

    @staticmethod
    def split_domains(batch: ImageBatch) -> tuple[Tensor, Tensor]:
        """The batch's A images and B images."""
        if batch.domains is None:
            raise DataError("munit trains on unpaired data: the batch has no domains")
        a, b = batch.images[batch.domains == DOMAIN_A], batch.images[batch.domains == DOMAIN_B]
        if len(a) == 0 or len(b) == 0:
            raise DataError(f"munit needs images of both domains in every batch; got {len(a)} A and {len(b)} B")
        return a, b

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        a, b = self.split_domains(batch)
        generator: MUNITGenerator = unwrap(nets["G"])
        with torch.no_grad():  # fresh styles, as the authors' D step draws its own
            fake_ba = generator.translate(b, DOMAIN_B, self.sample_styles(len(b)))
            fake_ab = generator.translate(a, DOMAIN_A, self.sample_styles(len(a)))
        # one D call over reals and fakes together: D has no batch statistics, and one forward suits DDP
        scores_a, scores_b = nets["D"](torch.cat([a, fake_ba]), torch.cat([b, fake_ab]))
        loss_a = lsgan_multiscale_discriminator_loss([s[:len(a)] for s in scores_a], [s[len(a):] for s in scores_a])
        loss_b = lsgan_multiscale_discriminator_loss([s[:len(b)] for s in scores_b], [s[len(b):] for s in scores_b])
        loss = loss_a + loss_b
        return loss, {"d_loss": loss.item(), "d_loss_a": loss_a.item(), "d_loss_b": loss_b.item(),
                      "d_real": torch.cat([s[:len(a)].flatten() for s in scores_a]
                                          + [s[:len(b)].flatten() for s in scores_b]).mean().item(),
                      "d_fake": torch.cat([s[len(a):].flatten() for s in scores_a]
                                          + [s[len(b):].flatten() for s in scores_b]).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        cfg = self.config
        a, b = self.split_domains(batch)
        styles_a, styles_b = self.sample_styles(len(b)), self.sample_styles(len(a))
        outputs = nets["G"](a, b, styles_a, styles_b, cycle=cfg.cycle_weight > 0)
        scores_a, scores_b = nets["D"](outputs["fake_ba"], outputs["fake_ab"])
        adversarial = lsgan_multiscale_generator_loss(scores_a) + lsgan_multiscale_generator_loss(scores_b)
        terms = reconstruction_terms(outputs, a, b, styles_a, styles_b)
        loss = munit_generator_objective(adversarial, terms, cfg.image_weight, cfg.content_weight, cfg.style_weight,
                                         cfg.cycle_weight)
        return loss, {"g_loss": loss.item(), "g_adv": adversarial.item(),
                      **{f"g_recon_{name}": term.item() for name, term in terms.items()}}

    # -- sampling -----------------------------------------------------------------------------------

    @torch.no_grad()
    def translate(self, images: Tensor, source_domain: int, style: Tensor) -> Tensor:
        """``images`` of ``source_domain`` (0 = A, 1 = B) in the other domain, with style codes ``style`` (N x S)."""
        return unwrap(self.nets["G"]).translate(images.to(self.device), source_domain, style.to(self.device))

    @torch.no_grad()
    def generate(self, n: int, condition: DomainCondition | None = None) -> Tensor:
        """Each source image decoded by its target domain's decoder with a style from N(0, I) (drawn anew per
        image and call), or with the target domain's style encoder's code of ``condition.references``.

        A target equal to the source re-styles the image within its domain.
        """
        if not isinstance(condition, DomainCondition):
            raise DataError(f"family {self.name} translates images: generate needs a DomainCondition")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} source images for {n} outputs")
        condition = condition.to(self.device)
        source, target = condition.source.long(), condition.target.long()
        if not all(((domains == DOMAIN_A) | (domains == DOMAIN_B)).all() for domains in (source, target)):
            raise DataError("generate: munit's source and target domains must be 0 (A) or 1 (B)")
        generator: MUNITGenerator = unwrap(self.nets["G"])
        if condition.references is None:
            styles = self.sample_styles(n)
        else:
            styles = pick_by_domain(target, *(generator.style_of(condition.references, d)
                                              for d in (DOMAIN_A, DOMAIN_B)))
        # both encoders and both decoders on every row, each row picking its own: rows may mix directions
        content = pick_by_domain(source, *(generator.domains[d].content_encoder(condition.images)
                                           for d in (DOMAIN_A, DOMAIN_B)))
        return pick_by_domain(target, *(generator.domains[d].decoder(content, styles) for d in (DOMAIN_A, DOMAIN_B)))

    def export_generator(self) -> "MUNITExport":
        """A snapshot of G in eval mode behind the one-tensor [image | target plane | style planes] input."""
        snapshot = copy.deepcopy(unwrap(self.nets["G"])).eval()
        return MUNITExport(MixedDirectionTranslator(snapshot, self.spec.channels), self.spec.channels,
                           self.spec.image_size, self.config.style_dim).eval()


class MixedDirectionTranslator(nn.Module):
    """[image (C) | target plane t (1) | style planes (S)] -> t G_B(E^c_A(x), s) + (1 - t) G_A(E^c_B(x), s).

    Both directions run on every image and the target plane selects one, so
    the graph has no branch on values; s is each style plane's spatial mean.
    """

    def __init__(self, generator: MUNITGenerator, channels: int):
        super().__init__()
        self.generator, self.channels = generator, channels

    def forward(self, inputs: Tensor) -> Tensor:
        c = self.channels
        images, target = inputs[:, :c], inputs[:, c:c + 1]
        style = inputs[:, c + 1:].mean(dim=(2, 3))
        to_b = self.generator.translate(images, DOMAIN_A, style)
        to_a = self.generator.translate(images, DOMAIN_B, style)
        return target * to_b + (1 - target) * to_a


class MUNITExport(TranslationExport):
    """The registry's MUNIT: ``condition_kind`` "image_target_style", C + 1 + style_dim channels."""

    def __init__(self, translator: MixedDirectionTranslator, channels: int, image_size: int, style_dim: int):
        super().__init__(translator, (channels + 1 + style_dim, image_size, image_size), "image_target_style")
        self.channels, self.style_dim = channels, style_dim

    def inputs(self, images: Tensor, target: Tensor, styles: Tensor) -> Tensor:
        """The export's input of source images, target domains (int N: 1 = to B, 0 = to A) and style codes N x S."""
        n, _, height, width = images.shape
        target_plane = target.to(images.dtype).view(n, 1, 1, 1).expand(n, 1, height, width)
        style_planes = styles.to(images.dtype).view(n, -1, 1, 1).expand(n, styles.size(1), height, width)
        return torch.cat([images, target_plane, style_planes], dim=1)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random images in [-1, 1], alternating targets (B, A, B, ...) and styles from N(0, I)."""
        g = torch.Generator().manual_seed(seed)
        _, height, width = self.condition_shape
        images = torch.rand(n, self.channels, height, width, generator=g) * 2 - 1
        styles = torch.randn(n, self.style_dim, generator=g)
        return self.inputs(images, 1 - torch.arange(n) % 2, styles)
