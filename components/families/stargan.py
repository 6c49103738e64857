"""StarGAN (Choi et al., 2018): one generator for every domain, conditioned on the target label.

G(x, c) sees the image with the target label vector c broadcast to constant
planes beside it (conv 7x7, two stride-2 downsamplings, residual blocks with
instance norm, two upsamplings, conv 7x7, tanh). D is a PatchGAN-style stack
of stride-2 convolutions with LeakyReLU(0.01) and no normalisation, with two
heads: D_src, a 3x3 convolution giving real/fake scores per patch, and D_cls,
a convolution whose kernel covers the whole final map, giving one logit per
label. Objective (WGAN-GP form, as the paper trains it):

    L_D = -L_adv + lambda_cls L_cls^r            L_adv = E[D_src(x)] - E[D_src(G(x, c))] - lambda_gp GP
    L_G =  L_adv + lambda_cls L_cls^f + lambda_rec E|x - G(G(x, c), c')|

with L_cls^r D's classification loss of real images against their own labels
c', L_cls^f D's classification of G's outputs against the target labels c,
lambda_gp = 10, lambda_cls = 1, lambda_rec = 10, n_critic = 5, Adam(betas 0.5,
0.999) at 2e-4 (the paper: 1e-4; see StarGANConfig.lr). Labels are attributes (multi-label, binary cross-entropy
summed over the attributes: the CelebA setting) or single-label domains
(one-hot, cross-entropy: RaFD). The targets of a batch are a random
permutation of its own labels, as in the official code, so attribute targets
stay realistic combinations.

The mask vector: when the data combines datasets with different label sets
(``spec.label_sets``), G's label is every set's labels, those of the other
datasets zeroed, then a one-hot m naming the row's dataset (``assemble_labels``);
D_cls has a logit per attribute of all sets and is trained and judged only on
the attributes the row's dataset defines. Rows are permuted only within their
dataset for targets. The paper alternates whole batches of CelebA and RaFD and
classifies RaFD's expressions with a softmax; here a batch may mix datasets and
every attribute is binary, so the known attributes of every set are BCE terms.

Left out: the paper's linear learning-rate decay over its second half of
training (the trainer owns schedules) and the official code's instance norm
with running statistics at test time (here instance norm always normalises the
image itself, so a translation does not depend on the training batches).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DataSpec, DomainCondition, Family, ImageBatch, LossResult, Networks, Phase,
                                      TaskKind, TranslationExport, unwrap)

# --- StarGAN's label handling and loss terms (pure functions) ----------------------------------


def set_blocks(label_sets: tuple[int, ...]) -> list[slice]:
    """The column slice of each label set's block of attributes, in order."""
    ends = list(itertools.accumulate(label_sets))
    return [slice(end - size, end) for size, end in zip(label_sets, ends)]


def dataset_mask_vector(attribute_mask: Tensor, label_sets: tuple[int, ...]) -> Tensor:
    """N x S one-hot m: 1 for the set whose attributes the row's dataset defines (its mask block is 1)."""
    return torch.stack([attribute_mask[:, block].amax(dim=1) for block in set_blocks(label_sets)], dim=1)


def assemble_labels(attributes: Tensor, attribute_mask: Tensor, label_sets: tuple[int, ...]) -> Tensor:
    """G's label vector: the attributes with the unknown sets zeroed, then the mask vector m (N x (A + S)).

    With one label set there is no mask vector and the attributes come back unchanged.
    """
    if len(label_sets) <= 1:
        return attributes
    if sum(label_sets) != attributes.size(1):
        raise ValueError(f"assemble_labels: label sets {label_sets} do not add up to {attributes.size(1)} attributes")
    return torch.cat([attributes * attribute_mask, dataset_mask_vector(attribute_mask, label_sets)], dim=1)


def dataset_of_rows(attribute_mask: Tensor, label_sets: tuple[int, ...]) -> Tensor:
    """int64 N: the index of each row's dataset (all zeros with one label set)."""
    if len(label_sets) <= 1:
        return torch.zeros(attribute_mask.size(0), dtype=torch.long, device=attribute_mask.device)
    return dataset_mask_vector(attribute_mask, label_sets).argmax(dim=1)


