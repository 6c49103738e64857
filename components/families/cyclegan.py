"""CycleGAN (Zhu et al., 2017): unpaired translation between domains A and B with cycle consistency.

Two generators, G: A -> B and F: B -> A (module "G", a ``CycleGenerators``),
and two PatchGAN discriminators, D_A judging images of A and D_B images of B
(module "D", a ``CycleDiscriminators``; the paper's D_X and D_Y). The
generators are the residual networks of Johnson et al.
(``components/nets/resnet.py``), every network uses instance norm. Objective:

    L = L_GAN(G, D_B) + L_GAN(F, D_A) + lambda L_cyc(G, F) + 0.5 lambda L_identity(G, F),  lambda = 10

with least-squares adversarial terms (G minimises E[(D_B(G(a)) - 1)^2], D_B
minimises E[(D_B(b) - 1)^2] + E[D_B(G(a))^2], halved "to slow down the rate
at which D learns relative to G"), L_cyc = E|F(G(a)) - a| + E|G(F(b)) - b|
and L_identity = E|G(b) - b| + E|F(a) - a| (the paper's photo <-> painting
term, which its code turns on by default with weight 0.5 lambda: it keeps a
translation from changing colours the target domain already has). The
discriminators judge a history of generated images (Shrivastava et al.'s
pool of 50 per direction, ``ImageHistoryBuffer``), not only the latest ones,
which damps the oscillation of G and D. Adam, lr 2e-4, betas (0.5, 0.999),
weights from N(0, 0.02); per batch one step of both generators, then one of
both discriminators on the same images.

Left out: the paper's learning-rate schedule (constant for 100 epochs, then
linear decay to zero over the next 100); a run here is a few thousand steps at
constant lr. Networks are narrower than the paper's (see the config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DataSpec, DomainCondition, Family, ImageBatch, LossResult, Networks, Phase,
                                      TaskKind, TranslationExport, unwrap)
from components.nets.dcgan import dcgan_init
from components.nets.patchgan import PatchDiscriminator
from components.nets.resnet import ResnetGenerator

DOMAIN_A, DOMAIN_B = 0, 1


# --- the method's losses --------------------------------------------------------------------------


def cycle_consistency_loss(real_a: Tensor, reconstructed_a: Tensor, real_b: Tensor, reconstructed_b: Tensor) -> Tensor:
    """E|F(G(a)) - a| + E|G(F(b)) - b|: each image must survive the round trip through the other domain."""
    return (losses.l1_reconstruction_loss(reconstructed_a, real_a)
            + losses.l1_reconstruction_loss(reconstructed_b, real_b))


def identity_loss(real_a: Tensor, same_a: Tensor, real_b: Tensor, same_b: Tensor) -> Tensor:
    """E|F(a) - a| + E|G(b) - b|: a generator fed an image of its own target domain should leave it alone."""
    return losses.l1_reconstruction_loss(same_a, real_a) + losses.l1_reconstruction_loss(same_b, real_b)


def cyclegan_adversarial_loss(fake_scores: Tensor) -> Tensor:
    """E[(D(G(x)) - 1)^2]: the generator's least-squares term, unhalved as in the paper's objective.

    ``losses.least_squares_generator_loss`` carries LSGAN's factor 1/2; doubled
    here so the adversarial terms keep their weight of 1 against lambda = 10.
    """
    return 2 * losses.least_squares_generator_loss(fake_scores)


def cyclegan_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """(E[(D(y) - 1)^2] + E[D(G(x))^2]) / 2: one discriminator's least-squares loss, halved as the paper."""
    return losses.least_squares_discriminator_loss(real_scores, fake_scores)


class CycleOutputs(NamedTuple):
    """One pass of both generators over real a and b; the identity outputs are None when that term is off."""

    fake_b: Tensor  # G(a)
    fake_a: Tensor  # F(b)
    reconstructed_a: Tensor  # F(G(a))
    reconstructed_b: Tensor  # G(F(b))
    same_b: Tensor | None = None  # G(b)
    same_a: Tensor | None = None  # F(a)


