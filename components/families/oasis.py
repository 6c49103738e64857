"""OASIS (Schönfeld, Sushko et al., ICLR 2021): semantic image synthesis with adversarial supervision only.

The discriminator is a semantic segmentation network: a U-Net (spectral-norm
residual blocks down to a 4 x 4 grid and back up, with skip connections)
that gives every pixel logits over N + 1 classes, the N classes of the label
maps and one "fake" class, index N (the last; the official code puts it
first, which changes nothing). It is trained with a class-balanced
cross-entropy: a real pixel's target is its label, weighted by the inverse
frequency of that label in the batch (so rare, small classes count as much
as the background); every pixel of a generated image has target "fake",
weight 1. Because D must segment the image to call it real, its gradient
tells G where each region is wrong; the paper drops SPADE's VGG perceptual
loss and feature matching, and so does this file.

LabelMix regularises D: each class of the label map is given at random to
the real or the generated image, M is the resulting binary pixel mask, and D
is asked to be consistent, D(M x + (1 - M) G(z)) ~ M D(x) + (1 - M) D(G(z)),
as an MSE on logits weighted by lambda_LM = 10. D must then judge real and
fake content region by region rather than from global cues.

G: SPADE residual blocks (``components/nets/spade.py``) conditioned on the
one-hot label map concatenated with 3D noise: one z of ``z_dim`` per image,
broadcast to every pixel (the paper's default; it also re-samples z per
region, which is not implemented). G starts from a convolution of that
concatenation downsampled to 4 x 4, as the paper's, and its only loss is the
class-balanced N + 1 cross-entropy with the real labels as targets on its
images. New z at every ``generate`` call makes the synthesis multi-modal.

Training as in the paper: Adam, lr 1e-4 for G and 4e-4 for D, betas (0, 0.999).
Left out: the EMA of G's weights (an untrained module changed after G's step
would break the rule that a phase changes only its own modules; the trainer
has no slot for it) and the per-region re-sampled noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from components.errors import DataError
from components.families import register
from components.families.base import (Family, ImageBatch, LossResult, Networks, Phase, TaskKind,
                                      TranslationExport, one_hot_maps)
from components.nets.spade import SPADEGenerator, frozen_spectral_norm, upsampling_plan


# --- OASIS's losses ------------------------------------------------------------------------------
# D's logits are N x (K + 1) x H x W for K label-map classes: the K classes, then "fake" (index K).


def class_balanced_weights(label_maps: Tensor, num_classes: int) -> Tensor:
    """Per-class weights (K,) inversely proportional to each class's pixel count in the batch.

    w_c = (pixels in the batch) / (classes present x pixels of class c), the
    official code's normalisation: the paper's alpha_c = HW / E[pixels of c]
    divided by the number of present classes, so that the weights average 1
    over the batch's pixels and a class-balanced batch weighs every pixel 1.
    Absent classes get 0 (they have no pixel to weigh).
    """
    counts = torch.bincount(label_maps.flatten(), minlength=num_classes).to(torch.float32)
    present = (counts > 0).sum()
    return torch.where(counts > 0, label_maps.numel() / (present * counts.clamp(min=1)), torch.zeros_like(counts))


def balanced_real_loss(logits: Tensor, label_maps: Tensor) -> Tensor:
    """Mean over pixels of w_t * -log softmax(logits)[t], t the pixel's label: "this pixel is real class t".

    D's term on real images and G's whole loss on its own images.
    """
    weights = class_balanced_weights(label_maps, logits.size(1) - 1)
    per_pixel = F.cross_entropy(logits, label_maps, reduction="none")
    return (weights[label_maps] * per_pixel).mean()


def fake_class_loss(logits: Tensor) -> Tensor:
    """Mean over pixels of -log softmax(logits)[K]: every pixel of a generated image is "fake" (weight 1)."""
    return (torch.logsumexp(logits, dim=1) - logits[:, -1]).mean()


def oasis_generator_loss(fake_logits: Tensor, label_maps: Tensor) -> Tensor:
    """G's loss: D should segment G's image into the label map it was drawn from, with no pixel called fake."""
    return balanced_real_loss(fake_logits, label_maps)


def class_mask(label_maps: Tensor, real_classes: Tensor) -> Tensor:
    """N x 1 x H x W float mask: 1 where the pixel's class is marked real in ``real_classes`` (N x K bool)."""
    n = label_maps.size(0)
    picked = real_classes.to(torch.float32).gather(1, label_maps.reshape(n, -1))
    return picked.view(n, 1, *label_maps.shape[1:])


