"""The family contract: what every GAN family declares, and nothing the trainer must know.

A family is one module in ``components/families/``. It declares a name, a task
kind, a paper and a config dataclass of default hyperparameters; it builds its
networks and optimizers; it describes one training iteration as phases; and it
generates images for evaluation. The trainer only runs phases.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from components.errors import ConfigError


class TaskKind(str, enum.Enum):
    UNCONDITIONAL = "unconditional"
    CLASS_CONDITIONAL = "class_conditional"
    TEXT_CONDITIONAL = "text_conditional"
    PAIRED_TRANSLATION = "paired_translation"
    UNPAIRED_TRANSLATION = "unpaired_translation"
    MULTI_DOMAIN_TRANSLATION = "multi_domain_translation"
    SEGMENTATION_TO_IMAGE = "segmentation_to_image"


TRANSLATION_TASKS = frozenset({TaskKind.PAIRED_TRANSLATION, TaskKind.SEGMENTATION_TO_IMAGE,
                               TaskKind.UNPAIRED_TRANSLATION, TaskKind.MULTI_DOMAIN_TRANSLATION})


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know of its data to size its networks."""

    channels: int
    image_size: int
    num_classes: int = 0
    input_channels: int = 0  # paired translation: channels of the source images
    map_classes: int = 0  # segmentation-to-image: classes of the label maps
    num_domains: int = 0  # unpaired (2: A and B) and multi-domain translation: single-label domains
    num_attributes: int = 0  # multi-domain translation: binary attributes per image (all label sets together)
    label_sets: tuple[int, ...] = ()  # attributes per combined dataset (StarGAN's mask vector); () is one set


@dataclass
class ImageBatch:
    """A batch of any task kind: the images to generate, and what the task conditions on.

    ``images`` are the targets: real images (noise-to-image), the paired
    translation's B side, or the photo of a label map. ``inputs`` are a paired
    translation's A side (edges, grey digits); ``label_maps`` the class index
    of every pixel of ``images`` (segmentation-to-image).
    """

    images: Tensor  # float32 in [-1, 1], N x C x H x W
    labels: Tensor | None = None  # int64, N
    inputs: Tensor | None = None  # float32 in [-1, 1], N x C_in x H x W
    label_maps: Tensor | None = None  # int64, N x H x W
    domains: Tensor | None = None  # int64, N: each image's domain (unpaired: 0 = A, 1 = B)
    attributes: Tensor | None = None  # float32 0/1, N x A: each image's attributes
    attribute_mask: Tensor | None = None  # float32 0/1, N x A: 1 where the image's dataset defines the attribute
    # bool, N: rows of the fixed labelled subset, the only rows whose label a semi-supervised family may use
    # (the sampler withholds the others' labels); None: no subset was given, so such a family uses no label
    labelled: Tensor | None = None

    def to(self, device: torch.device) -> "ImageBatch":
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return ImageBatch(move(self.images), move(self.labels), move(self.inputs), move(self.label_maps),
                          move(self.domains), move(self.attributes), move(self.attribute_mask), move(self.labelled))

    def __len__(self) -> int:
        return self.images.size(0)


@dataclass(frozen=True)
class ExemplarCondition:
    """What an exemplar-guided family (SEAN, CoCosNet) generates from: a layout and a reference.

    The output has the layout of ``label_maps`` and the appearance of
    ``exemplars``, whose own layouts are ``exemplar_label_maps`` (SEAN reads a
    style per region of the reference; CoCosNet aligns the two layouts).
    """

    label_maps: Tensor  # int64, N x H x W
    exemplars: Tensor  # float32 in [-1, 1], N x C x H x W
    exemplar_label_maps: Tensor  # int64, N x H x W

    def __len__(self) -> int:
        return self.label_maps.size(0)

    def __getitem__(self, index: slice) -> "ExemplarCondition":
        return ExemplarCondition(self.label_maps[index], self.exemplars[index], self.exemplar_label_maps[index])

    def to(self, device: torch.device) -> "ExemplarCondition":
        return ExemplarCondition(self.label_maps.to(device), self.exemplars.to(device),
                                 self.exemplar_label_maps.to(device))