def target_rows(groups: Tensor) -> Tensor:
    """A random permutation of the rows that maps each row to a row of its own group (dataset).

    Sorting by group plus a uniform draw lists each group's rows in random
    order; sorting by group alone lists them in index order; pairing the two
    lists permutes within groups with no loop and no host synchronisation.
    """
    shuffled = torch.argsort(groups.double() + torch.rand(groups.shape, device=groups.device, dtype=torch.double))
    in_order = torch.argsort(groups, stable=True)
    rows = torch.empty_like(in_order)
    rows[in_order] = shuffled
    return rows


def masked_attribute_loss(logits: Tensor, attributes: Tensor, known: Tensor) -> Tensor:
    """-log D_cls(c | x) of independent binary attributes: BCE summed over the known attributes, batch mean.

    The sum over attributes is the log-likelihood of the whole label vector (the
    official code's size_average=False BCE divided by the batch size); unknown
    attributes (``known`` 0) are other datasets' labels and do not count.
    """
    per_attribute = F.binary_cross_entropy_with_logits(logits, attributes, reduction="none")
    return (per_attribute * known).sum() / logits.size(0)


def domain_classification_loss(logits: Tensor, domains: Tensor) -> Tensor:
    """-log D_cls(c | x) of a single-label domain: cross-entropy over the domains, batch mean."""
    return F.cross_entropy(logits, domains)


def reconstruction_loss(generator: nn.Module, translations: Tensor, source_labels: Tensor, images: Tensor) -> Tensor:
    """E|x - G(G(x, c), c')| given the translations G(x, c): translated back to c' they must be x again."""
    return losses.l1_reconstruction_loss(generator(translations, source_labels), images)


# --- networks -----------------------------------------------------------------------------------


def label_planes(labels: Tensor, height: int, width: int) -> Tensor:
    """N x L label vectors -> N x L x H x W constant planes."""
    return labels[:, :, None, None].expand(-1, -1, height, width)


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))), 3x3 convolutions keeping the width."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, bias=False), instance_norm(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, 1, 1, bias=False), instance_norm(width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    # affine as the official code; no running statistics (see the module docstring)
    return nn.InstanceNorm2d(channels, affine=True)


