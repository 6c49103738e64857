"""Generate images from a checkpoint, for evaluation and for ``ganzoo sample``."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import torch

from components.errors import GanzooError
from components.families import Family
from components.training.checkpoint import load_family


def sample_from_checkpoint(checkpoint: str | Path, n: int, seed: int = 0,
                           batch_size: int = 500) -> tuple[np.ndarray, np.ndarray | None]:
    """(images N x C x H x W float32 in [-1, 1], labels or None); classes balanced for conditional families."""
    if n <= 0:
        raise GanzooError(f"-n: expected a positive number of samples, got {n}")
    family, _ = load_family(checkpoint)
    return sample_from_family(family, n, seed, batch_size)


def sample_from_family(family: Family, n: int, seed: int = 0,
                       batch_size: int = 500) -> tuple[np.ndarray, np.ndarray | None]:
    """As ``sample_from_checkpoint``, from a family already loaded."""
    family.nets.eval()
    conditions = family.sample_conditions(n)
    chunks = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            part = None if conditions is None else conditions[start:stop]
            chunks.append(family.generate(stop - start, part).float().clamp_(-1, 1).cpu())
    images = torch.cat(chunks).numpy()
    labels = None if conditions is None else conditions.numpy().astype(np.int64)
    return images, labels


def write_samples(path: str | Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """``images`` (and ``labels`` when given) into an .npz, written to a temporary name and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


# Translation families: outputs for real conditions


def colour_label_maps(label_maps: torch.Tensor) -> torch.Tensor:
    """int64 N x H x W class indices -> N x 3 x H x W in [-1, 1], one fixed colour per class (for grids)."""
    index = torch.arange(256)
    # a fixed, well-spread palette: the golden-ratio walk around the hue circle, brightness alternating
    hue = (index * 0.618034) % 1.0
    value = 0.55 + 0.45 * (index % 2)
    palette = torch.stack([_hue_channel(hue, shift) * value for shift in (0.0, 2 / 3, 1 / 3)], dim=1)
    palette[0] = 0.0  # class 0 (background, usually) is black
    return palette.to(label_maps.device)[label_maps].permute(0, 3, 1, 2) * 2 - 1


def _hue_channel(hue: torch.Tensor, shift: float) -> torch.Tensor:
    return ((torch.cos(2 * torch.pi * (hue + shift)) + 1) / 2).clamp(0, 1)


def condition_pictures(family: Family, condition) -> list[torch.Tensor]:
    """How a condition looks in a grid: the source image, the coloured label map (and the exemplar)."""
    from components.families import ExemplarCondition

    if isinstance(condition, ExemplarCondition):
        return [colour_label_maps(condition.label_maps), condition.exemplars]
    if condition.dtype.is_floating_point:
        return [condition]
    return [colour_label_maps(condition)]


def domain_targets(family: Family, batch) -> list:
    """One DomainCondition per grid column: every image to each domain in turn (with a reference image of
    that domain from the batch), or, for attribute families, with each attribute flipped in turn."""
    from components.families import DomainCondition
    from components.families.base import reference_rows

    if family.conditions_on_attributes:
        flips = torch.eye(batch.attributes.size(1), device=batch.attributes.device)
        return [DomainCondition(batch.images, batch.attributes, (batch.attributes - flip).abs(),
                                torch.roll(batch.images, 1, 0), batch.attribute_mask) for flip in flips]
    targets = [torch.full_like(batch.domains, d) for d in range(family.spec.num_domains)]
    return [DomainCondition(batch.images, batch.domains, t, batch.images[reference_rows(batch.domains, t)])
            for t in targets]


GUIDES = ("reference", "latent")


def domain_columns(family: Family, batch, guide: str = "reference", styles: int = 1) -> list[tuple[str, torch.Tensor]]:
    """(kind, images) per grid column, kind "source", "reference" or "output": the source, then its translation
    to each domain (or with each attribute flipped). Style-guided families (MUNIT, StarGAN v2) show each
    translation after the reference whose style it takes, or, with ``guide`` "latent", ``styles`` translations per
    domain, each from a fresh style code."""
    if guide not in GUIDES:
        raise GanzooError(f"--guide {guide}: expected one of {', '.join(GUIDES)}")
    columns = [("source", batch.images)]
    with torch.no_grad():
        for condition in domain_targets(family, batch):
            if family.style_guided and guide == "latent":
                sampled = dataclasses.replace(condition, references=None)
                columns += [("output", family.generate(len(batch), sampled)) for _ in range(styles)]
                continue
            if family.style_guided:
                columns.append(("reference", condition.references))
            columns.append(("output", family.generate(len(batch), condition)))
    return columns


def attribute_walk_columns(family: Family, batch, steps: int,
                           attribute: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """The source, then G(x, alpha v) for ``steps`` alphas from 0 to 1 (RelGAN's attribute interpolation), v
    the change to the next row's attributes, or flipping ``attribute`` alone."""
    interpolate = getattr(family, "interpolate", None)
    if not family.conditions_on_attributes or not callable(interpolate):
        raise GanzooError(f"--interpolate: family {family.name} has no attribute interpolation "
                          "(relgan interpolates attributes; noise-to-image families walk their latent)")
    if steps < 2:
        raise GanzooError(f"--walk-steps: expected at least 2 points per walk, got {steps}")
    source = batch.attributes.float()
    if attribute is None:
        target = torch.roll(source, 1, 0)
    else:
        target = source.clone()
        target[:, attribute] = 1 - target[:, attribute]
    relative = target - source
    alphas = torch.linspace(0.0, 1.0, steps).tolist()
    return [("source", batch.images)] + [("output", interpolate(batch.images, relative, a)) for a in alphas]


def stack_columns(columns: list[tuple[str, torch.Tensor]]) -> tuple[torch.Tensor, int]:
    """(images row-major, images per row) of one grid row per example."""
    rows = torch.stack([images.float().cpu().clamp(-1, 1) for _, images in columns], dim=1)
    return rows.flatten(0, 1), len(columns)


def domain_grid(family: Family, batch, guide: str = "reference", styles: int = 1) -> tuple[torch.Tensor, int]:
    """(images, images per row): source | its translation to each domain (or with each attribute flipped)."""
    return stack_columns(domain_columns(family, batch, guide, styles))


def translation_grid(family: Family, batch) -> tuple[torch.Tensor, int]:
    """(images, images per row) of one row per example: input | output | target (| exemplar for exemplar
    families, shown right after the label map); source | translations for unpaired and multi-domain families."""
    if batch.domains is not None or batch.attributes is not None:
        return domain_grid(family, batch)
    condition = family.condition_of(batch)
    with torch.no_grad():
        outputs = family.generate(len(batch), condition)
    columns = [*condition_pictures(family, condition), outputs, batch.images]
    channels = max(c.size(1) for c in columns)
    columns = [c.expand(-1, channels, -1, -1) if c.size(1) == 1 else c for c in columns]
    rows = torch.stack([c.float().cpu().clamp(-1, 1) for c in columns], dim=1)
    return rows.flatten(0, 1), len(columns)


def translate(family: Family, batches, seed: int = 0) -> tuple[np.ndarray, list]:
    """(outputs float32 N x C x H x W in [-1, 1], the conditions used) for an iterable of real ImageBatches."""
    family.nets.eval()
    outputs, conditions = [], []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for batch in batches:
            batch = batch.to(family.device)
            condition = family.condition_of(batch)
            outputs.append(family.generate(len(batch), condition).float().clamp_(-1, 1).cpu())
            conditions.append(condition)
    return torch.cat(outputs).numpy(), conditions