def cyclegan_generator_loss(real_a: Tensor, real_b: Tensor, outputs: CycleOutputs, scores_fake_a: Tensor,
                            scores_fake_b: Tensor, cycle_weight: float,
                            identity_weight: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(total, adversarial, cycle, identity) of both generators; identity is 0 when its outputs are None.

    ``scores_fake_a`` are D_A's patch scores of F(b), ``scores_fake_b`` D_B's of G(a).
    """
    adversarial = cyclegan_adversarial_loss(scores_fake_b) + cyclegan_adversarial_loss(scores_fake_a)
    cycle = cycle_consistency_loss(real_a, outputs.reconstructed_a, real_b, outputs.reconstructed_b)
    identity = real_a.new_zeros(())
    if outputs.same_a is not None and outputs.same_b is not None:
        identity = identity_loss(real_a, outputs.same_a, real_b, outputs.same_b)
    return adversarial + cycle_weight * cycle + identity_weight * identity, adversarial, cycle, identity


# --- the history buffer ---------------------------------------------------------------------------


class ImageHistoryBuffer(nn.Module):
    """Shrivastava et al.'s pool of past generated images, as CycleGAN feeds its discriminators.

    ``query(images)`` goes through the images in order: while fewer than
    ``capacity`` are stored, each is stored and returned; once full, each
    replaces a uniformly drawn stored image with probability 1/2, and the
    stored one is returned in its place; otherwise the image is returned
    itself. The images live in a fixed-size buffer (with ``count`` of them
    filled), so the pool is checkpointed with its module and restores into a
    freshly built one. Randomness comes from torch's global CPU generator: per
    call one ``torch.rand(n)`` (the coins) then one ``torch.randint(capacity,
    (n,))`` (the slots), drawn whether or not the pool is full, so a seeded run
    is reproducible on any device.
    """

    def __init__(self, capacity: int, channels: int, image_size: int):
        super().__init__()
        self.capacity = capacity
        self.register_buffer("images", torch.zeros(capacity, channels, image_size, image_size))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        """Images for the discriminator, one per input; updates the pool."""
        if self.capacity == 0:
            return images
        coins = torch.rand(len(images)).tolist()
        slots = torch.randint(self.capacity, (len(images),)).tolist()
        count = int(self.count)
        chosen = []
        for image, coin, slot in zip(images, coins, slots):
            if count < self.capacity:
                self.images[count] = image
                count += 1
                chosen.append(image)
            elif coin < 0.5:
                chosen.append(self.images[slot].clone())
                self.images[slot] = image
            else:
                chosen.append(image)
        self.count.fill_(count)
        return torch.stack(chosen)


# --- the networks ---------------------------------------------------------------------------------


class CycleGenerators(nn.Module):
    """G: A -> B (``g_ab``) and F: B -> A (``g_ba``), trained together.

    ``forward`` runs the generator step's whole pass, so a DDP wrapper around
    this module sees every use of both networks. Instance norm is per image,
    so a generator's translation and identity inputs share one call.
    """

    def __init__(self, channels: int, width: int, blocks: int):
        super().__init__()
        self.g_ab = ResnetGenerator(channels, channels, width, blocks)
        self.g_ba = ResnetGenerator(channels, channels, width, blocks)

    def forward(self, real_a: Tensor, real_b: Tensor, identity: bool = True) -> CycleOutputs:
        na, nb = len(real_a), len(real_b)
        if identity:
            fake_b, same_b = self.g_ab(torch.cat([real_a, real_b])).split([na, nb])
            fake_a, same_a = self.g_ba(torch.cat([real_b, real_a])).split([nb, na])
        else:
            (fake_b, fake_a), same_a, same_b = self.translate(real_a, real_b), None, None
        return CycleOutputs(fake_b, fake_a, self.g_ba(fake_b), self.g_ab(fake_a), same_b, same_a)

    def translate(self, real_a: Tensor, real_b: Tensor) -> tuple[Tensor, Tensor]:
        """(G(a), F(b))."""
        return self.g_ab(real_a), self.g_ba(real_b)


class CycleDiscriminators(nn.Module):
    """D_A judging images of A (``d_a``) and D_B judging images of B (``d_b``), with each one's history of fakes.

    ``pool_a`` holds past F(b) for D_A, ``pool_b`` past G(a) for D_B; they are
    buffers of this module, so they change only in the discriminator phase.
    """

    def __init__(self, channels: int, image_size: int, width: int, layers: int, pool_size: int):
        super().__init__()
        self.d_a = PatchDiscriminator(channels, width, layers, norm="instance")
        self.d_b = PatchDiscriminator(channels, width, layers, norm="instance")
        self.pool_a = ImageHistoryBuffer(pool_size, channels, image_size)
        self.pool_b = ImageHistoryBuffer(pool_size, channels, image_size)

    def forward(self, images_a: Tensor, images_b: Tensor) -> tuple[Tensor, Tensor]:
        """(D_A's patch scores of ``images_a``, D_B's of ``images_b``)."""
        return self.d_a(images_a)[-1], self.d_b(images_b)[-1]


class CycleGANExport(TranslationExport):
    """The registry's CycleGAN: C + 1 channels in, the source image then a plane of its target domain (0 A, 1 B).

    Both generators run and the plane t mixes them, (1 - t) F(x) + t G(x):
    no branching on tensor values, so torch.export traces one graph for any
    batch, and each row gets exactly one generator's output when t is 0 or 1.
    """

    def __init__(self, generators: CycleGenerators, spec: DataSpec):
        c, s = spec.channels, spec.image_size
        super().__init__(generators, (c + 1, s, s), "image_domain")
        self.channels = c

    def forward(self, inputs: Tensor) -> Tensor:
        images, target = inputs[:, : self.channels], inputs[:, self.channels:self.channels + 1]
        return (1 - target) * self.translator.g_ba(images) + target * self.translator.g_ab(images)

    def inputs(self, images: Tensor, target: Tensor) -> Tensor:
        """The export's input tensor of source images and int64 target domains."""
        plane = target.to(images.dtype).view(-1, 1, 1, 1).expand(-1, 1, *images.shape[2:])
        return torch.cat([images, plane], dim=1)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random images in [-1, 1], alternately to B and to A."""
        g = torch.Generator().manual_seed(seed)
        _, height, width = self.condition_shape
        images = torch.rand(n, self.channels, height, width, generator=g) * 2 - 1
        return self.inputs(images, (torch.arange(n) + 1) % 2)


# --- the family -----------------------------------------------------------------------------------


@dataclass
class CycleGANConfig:
    # ResNet generator: k and the residual block count (paper: k = 64 with 9 blocks at 256 px, 6 at 128 px).
    # An iteration runs each generator on 48 images with gradients (16 translations, 16 identity inputs, 16
    # round trips) and on 16 more without (D's fakes), and the two full-resolution 7 x 7 convolutions, with 3
    # channels on one side, take 40% of it on a CPU whatever the bottleneck: k = 8 is the narrowest sensible
    # width and still costs about 0.24 s of CPU per iteration on one thread (batch 32 = 16 + 16, 32 x 32;
    # k = 16: 0.47 s), above the 0.15 s aimed at. At 32 px the blocks run at 8 x 8, where 3 of them (six 3 x 3
    # convolutions) already see the whole image; each further block costs about 0.02 s.
    g_width: int = 8
    g_blocks: int = 3
    # PatchGAN (the paper's 70 x 70 patches, 3 layers, at 256 px): 1 layer gives 16 x 16 patches at 32 px,
    # half the side, pix2pix's choice here on the same digits. Its width equals k as in the paper (64 and 64);
    # d_width 16 reached no lower held-out L1 after 400 steps of grey -> coloured digits (one run each:
    # 0.126 A -> B, 0.106 B -> A; width 8: 0.116, 0.081; the untrained identity map: 0.239 A -> B)
    d_width: int = 8
    d_layers: int = 1
    cycle_weight: float = 10.0  # lambda
    identity_scale: float = 0.5  # the identity term's weight is identity_scale * lambda; 0 turns it off
    pool_size: int = 50  # fakes kept per direction for the discriminators; 0 feeds them the latest only
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


@register
class CycleGAN(Family):
    name = "cyclegan"
    task = TaskKind.UNPAIRED_TRANSLATION
    paper = ("Zhu et al., Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks, "
             "ICCV 2017 (arXiv:1703.10593)")
    Config = CycleGANConfig
    tiny = {"g_width": 4, "g_blocks": 1, "d_width": 4, "pool_size": 4}

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        super().check_spec(spec)
        if spec.image_size % 4 or spec.image_size < 8:
            raise ConfigError(f"family {cls.name}: the ResNet generator quarters the image; image_size "
                              f"{spec.image_size} must be a multiple of 4 and at least 8")

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        generators = CycleGenerators(spec.channels, cfg.g_width, cfg.g_blocks)
        discriminators = CycleDiscriminators(spec.channels, spec.image_size, cfg.d_width, cfg.d_layers, cfg.pool_size)
        for net in (generators, discriminators):
            net.apply(dcgan_init)  # the paper's N(0, 0.02) initialisation
        return {"G": generators, "D": discriminators}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        # D judges the fakes of the updated generators on the same images (the paper's order and batch)
        return [Phase("G", ("G",), self.generator_loss),
                Phase("D", ("D",), self.discriminator_loss, uses_data=False)]

    @property
    def identity_weight(self) -> float:
        return self.config.identity_scale * self.config.cycle_weight

    @staticmethod
    def split_domains(batch: ImageBatch) -> tuple[Tensor, Tensor]:
        """(images of A, images of B) of an unpaired batch."""
        if batch.domains is None:
            raise DataError("cyclegan: the batch has no domains (expected unpaired data with domains A and B)")
        real_a, real_b = batch.images[batch.domains == DOMAIN_A], batch.images[batch.domains == DOMAIN_B]
        if len(real_a) == 0 or len(real_b) == 0:
            raise DataError(f"cyclegan: the batch has {len(real_a)} images of A and {len(real_b)} of B; "
                            "it needs both domains")
        return real_a, real_b

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        real_a, real_b = self.split_domains(batch)
        outputs = nets["G"](real_a, real_b, identity=self.identity_weight > 0)
        scores_fake_a, scores_fake_b = nets["D"](outputs.fake_a, outputs.fake_b)
        loss, adversarial, cycle, identity = cyclegan_generator_loss(
            real_a, real_b, outputs, scores_fake_a, scores_fake_b, self.config.cycle_weight, self.identity_weight)
        return loss, {"g_loss": loss.item(), "g_adv": adversarial.item(), "g_cycle": cycle.item(),
                      "g_identity": identity.item()}

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        real_a, real_b = self.split_domains(batch)
        with torch.no_grad():
            fake_b, fake_a = unwrap(nets["G"]).translate(real_a, real_b)
        discriminators: CycleDiscriminators = unwrap(nets["D"])
        judged_a, judged_b = discriminators.pool_a.query(fake_a), discriminators.pool_b.query(fake_b)
        # one call per discriminator on real and pooled fakes: instance norm keeps the images independent
        scores_a, scores_b = nets["D"](torch.cat([real_a, judged_a]), torch.cat([real_b, judged_b]))
        real_scores_a, fake_scores_a = scores_a.split([len(real_a), len(judged_a)])
        real_scores_b, fake_scores_b = scores_b.split([len(real_b), len(judged_b)])
        loss_a = cyclegan_discriminator_loss(real_scores_a, fake_scores_a)
        loss_b = cyclegan_discriminator_loss(real_scores_b, fake_scores_b)
        loss = loss_a + loss_b
        return loss, {"d_loss": loss.item(), "d_a": loss_a.item(), "d_b": loss_b.item(),
                      "d_real": torch.cat([real_scores_a, real_scores_b]).mean().item(),
                      "d_fake": torch.cat([fake_scores_a, fake_scores_b]).mean().item()}

    @torch.no_grad()
    def generate(self, n: int, condition: DomainCondition | None = None) -> Tensor:
        """Each source image translated to its target domain: G for target B, F for target A (references ignored).

        The target picks the generator, as in the export; for unpaired data it is
        the other domain than the source. An image "translated" to its own domain
        goes through that domain's generator, which the identity term trains to
        leave it unchanged.
        """
        if not isinstance(condition, DomainCondition):
            raise DataError(f"family {self.name} translates source images: generate needs a DomainCondition")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} source images for {n} outputs")
        generators: CycleGenerators = unwrap(self.nets["G"])
        images, target = condition.images.to(self.device), condition.target.to(self.device)
        if not ((target == DOMAIN_A) | (target == DOMAIN_B)).all():
            raise DataError(f"family {self.name} translates between domains 0 (A) and 1 (B); targets "
                            f"{sorted(set(target.tolist()))}")
        out = torch.empty_like(images)
        for domain, generator in ((DOMAIN_B, generators.g_ab), (DOMAIN_A, generators.g_ba)):
            rows = target == domain
            if rows.any():
                out[rows] = generator(images[rows])
        return out

    def export_generator(self) -> CycleGANExport:
        return CycleGANExport(unwrap(self.nets["G"]), self.spec)