class StarGenerator(nn.Module):
    """G(x, c): the image beside constant planes of c through an encoder, residual blocks and a decoder."""

    def __init__(self, channels: int, label_dim: int, width: int = 64, residual_blocks: int = 6):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels + label_dim, width, 7, 1, 3, bias=False), instance_norm(width),
                                   nn.ReLU()]
        for k in range(2):
            cin = width * 2 ** k
            layers += [nn.Conv2d(cin, cin * 2, 4, 2, 1, bias=False), instance_norm(cin * 2), nn.ReLU()]
        layers += [ResidualBlock(width * 4) for _ in range(residual_blocks)]
        for k in range(2, 0, -1):
            cin = width * 2 ** k
            layers += [nn.ConvTranspose2d(cin, cin // 2, 4, 2, 1, bias=False), instance_norm(cin // 2), nn.ReLU()]
        layers += [nn.Conv2d(width, channels, 7, 1, 3, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.channels, self.label_dim = channels, label_dim

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.translate(torch.cat([images, label_planes(labels, images.size(2), images.size(3))], dim=1))

    def translate(self, images_and_planes: Tensor) -> Tensor:
        """G on its input tensor as it is: the image channels, then the label planes (the export's input)."""
        return self.net(images_and_planes)


class StarDiscriminator(nn.Module):
    """Stride-2 4x4 convolutions with LeakyReLU(0.01), then D_src (patch scores) and D_cls (a logit per label)."""

    def __init__(self, channels: int, image_size: int, num_labels: int, width: int = 64, layers: int = 6,
                 max_width: int = 2048):
        super().__init__()
        layers = min(layers, int(math.log2(image_size)))  # no finer than a 1 x 1 final map
        blocks: list[nn.Module] = []
        cin, cout = channels, width
        for _ in range(layers):
            blocks += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.01)]
            cin, cout = cout, min(cout * 2, max_width)
        self.trunk = nn.Sequential(*blocks)
        self.final_size = image_size // 2 ** layers
        self.source_head = nn.Conv2d(cin, 1, 3, 1, 1, bias=False)
        self.class_head = nn.Conv2d(cin, num_labels, self.final_size, bias=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(D_src N x 1 x h x w patch scores, D_cls N x K label logits)."""
        features = self.trunk(images)
        return self.source_head(features), self.class_head(features).flatten(1)


class PlaneTranslator(nn.Module):
    """The export's translator: G on (image, label planes) stacked as one tensor."""

    def __init__(self, generator: StarGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, inputs: Tensor) -> Tensor:
        return self.generator.translate(inputs)


class StarGANExport(TranslationExport):
    """The registry's StarGAN: inputs N x (C + L) x H x W, a source image in [-1, 1] then the target label
    vector G takes (attributes, with the mask vector for combined label sets, or a one-hot domain) as planes."""

    def __init__(self, generator: StarGenerator, image_size: int, label_sets: tuple[int, ...], num_domains: int):
        super().__init__(PlaneTranslator(generator), (generator.channels + generator.label_dim, image_size, image_size),
                         "image_and_label_planes")
        self.channels, self.label_sets, self.num_domains = generator.channels, label_sets, num_domains

    def inputs(self, images: Tensor, labels: Tensor) -> Tensor:
        """The export's input tensor of source images and G's target label vectors."""
        return torch.cat([images, label_planes(labels, images.size(2), images.size(3))], dim=1)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random images beside valid labels: one-hot domains, or random attributes of a dataset per row."""
        g = torch.Generator().manual_seed(seed)
        _, height, width = self.condition_shape
        images = torch.rand(n, self.channels, height, width, generator=g) * 2 - 1
        if self.num_domains:
            labels = F.one_hot(torch.arange(n) % self.num_domains, self.num_domains).float()
        else:
            sets = self.label_sets or (self.condition_shape[0] - self.channels,)
            attributes = torch.randint(2, (n, sum(sets)), generator=g).float()
            mask = torch.zeros_like(attributes)
            for row, block in enumerate(set_blocks(sets)[k % len(sets)] for k in range(n)):
                mask[row, block] = 1
            labels = assemble_labels(attributes, mask, sets)
        return self.inputs(images, labels)


# --- the family ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingLabels:
    """A batch's labels as G and D_cls take them, for its own images and for the translation targets."""

    source: Tensor  # G's label vector describing the images (c')
    target: Tensor  # G's label vector to translate to (c)
    source_classes: Tensor  # D_cls targets of the real images: attributes (float) or domain indices
    target_classes: Tensor  # D_cls targets of the translations
    known: Tensor | None  # attribute mode: 1 where the row's dataset defines the attribute; None for domains


@dataclass
class StarGANConfig:
    # "auto": attributes (multi-label BCE, the CelebA setting) when the data has attributes, else one-hot domains
    # (cross-entropy, RaFD)
    labels: Literal["auto", "attributes", "domains"] = "auto"
    # The paper's G is 64 wide (64, 128, 256 channels) with 6 residual blocks at 128 px. 8 wide here (8, 16, 32),
    # keeping the 6 blocks: with n_critic = 5 an iteration runs G forward 11 times (once per critic step for its
    # fakes, twice with backward in the G step), so G's width sets the cost. Batch 32, 32 x 32, one CPU thread:
    # about 0.45 s of CPU per iteration (0.06 per critic step, 0.14 the G step; wgan_gp's iteration took 0.46 s
    # alongside, pix2pix's 0.10); 16 wide it is 0.75 s.
    g_width: int = 8
    residual_blocks: int = 6
    # The paper's D: 6 stride-2 layers from 64 to 2048 channels, a 2 x 2 final map at 128 px; 4 layers keep that
    # 2 x 2 map at 32 px (16 to 128 channels; capped at log2(size) layers for small images). D is twice G's width
    # (the paper: equal): a critic step's cost is mostly G's forward pass, so the wider critic costs little
    # (0.05 s per critic step at d_width 8).
    d_width: int = 16
    d_layers: int = 4
    d_max_width: int = 2048
    gp_weight: float = 10.0  # lambda_gp
    cls_weight: float = 1.0  # lambda_cls
    rec_weight: float = 10.0  # lambda_rec
    n_critic: int = 5
    # both G and D. The paper's 1e-4 learns the domains slowly at short budgets (docs/zoo.md, "Shipped
    # defaults that depart from the papers").
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


@register
class StarGAN(Family):
    name = "stargan"
    task = TaskKind.MULTI_DOMAIN_TRANSLATION
    paper = ("Choi et al., StarGAN: Unified Generative Adversarial Networks for Multi-Domain Image-to-Image "
             "Translation, CVPR 2018 (arXiv:1711.09020)")
    Config = StarGANConfig
    tiny = {"g_width": 4, "residual_blocks": 1, "d_width": 4, "d_layers": 3, "n_critic": 2}

    def __init__(self, config: StarGANConfig, spec: DataSpec):
        self.mode = resolve_label_mode(config.labels, spec)
        super().__init__(config, spec)

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        super().check_spec(spec)
        if spec.image_size % 4:
            raise ConfigError(f"family {cls.name}: G downsamples twice; image_size {spec.image_size} is not a "
                              "multiple of 4")
        if len(spec.label_sets) > 1 and sum(spec.label_sets) != spec.num_attributes:
            raise ConfigError(f"family {cls.name}: label sets {spec.label_sets} do not add up to "
                              f"{spec.num_attributes} attributes")

    # -- label layout

    @property
    def conditions_on_attributes(self) -> bool:
        return self.mode == "attributes"

    @property
    def label_sets(self) -> tuple[int, ...]:
        """The attribute sets G's mask vector distinguishes; () without a mask vector (one set, or domains)."""
        return self.spec.label_sets if self.mode == "attributes" and len(self.spec.label_sets) > 1 else ()

    @property
    def num_labels(self) -> int:
        """D_cls's logits: every attribute of every set, or the domains."""
        return self.spec.num_attributes if self.mode == "attributes" else self.spec.num_domains

    @property
    def label_dim(self) -> int:
        """Length of G's label vector: D_cls's labels plus the mask vector."""
        return self.num_labels + len(self.label_sets)

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        return {"G": StarGenerator(spec.channels, self.label_dim, cfg.g_width, cfg.residual_blocks),
                "D": StarDiscriminator(spec.channels, spec.image_size, self.num_labels, cfg.d_width, cfg.d_layers,
                                       cfg.d_max_width)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        # the official loop trains G every n_critic-th iteration on the batch D has just seen
        return [Phase("D", ("D",), self.discriminator_loss, repeats=self.config.n_critic),
                Phase("G", ("G",), self.generator_loss, uses_data=False)]

    # -- labels of a batch

    def training_labels(self, batch: ImageBatch) -> TrainingLabels:
        """The batch's own labels and targets drawn by permuting them (within each dataset's rows)."""
        if self.mode == "domains":
            if batch.domains is None:
                raise DataError(f"family {self.name} in domain mode needs batches with domains")
            rows = target_rows(torch.zeros_like(batch.domains))
            source, target = batch.domains, batch.domains[rows]
            return TrainingLabels(self.one_hot(source), self.one_hot(target), source, target, None)
        if batch.attributes is None:
            raise DataError(f"family {self.name} in attribute mode needs batches with attributes")
        attributes = batch.attributes
        known = batch.attribute_mask if batch.attribute_mask is not None else torch.ones_like(attributes)
        rows = target_rows(dataset_of_rows(known, self.label_sets))
        # a target row is of the same dataset, so its mask is the source row's
        target = attributes[rows]
        return TrainingLabels(assemble_labels(attributes, known, self.label_sets),
                              assemble_labels(target, known, self.label_sets), attributes, target, known)

    def one_hot(self, domains: Tensor) -> Tensor:
        return F.one_hot(domains, self.spec.num_domains).float()

    def classification_loss(self, logits: Tensor, classes: Tensor, known: Tensor | None) -> Tensor:
        if self.mode == "domains":
            return domain_classification_loss(logits, classes)
        return masked_attribute_loss(logits, classes, known)

    # -- losses

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        cfg, real = self.config, batch.images
        labels = self.training_labels(batch)
        with torch.no_grad():
            fake = nets["G"](real, labels.target)
        real_scores, real_logits = nets["D"](real)
        fake_scores, _ = nets["D"](fake)
        adversarial = losses.wasserstein_critic_loss(real_scores, fake_scores)
        alpha = torch.rand(real.size(0), device=real.device)
        penalty = losses.gradient_penalty(lambda x: nets["D"](x)[0], losses.interpolate(real, fake, alpha))
        classification = self.classification_loss(real_logits, labels.source_classes, labels.known)
        loss = adversarial + cfg.gp_weight * penalty + cfg.cls_weight * classification
        return loss, {"d_loss": loss.item(), "d_adv": adversarial.item(), "wasserstein": -adversarial.item(),
                      "gp": penalty.item(), "d_cls": classification.item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        cfg, real = self.config, batch.images
        labels = self.training_labels(batch)
        fake = nets["G"](real, labels.target)
        fake_scores, fake_logits = nets["D"](fake)
        adversarial = losses.wasserstein_generator_loss(fake_scores)
        classification = self.classification_loss(fake_logits, labels.target_classes, labels.known)
        reconstruction = reconstruction_loss(nets["G"], fake, labels.source, real)
        loss = adversarial + cfg.cls_weight * classification + cfg.rec_weight * reconstruction
        return loss, {"g_loss": loss.item(), "g_adv": adversarial.item(), "g_cls": classification.item(),
                      "g_rec": reconstruction.item()}

    # -- evaluation and export

    def condition_labels(self, condition: DomainCondition) -> Tensor:
        """G's label vector for a DomainCondition's targets.

        Domains become one-hot vectors. With combined label sets the
        condition's ``target_mask`` names the target's dataset; without one,
        each row's dataset is read off its source attributes (the first set
        with a 1 there, else in the target, else the first set) and the target
        is taken to be of that set. The other sets' entries are zeroed and the
        mask vector names the set.
        """
        target = condition.target.to(self.device)
        if self.mode == "domains":
            return self.one_hot(target.long())
        target = target.float()
        if not self.label_sets:
            return target
        if condition.target_mask is not None:
            mask = condition.target_mask.to(self.device).float()
        else:
            mask = self.source_mask(condition.source.to(self.device).float(), target)
        return assemble_labels(target, mask, self.label_sets)

    def source_mask(self, source: Tensor, target: Tensor) -> Tensor:
        """N x A attribute mask of each row's inferred dataset (see ``condition_labels``)."""
        blocks = set_blocks(self.label_sets)
        hits = torch.stack([source[:, b].amax(dim=1) * 2 + target[:, b].amax(dim=1) for b in blocks], dim=1)
        dataset = hits.argmax(dim=1)  # a 1 in the source (2) beats one only in the target (1); ties: first set
        mask = torch.zeros_like(target)
        for k, block in enumerate(blocks):
            mask[:, block] = (dataset == k).float().unsqueeze(1)
        return mask

    @torch.no_grad()
    def generate(self, n: int, condition: DomainCondition | None = None) -> Tensor:
        """The n source images of ``condition`` translated to its targets (domain indices or attribute vectors)."""
        if condition is None:
            raise DataError(f"family {self.name} translates source images: generate needs a DomainCondition")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} source images for {n} outputs")
        return self.nets["G"](condition.images.to(self.device), self.condition_labels(condition))

    def export_generator(self) -> StarGANExport:
        return StarGANExport(unwrap(self.nets["G"]), self.spec.image_size, self.label_sets,
                             self.spec.num_domains if self.mode == "domains" else 0)


def resolve_label_mode(labels: str, spec: DataSpec) -> str:
    """``attributes`` or ``domains``: the config's choice, "auto" meaning attributes where the data has them."""
    mode = labels if labels != "auto" else ("attributes" if spec.num_attributes > 0 else "domains")
    if mode == "attributes" and spec.num_attributes < 1:
        raise ConfigError("family stargan: labels 'attributes' needs data with attributes")
    if mode == "domains" and spec.num_domains < 2:
        raise ConfigError(f"family stargan: labels 'domains' needs data with at least 2 domains; the data has "
                          f"{spec.num_domains}")
    return mode