def labelmix_mask(label_maps: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """LabelMix's M: each class of each image drawn real (1) or fake (0) with probability 1/2.

    Drawn per image; the official code draws one bit per class for the whole batch.
    """
    bits = torch.randint(0, 2, (label_maps.size(0), num_classes), generator=generator,
                         device=label_maps.device).bool()
    return class_mask(label_maps, bits)


def labelmix(real: Tensor, fake: Tensor, mask: Tensor) -> Tensor:
    """M * real + (1 - M) * fake, for images and for D's logits alike."""
    return mask * real + (1 - mask) * fake


def labelmix_consistency_loss(mixed_logits: Tensor, real_logits: Tensor, fake_logits: Tensor,
                              mask: Tensor) -> Tensor:
    """|| D(LabelMix(x, G(z), M)) - LabelMix(D(x), D(G(z)), M) ||^2, the mean over logits (unweighted)."""
    return F.mse_loss(mixed_logits, labelmix(real_logits, fake_logits, mask))


# --- networks ------------------------------------------------------------------------------------


class OASISGenerator(nn.Module):
    """G(one-hot map, z): SPADE residual blocks conditioned on [one-hot map ‖ z broadcast to every pixel]."""

    def __init__(self, map_classes: int, z_dim: int, out_channels: int, image_size: int, width: int, hidden: int):
        super().__init__()
        self.z_dim = z_dim
        # z_dim=0 here means SPADEGenerator's head is a conv of the downsampled condition map, which holds the noise
        self.net = SPADEGenerator(map_classes + z_dim, out_channels, image_size, width=width, hidden=hidden)

    def forward(self, label_planes: Tensor, z: Tensor) -> Tensor:
        noise = z[:, :, None, None].expand(-1, -1, label_planes.size(2), label_planes.size(3))
        return self.net(torch.cat([label_planes, noise], dim=1))


class ResidualBlockD(nn.Module):
    """OASIS's discriminator block: (leaky ReLU, 3x3 SN conv) twice, a 1x1 SN shortcut, resampled by 2.

    ``resample`` is "down" (average-pool after the convolutions) or "up"
    (nearest upsampling before them). The network's first block convolves
    the image itself, without the leading activation, as the paper's does.
    """

    def __init__(self, cin: int, cout: int, resample: str, first: bool = False):
        super().__init__()
        self.resample, self.first = resample, first
        self.conv_0 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(cin, cout, 1)) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv_0(x if self.first else F.leaky_relu(x, 0.2))
        h = self.conv_1(F.leaky_relu(h, 0.2))
        out = self.shortcut(x) + h
        return F.avg_pool2d(out, 2) if self.resample == "down" else out


class SegmentationDiscriminator(nn.Module):
    """image -> N x (K + 1) x H x W logits: a U-Net of residual blocks down to 4 x 4, back up with skips.

    Encoder widths ``width * min(2^i, 4)``; each decoder block after the first
    sees its upsampled input concatenated with the encoder's map of that size.
    """

    def __init__(self, in_channels: int, map_classes: int, image_size: int, width: int):
        super().__init__()
        _, levels = upsampling_plan(image_size)
        widths = [width * min(2 ** i, 4) for i in range(levels)]
        self.down = nn.ModuleList(ResidualBlockD(cin, cout, "down", first=i == 0)
                                  for i, (cin, cout) in enumerate(zip([in_channels] + widths[:-1], widths)))
        outs = [widths[max(levels - 2 - i, 0)] for i in range(levels)]
        ins = [widths[-1]] + [widths[levels - 1 - i] + outs[i - 1] for i in range(1, levels)]
        self.up = nn.ModuleList(ResidualBlockD(cin, cout, "up") for cin, cout in zip(ins, outs))
        self.to_logits = nn.Conv2d(outs[-1], map_classes + 1, 1)

    def forward(self, images: Tensor) -> Tensor:
        skips, x = [], images
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](x)
        for i, block in enumerate(self.up[1:], start=1):
            x = block(torch.cat([skips[-1 - i], x], dim=1))
        return self.to_logits(F.leaky_relu(x, 0.2))


class DeterministicTranslator(nn.Module):
    """One-hot planes -> image: G with z = 0 (the prior's mode), the same image for the same map."""

    def __init__(self, generator: OASISGenerator):
        super().__init__()
        self.generator = generator
        self.register_buffer("zero_latent", torch.zeros(1, generator.z_dim), persistent=False)

    def forward(self, label_planes: Tensor) -> Tensor:
        return self.generator(label_planes, self.zero_latent.expand(label_planes.size(0), -1))


# --- the family ----------------------------------------------------------------------------------


