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


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know of its data to size its networks."""

    channels: int
    image_size: int
    num_classes: int = 0


@dataclass
class ImageBatch:
    """A batch of the unconditional and class-conditional task kinds."""

    images: Tensor  # float32 in [-1, 1], N x C x H x W
    labels: Tensor | None = None  # int64, N

    def to(self, device: torch.device) -> "ImageBatch":
        labels = None if self.labels is None else self.labels.to(device, non_blocking=True)
        return ImageBatch(self.images.to(device, non_blocking=True), labels)

    def __len__(self) -> int:
        return self.images.size(0)


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

    def task_metrics(self, real: RealSplit) -> dict[str, float]:
        """Metrics only this family's method has (a probe of its encoder, its classifier's accuracy); none here."""
        return {}

    def sample_conditions(self, n: int) -> Any:
        """Conditions for ``generate`` that cover the task evenly (balanced classes here)."""
        if self.task is TaskKind.CLASS_CONDITIONAL:
            return torch.arange(n) % self.spec.num_classes
        return None

    def adam_per_module(self, lr: float, betas: tuple[float, float],
                        names: tuple[str, ...] = ("G", "D")) -> dict[str, torch.optim.Optimizer]:
        """One Adam optimizer per named module: the common case of build_optimizers."""
        return {name: torch.optim.Adam(self.nets[name].parameters(), lr, betas=betas) for name in names}

    @property
    def device(self) -> torch.device:
        return next(self.nets.parameters()).device

    def latent(self, n: int, dim: int, device: torch.device | None = None) -> Tensor:
        return torch.randn(n, dim, device=device or self.device)

    def export_generator(self) -> "ExportedGenerator":
        """The generator as one module of one tensor, for the model registry.

        The default serves noise-to-image families whose ``G`` takes ``(z)`` or,
        class-conditional, ``(z, labels)``; other task kinds override it.
        """
        if self.task not in (TaskKind.UNCONDITIONAL, TaskKind.CLASS_CONDITIONAL):
            raise NotImplementedError(f"family {self.name} must define export_generator for task {self.task.value}")
        num_classes = self.spec.num_classes if self.task is TaskKind.CLASS_CONDITIONAL else 0
        return ExportedGenerator(self.nets["G"], self.config.z_dim, num_classes)


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
