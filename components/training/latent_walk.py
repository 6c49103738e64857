"""Walks through a generator's latent space and DCGAN's latent vector arithmetic (Radford et al. 2016, sec. 6).

A smooth walk between two latents, without sharp transitions, is DCGAN's
evidence that the generator has learnt a manifold rather than memorised
images. The walks here go through the family's exported generator (one tensor
in: the latents, then whatever condition block the family's input has), so
any noise-to-image family with a ``z_dim`` can be walked: a class-conditional
row keeps its class, a text-conditional row its caption, and only the latent
moves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from components.errors import GanzooError
from components.families import Family, TaskKind


def lerp(start: Tensor, end: Tensor, fractions: Tensor) -> Tensor:
    """R x S x D: for each of R pairs of rows, the S points (1 - t) start + t end."""
    t = fractions.view(1, -1, 1).to(start.dtype)
    return (1 - t) * start.unsqueeze(1) + t * end.unsqueeze(1)


def slerp(start: Tensor, end: Tensor, fractions: Tensor) -> Tensor:
    """R x S x D points on the great circle from start to end, norms interpolated linearly.

    For Gaussian latents a straight line passes through the low-norm middle no
    training latent comes from; the spherical walk keeps to the shell they
    lie on. Nearly parallel pairs fall back to the straight line.
    """
    start_norm, end_norm = start.norm(dim=1, keepdim=True), end.norm(dim=1, keepdim=True)
    unit_start, unit_end = start / start_norm.clamp(min=1e-12), end / end_norm.clamp(min=1e-12)
    angle = torch.acos((unit_start * unit_end).sum(dim=1, keepdim=True).clamp(-1.0, 1.0))  # R x 1
    t = fractions.view(1, -1, 1).to(start.dtype)
    sin = torch.sin(angle).unsqueeze(1)  # R x 1 x 1
    parallel = (sin.abs() < 1e-6)
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    a = torch.sin((1 - t) * angle.unsqueeze(1)) / safe_sin
    b = torch.sin(t * angle.unsqueeze(1)) / safe_sin
    direction = a * unit_start.unsqueeze(1) + b * unit_end.unsqueeze(1)
    direction = torch.where(parallel, lerp(unit_start, unit_end, fractions), direction)
    norm = lerp(start_norm, end_norm, fractions)
    return direction * norm


def latent_walk(start: Tensor, end: Tensor, steps: int, spherical: bool = False,
                spherical_columns: int | None = None) -> Tensor:
    """(R * steps) x D inputs, row-major: row r walks from start[r] to end[r] in ``steps`` points.

    With ``spherical`` the first ``spherical_columns`` columns (the Gaussian z;
    default all) walk on the sphere and the rest (a condition block) linearly.
    """
    if steps < 2:
        raise GanzooError(f"--walk-steps: expected at least 2 points per walk, got {steps}")
    fractions = torch.linspace(0.0, 1.0, steps)
    walk = lerp(start, end, fractions)
    if spherical:
        k = start.size(1) if spherical_columns is None else spherical_columns
        walk[:, :, :k] = slerp(start[:, :k], end[:, :k], fractions)
    return walk.reshape(-1, start.size(1))


def vector_arithmetic(group_a: Tensor, group_b: Tensor, group_c: Tensor) -> Tensor:
    """mean(A) - mean(B) + mean(C) of three groups of latents (rows): DCGAN's "smiling woman - woman + man".

    Averaging each group (the paper uses three exemplars per concept) is what
    makes the arithmetic stable; single latents are too noisy.
    """
    for name, group in (("A", group_a), ("B", group_b), ("C", group_c)):
        if group.dim() != 2 or group.size(0) == 0:
            raise GanzooError(f"vector arithmetic: group {name} must be a non-empty N x D batch of latents, "
                              f"got shape {tuple(group.shape)}")
    if not group_a.size(1) == group_b.size(1) == group_c.size(1):
        raise GanzooError(f"vector arithmetic: latent sizes differ ({group_a.size(1)}, {group_b.size(1)}, "
                          f"{group_c.size(1)})")
    return group_a.mean(dim=0) - group_b.mean(dim=0) + group_c.mean(dim=0)


def walk_inputs(family: Family, rows: int, steps: int, seed: int = 0, spherical: bool = False) -> tuple[Any, Tensor]:
    """(the exported generator, its (rows * steps) x D walk inputs) between two prior draws per row."""
    z_dim = getattr(family.config, "z_dim", None)
    if not isinstance(z_dim, int):
        raise GanzooError(f"--interpolate: family {family.name} has no latent z (no z_dim); interpolation walks "
                          "the latent of a noise-to-image generator")
    if rows < 1:
        raise GanzooError(f"-n: expected a positive number of walks, got {rows}")
    try:
        exported = family.export_generator().eval()
    except NotImplementedError:
        raise GanzooError(f"--interpolate: family {family.name} ({family.task.value}) does not export a "
                          "latent-input generator") from None
    # two independent draws from the family's own prior (Gaussian, uniform, its codes), same condition per row
    start = exported.example_inputs(rows, seed=2 * seed)
    end = exported.example_inputs(rows, seed=2 * seed + 1)
    return exported, latent_walk(start, end, steps, spherical, spherical_columns=z_dim)


@torch.no_grad()
def walk_images(family: Family, rows: int, steps: int, seed: int = 0, spherical: bool = False,
                text: str | None = None) -> Tensor:
    """(rows * steps) x C x H x W images in [-1, 1]; with ``text``, every row of a text-conditional family
    shows that caption (its input is [z ‖ token ids])."""
    family.nets.eval()
    exported, inputs = walk_inputs(family, rows, steps, seed, spherical)
    if text is not None:
        if family.task is not TaskKind.TEXT_CONDITIONAL:
            raise GanzooError(f"--text: family {family.name} is {family.task.value}; only text-conditional "
                              "families take a caption")
        tokens = family.tokens_for_text([text])
        inputs[:, exported.latent_dim:] = tokens.to(inputs.dtype)
    return exported(inputs).float().clamp(-1, 1)
