"""pix2pix (Isola et al., 2017): paired image-to-image translation with a conditional GAN and an L1 term.

G is a U-Net (``components/nets/unet.py``) mapping the A side x to the B side;
its only noise is dropout, kept on at test time as in the paper, so
``generate`` draws a fresh dropout mask per call. D is a PatchGAN
(``components/nets/patchgan.py``) judging the channel-concatenation of
(x, y): conditional, so an output that is realistic but does not fit its input
is fake. Objective: G* = arg min_G max_D L_cGAN(G, D) + lambda L_L1(G), with
lambda = 100; D's loss is halved ("we divide the objective by 2 while
optimizing D, which slows down the rate at which D learns relative to G"), G
uses the non-saturating loss. Adam, lr 2e-4, betas (0.5, 0.999); weights from
N(0, 0.02); one D step then one G step per batch.

Left out: test-time batch statistics. The paper runs batch norm at test time
on the test batch's statistics; here ``generate`` and the export use the
running statistics (eval mode), so an image's translation does not depend on
which images share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DataSpec, Family, ImageBatch, LossResult, Networks, Phase, TaskKind,
                                      TranslationExport)
from components.nets.dcgan import dcgan_init
from components.nets.patchgan import PatchDiscriminator
from components.nets.unet import Deterministic, UNetGenerator


def pix2pix_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Half D's BCE on the patch logits of real and generated pairs: the paper slows D relative to G."""
    return 0.5 * losses.bce_discriminator_loss(real_logits, fake_logits)


def pix2pix_generator_loss(fake_logits: Tensor, outputs: Tensor, targets: Tensor,
                           l1_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """(total, adversarial, L1): -E[log D(x, G(x))] + lambda E|y - G(x)|."""
    adversarial = losses.nonsaturating_generator_loss(fake_logits)
    l1 = losses.l1_reconstruction_loss(outputs, targets)
    return adversarial + l1_weight * l1, adversarial, l1


@dataclass
class Pix2PixConfig:
    # U-Net: first encoder layer's channels, doubling per layer up to g_max_width (paper: 64 to 512 at 256 px,
    # eight layers). 16 to 128 here, five layers to 1 x 1 at 32 px: one iteration (D + G phases, batch 32,
    # 32 x 32) then takes about 0.09 s of CPU on one thread (0.14 with d_width 32, which D's 16 x 16 maps
    # dominate; the paper's D and G both start at 64, so equal widths keep its balance).
    g_width: int = 16
    g_max_width: int = 128
    dropout: float = 0.5  # the paper's p, on the innermost decoder layers, at train and test time
    dropout_layers: int = 3
    # PatchGAN depth (PatchDiscriminator's ``layers``; the paper's 3 gives its 70 x 70 patch at 256 px, about a
    # quarter of the image side). 1 gives 16 x 16 patches at 32 px, half the side: 0 (10 x 10) and 2 (34 x 34)
    # reached the same held-out L1 after 300 steps on edges -> digits (one run each: 0.088, 0.084; 1: 0.082),
    # and the upscaled 8 x 8 digits have little texture for a smaller patch to judge
    d_width: int = 16
    d_layers: int = 1
    l1_weight: float = 100.0  # lambda
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


@register
class Pix2Pix(Family):
    name = "pix2pix"
    task = TaskKind.PAIRED_TRANSLATION
    paper = ("Isola et al., Image-to-Image Translation with Conditional Adversarial Networks, CVPR 2017 "
             "(arXiv:1611.07004)")
    Config = Pix2PixConfig
    tiny = {"g_width": 4, "g_max_width": 8, "d_width": 4}

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        super().check_spec(spec)
        if spec.image_size % 2:
            raise ConfigError(f"family {cls.name}: the U-Net halves the image; image_size {spec.image_size} is odd")

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        generator = UNetGenerator(spec.input_channels, spec.channels, spec.image_size, cfg.g_width, cfg.g_max_width,
                                  cfg.dropout, cfg.dropout_layers)
        discriminator = PatchDiscriminator(spec.input_channels + spec.channels, cfg.d_width, cfg.d_layers,
                                           norm="batch")
        for net in (generator, discriminator):
            net.apply(dcgan_init)  # the paper's N(0, 0.02) initialisation
        return {"G": generator, "D": discriminator}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        # G needs the same pairs, not fresh ones: it reuses D's batch
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    @staticmethod
    def patch_logits(nets: Networks, inputs: Tensor, outputs: Tensor) -> Tensor:
        """D's patch logits for the pairs (input, output): the conditional discriminator."""
        return nets["D"](torch.cat([inputs, outputs], dim=1))[-1]

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        with torch.no_grad():
            fake = nets["G"](batch.inputs)
        real_logits = self.patch_logits(nets, batch.inputs, batch.images)
        fake_logits = self.patch_logits(nets, batch.inputs, fake)
        loss = pix2pix_discriminator_loss(real_logits, fake_logits)
        return loss, {"d_loss": loss.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
                      "d_fake": torch.sigmoid(fake_logits).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        fake = nets["G"](batch.inputs)
        loss, adversarial, l1 = pix2pix_generator_loss(self.patch_logits(nets, batch.inputs, fake), fake,
                                                       batch.images, self.config.l1_weight)
        return loss, {"g_loss": loss.item(), "g_adv": adversarial.item(), "g_l1": l1.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | None = None) -> Tensor:
        """Translations of the n source images ``condition`` (N x C_in x H x W), with test-time dropout."""
        if condition is None:
            raise DataError(f"family {self.name} translates source images: generate needs them as its condition")
        if condition.size(0) != n:
            raise DataError(f"generate: {condition.size(0)} source images for {n} outputs")
        return self.nets["G"](condition.to(self.device), dropout=True)

    def export_generator(self) -> TranslationExport:
        spec = self.spec
        return TranslationExport(Deterministic(self.nets["G"]), (spec.input_channels, spec.image_size, spec.image_size),
                                 "image")