@dataclass(frozen=True)
class DomainCondition:
    """What unpaired and multi-domain families translate: source images, where they are from, where to.

    ``source`` and ``target`` are both domain indices (int64 N) or both
    attribute vectors (float N x A, 0/1; RelGAN takes target - source as its
    relative attributes). ``references``, when given, are images of the target
    domain whose style reference-guided families (MUNIT, StarGAN v2) copy;
    without them those families sample a style code.
    """

    images: Tensor  # float32 in [-1, 1], N x C x H x W
    source: Tensor
    target: Tensor
    references: Tensor | None = None  # float32 in [-1, 1], N x C x H x W
    # float N x A, 1 where a target attribute is defined: with combined label sets, those of the target row's
    # dataset (StarGAN's mask vector); None when every attribute is, or to let the family infer it
    target_mask: Tensor | None = None

    def __len__(self) -> int:
        return self.images.size(0)

    def __getitem__(self, index: slice) -> "DomainCondition":
        return DomainCondition(*(None if t is None else t[index] for t in self._tensors()))

    def to(self, device: torch.device) -> "DomainCondition":
        return DomainCondition(*(None if t is None else t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[Tensor | None, ...]:
        return self.images, self.source, self.target, self.references, self.target_mask


def one_hot_maps(label_maps: Tensor, num_classes: int) -> Tensor:
    """int64 N x H x W class indices -> float N x K x H x W one-hot planes."""
    return nn.functional.one_hot(label_maps, num_classes).permute(0, 3, 1, 2).float()


@dataclass(frozen=True)
class RealSplit:
    """Real data for a family's own metrics: the evaluator's 90/10 split of the prepared images (in [-1, 1]).

    ``classify`` maps images to the evaluator's class probabilities (N x K); it is
    None when the extractor does not predict the dataset's classes.
    """

    train_images: Tensor
    train_labels: Tensor | None
    test_images: Tensor
    test_labels: Tensor | None
    classify: Callable[[Tensor], Tensor] | None = None


Networks = Mapping[str, nn.Module]
LossResult = tuple[Tensor, dict[str, float]]
LossFn = Callable[[Any, Networks], LossResult]


@dataclass(frozen=True)
class Phase:
    """One update of some modules inside a training iteration.

    ``repeats`` runs the phase that many times per iteration, each on a fresh
    batch (WGAN's n_critic); ``every`` runs it only on iterations divisible by
    it (lazy regularisation). ``modules`` name the networks whose optimizers
    step; gradients of every other network are neither kept nor synchronised.
    ``uses_data=False`` marks a loss that needs only the batch's size, device
    and labels (a noise-to-image generator step): it reuses the previous batch
    instead of drawing new images, so the discriminator sees the whole epoch.
    ``after_step``, when given, runs on the networks right after the optimizers
    step (WGAN's weight clipping).
    """

    name: str
    modules: tuple[str, ...]
    loss: LossFn
    repeats: int = 1
    every: int = 1
    uses_data: bool = True
    after_step: Callable[[Networks], None] | None = None

    def runs_at(self, step: int) -> bool:
        return step % self.every == 0


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (its buffers live there)."""
    return getattr(module, "module", module)


def rank_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` over data-parallel ranks (itself when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


class Family(ABC):
    """Base class of every family; subclasses register with ``@register``."""

    name: ClassVar[str]
    task: ClassVar[TaskKind]
    paper: ClassVar[str]
    Config: ClassVar[type]
    tiny: ClassVar[dict[str, Any]] = {}  # overrides that shrink the family for the contract test

    def __init__(self, config: Any, spec: DataSpec):
        self.config = config
        self.spec = spec
        self.check_spec(spec)
        self.nets = nn.ModuleDict(self.build_networks())

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        """Refuse data this family cannot train on (e.g. labels missing for a conditional family)."""
        if cls.task is TaskKind.CLASS_CONDITIONAL and spec.num_classes < 2:
            raise ConfigError(f"family {cls.name} is class-conditional and needs labelled data with at least "
                              f"2 classes; the data has {spec.num_classes}")
        if cls.task is TaskKind.PAIRED_TRANSLATION and spec.input_channels == 0:
            raise ConfigError(f"family {cls.name} translates paired images and needs paired data "
                              "(data.source: edges2digits, colorize or paired:folder:PATH)")
        if cls.task is TaskKind.UNPAIRED_TRANSLATION and spec.num_domains != 2:
            raise ConfigError(f"family {cls.name} translates between two domains and needs unpaired data with "
                              f"domains A and B (data.source: digits2colored or unpaired:folder:PATH); the data has "
                              f"{spec.num_domains} domains")
        if cls.task is TaskKind.MULTI_DOMAIN_TRANSLATION and spec.num_domains < 2 and spec.num_attributes < 1:
            raise ConfigError(f"family {cls.name} translates between domains and needs data with domains or "
                              "attributes (data.source: digit_domains, domains:folder:PATH or attributes:folder:PATH)")
        if cls.task is TaskKind.SEGMENTATION_TO_IMAGE and spec.map_classes < 2:
            raise ConfigError(f"family {cls.name} synthesises images from label maps and needs segmentation data "
                              "(data.source: shapes, shapes64 or segmentation:folder:PATH)")

    @abstractmethod
    def build_networks(self) -> dict[str, nn.Module]:
        """The family's modules by name; all are checkpointed."""

    @abstractmethod
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per trained module, keyed by the module's name."""

    @abstractmethod
    def phases(self) -> list[Phase]:
        """The training iteration, in order."""

    @abstractmethod
    def generate(self, n: int, condition: Any = None) -> Tensor:
        """n images in [-1, 1] for evaluation, given conditions where the task has them."""

    def set_progress(self, fraction: float) -> None:
        """Told before every iteration how far the run is (0 to 1, by steps or by ``train.max_seconds``,
        whichever is further; the same on every rank). A schedule over the run's length (progressive growing)
        follows it; most families ignore it."""

    def task_metrics(self, real: RealSplit) -> dict[str, float]:
        """Metrics only this family's method has (a probe of its encoder, its classifier's accuracy); none here."""
        return {}

    def sample_variants(self, n: int) -> dict[str, Tensor]:
        """Named alternative ways to sample (n images in [-1, 1] each, no conditions), scored by the evaluator
        like the ordinary samples and reported as ``<name>/<metric>`` (StyleGAN's truncation); none here."""
        return {}

    def sample_conditions(self, n: int) -> Any:
        """Conditions for ``generate`` that cover the task evenly (balanced classes here).

        Translation tasks condition on real data instead: see ``condition_of``.
        """
        if self.task is TaskKind.CLASS_CONDITIONAL:
            return torch.arange(n) % self.spec.num_classes
        return None

    def condition_of(self, batch: ImageBatch) -> Any:
        """The condition ``generate`` translates for a batch of real data: its source images (paired)
        or its label maps (segmentation); exemplar families pair each layout with another row's image."""
        if self.task is TaskKind.PAIRED_TRANSLATION:
            return batch.inputs
        if self.task is TaskKind.SEGMENTATION_TO_IMAGE:
            return batch.label_maps
        if self.task in (TaskKind.UNPAIRED_TRANSLATION, TaskKind.MULTI_DOMAIN_TRANSLATION):
            return domain_condition_of(batch, self.spec, self.conditions_on_attributes)
        return self.sample_conditions(len(batch))

    @property
    def conditions_on_attributes(self) -> bool:
        """True when ``generate``'s DomainCondition carries attribute vectors, False for domain indices."""
        return False

    @property
    def style_guided(self) -> bool:
        """True when ``generate`` takes the style of a DomainCondition's references, and samples a style code
        without them (MUNIT, StarGAN v2)."""
        return False

    @property
    def translates(self) -> bool:
        """True when the family generates from real inputs (``condition_of``), not from noise alone."""
        return self.task in TRANSLATION_TASKS

    def adam_per_module(self, lr: float, betas: tuple[float, float],
                        names: tuple[str, ...] = ("G", "D")) -> dict[str, torch.optim.Optimizer]:
        """One Adam optimizer per named module: the common case of build_optimizers."""
        return {name: torch.optim.Adam(self.nets[name].parameters(), lr, betas=betas) for name in names}

    @property
    def device(self) -> torch.device:
        return next(self.nets.parameters()).device

    def latent(self, n: int, dim: int, device: torch.device | None = None) -> Tensor:
        return torch.randn(n, dim, device=device or self.device)

    @property
    def sampling_generator(self) -> nn.Module:
        """What ``generate`` and the export run: G's moving average ``G_ema`` where the family keeps one, else G."""
        return self.nets["G_ema"] if "G_ema" in self.nets else self.nets["G"]

    def update_generator_average(self, nets: Networks) -> None:
        """A G phase's ``after_step``: move ``G_ema`` toward G's new weights (``config.ema_decay``)."""
        self.nets["G_ema"].update(self.nets["G"], self.config.ema_decay)

    def export_generator(self) -> "ExportedGenerator":
        """The generator as one module of one tensor, for the model registry.

        The default serves noise-to-image families whose ``G`` takes ``(z)`` or,
        class-conditional, ``(z, labels)``; other task kinds override it.
        """
        if self.task not in (TaskKind.UNCONDITIONAL, TaskKind.CLASS_CONDITIONAL):
            raise NotImplementedError(f"family {self.name} must define export_generator for task {self.task.value}")
        num_classes = self.spec.num_classes if self.task is TaskKind.CLASS_CONDITIONAL else 0
        return ExportedGenerator(self.sampling_generator, self.config.z_dim, num_classes)


def domain_condition_of(batch: ImageBatch, spec: DataSpec, attributes: bool = False) -> DomainCondition:
    """Each image to the next domain (A <-> B for unpaired data), or (``attributes``) to the attributes of the
    next row, with a reference image of that target from the batch where one exists (else the next row's)."""
    if not attributes:
        if batch.domains is None or spec.num_domains < 2:
            raise ValueError("domain_condition_of: the batch has no domains")
        target = (batch.domains + 1) % spec.num_domains
        return DomainCondition(batch.images, batch.domains, target, batch.images[reference_rows(batch.domains, target)])
    if batch.attributes is None:
        raise ValueError("domain_condition_of: the batch has no attributes")
    mask = None if batch.attribute_mask is None else torch.roll(batch.attribute_mask, 1, 0)
    return DomainCondition(batch.images, batch.attributes, torch.roll(batch.attributes, 1, 0),
                           torch.roll(batch.images, 1, 0), mask)


def reference_rows(domains: Tensor, target: Tensor) -> Tensor:
    """For each row, the first other row of the batch whose domain is the row's target (itself when none is)."""
    match = domains.view(1, -1) == target.view(-1, 1)  # [i, j]: row j is of row i's target domain
    match.fill_diagonal_(False)
    found = match.any(dim=1)
    first = match.float().argmax(dim=1)
    return torch.where(found, first, torch.arange(len(domains), device=domains.device))


class TranslationExport(nn.Module):
    """``forward(inputs)`` with inputs one image-shaped condition tensor, N x C_cond x H x W.

    ``encode`` turns a family's condition into that tensor (a source image as
    it is, a label map as one-hot planes, a layout and exemplar concatenated);
    ``translate`` is the family's generator applied to it. ``latent_dim`` is 0:
    a registered translation model maps real inputs, it does not sample noise.
    """

    latent_dim = 0
    num_classes = 0

    def __init__(self, translator: nn.Module, condition_shape: tuple[int, int, int], condition_kind: str):
        super().__init__()
        self.translator = translator
        self.condition_shape, self.condition_kind = tuple(condition_shape), condition_kind

    def forward(self, inputs: Tensor) -> Tensor:
        return self.translator(inputs)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random conditions of the right shape: images in [-1, 1], or one-hot planes for label maps."""
        g = torch.Generator().manual_seed(seed)
        channels, height, width = self.condition_shape
        if self.condition_kind == "image":
            return torch.rand(n, channels, height, width, generator=g) * 2 - 1
        if self.condition_kind == "label_map":
            return one_hot_maps(torch.randint(channels, (n, height, width), generator=g), channels)
        raise ValueError(f"unknown condition kind {self.condition_kind!r}")


class ExportedGenerator(nn.Module):
    """``forward(inputs)`` with inputs = latents, then a one-hot class block when conditional.

    One tensor in and one out keeps the registered model loadable by
    ``mlflow.pytorch.load_model`` and servable without ganzoo's family code.
    """

    def __init__(self, generator: nn.Module, latent_dim: int, num_classes: int = 0):
        super().__init__()
        self.generator, self.latent_dim, self.num_classes = generator, latent_dim, num_classes

    def forward(self, inputs: Tensor) -> Tensor:
        z = inputs[:, : self.latent_dim]
        if self.num_classes == 0:
            return self.generator(z)
        return self.generator(z, inputs[:, self.latent_dim:].argmax(dim=1))

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """A latent batch (and balanced one-hot classes): the registry's input example."""
        z = torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))
        if self.num_classes == 0:
            return z
        onehot = nn.functional.one_hot(torch.arange(n) % self.num_classes, self.num_classes).float()
        return torch.cat([z, onehot], dim=1)