@dataclass
class OASISConfig:
    # Widths: the paper's (G 64 x 16 channels at the start, 128-channel SPADEs, a U-Net D of 128-512 channels)
    # are sized for 256 px photos of 35-182 classes. At batch 32, 32 x 32 on one CPU thread these take 0.5-0.6 s
    # of CPU per iteration on the shared, loaded 2-core machine they were measured on (DCGAN: 0.08 s there);
    # the full-resolution SPADEs and D's three passes (real, fake, LabelMix) dominate. Doubling g_width or
    # d_width costs +0.2 / +0.3 s. 200 steps on 32 px random shapes (5 classes) bring 81% of G's pixels to
    # their class's colour (7% at the start).
    z_dim: int = 16  # the 3D noise's channels (paper: 64, for label maps of up to 182 classes; ours have ~5)
    g_width: int = 8  # channels of G's last block, up to 4x toward the 4 x 4 start (paper: 64, up to 16x)
    spade_hidden: int = 16  # each SPADE's shared conv on [map ‖ noise] (paper: 128)
    d_width: int = 8  # channels of D's first block, up to 4x at the bottom (paper: 128, up to 512)
    labelmix_weight: float = 10.0  # lambda_LM (paper: 10)
    lr_g: float = 1e-4  # the paper's TTUR: D learns 4x faster than G, Adam without momentum
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999


@register
class OASIS(Family):
    name = "oasis"
    task = TaskKind.SEGMENTATION_TO_IMAGE
    paper = ("Schönfeld, Sushko et al., You Only Need Adversarial Supervision for Semantic Image Synthesis, "
             "ICLR 2021 (arXiv:2012.04781)")
    Config = OASISConfig
    tiny = {"z_dim": 4, "g_width": 4, "spade_hidden": 4, "d_width": 4}

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, k, cfg = self.spec.channels, self.spec.image_size, self.spec.map_classes, self.config
        return {"G": OASISGenerator(k, cfg.z_dim, c, s, cfg.g_width, cfg.spade_hidden),
                "D": SegmentationDiscriminator(c, k, s, cfg.d_width)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg, betas = self.config, (self.config.beta1, self.config.beta2)
        return {"G": torch.optim.Adam(self.nets["G"].parameters(), cfg.lr_g, betas=betas),
                "D": torch.optim.Adam(self.nets["D"].parameters(), cfg.lr_d, betas=betas)}

    def phases(self) -> list[Phase]:
        # G reuses D's batch: it needs the batch's label maps, not fresh images
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def synthesise(self, nets: Networks, label_maps: Tensor) -> Tensor:
        """G's images for ``label_maps`` with a fresh z per image."""
        z = self.latent(label_maps.size(0), self.config.z_dim, label_maps.device)
        return nets["G"](one_hot_maps(label_maps, self.spec.map_classes), z)

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        label_maps, k = batch.label_maps, self.spec.map_classes
        with torch.no_grad(), frozen_spectral_norm(nets["G"]):
            fake = self.synthesise(nets, label_maps)
        real_logits, fake_logits = nets["D"](batch.images), nets["D"](fake)
        mask = labelmix_mask(label_maps, k)
        mixed_logits = nets["D"](labelmix(batch.images, fake, mask))
        real_term, fake_term = balanced_real_loss(real_logits, label_maps), fake_class_loss(fake_logits)
        consistency = labelmix_consistency_loss(mixed_logits, real_logits, fake_logits, mask)
        loss = real_term + fake_term + self.config.labelmix_weight * consistency
        with torch.no_grad():
            real_accuracy = (real_logits.argmax(dim=1) == label_maps).float().mean().item()  # segmented right
            fake_called_fake = (fake_logits.argmax(dim=1) == k).float().mean().item()
        return loss, {"d_loss": loss.item(), "d_real": real_term.item(), "d_fake": fake_term.item(),
                      "d_labelmix": consistency.item(), "d_real_pixel_accuracy": real_accuracy,
                      "d_fake_pixel_accuracy": fake_called_fake}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        fake = self.synthesise(nets, batch.label_maps)
        with frozen_spectral_norm(nets["D"]):
            fake_logits = nets["D"](fake)
        loss = oasis_generator_loss(fake_logits, batch.label_maps)
        return loss, {"g_adv": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | None = None) -> Tensor:
        """n images of the label maps ``condition`` (int64 n x H x W), a new z for each at every call."""
        s = self.spec.image_size
        if condition is None or tuple(condition.shape) != (n, s, s):
            shape = None if condition is None else tuple(condition.shape)
            raise DataError(f"generate: family {self.name} needs {s} x {s} label maps for {n} images "
                            f"(int64 {n} x {s} x {s}), got {shape}")
        return self.synthesise(self.nets, condition.long().to(self.device))

    def export_generator(self) -> TranslationExport:
        """G on one-hot planes with z = 0: deterministic, as a registered translation model must be."""
        s = self.spec.image_size
        return TranslationExport(DeterministicTranslator(self.nets["G"]), (self.spec.map_classes, s, s), "label_map")
