"""Generate images from a checkpoint, for evaluation and for ``ganzoo sample``."""

from __future__ import annotations

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
