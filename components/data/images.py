"""Small pure image utilities: resizing, value-range conversion and sample grids.

Arrays are NCHW. uint8 images hold 0..255; float images hold [-1, 1], the range
the generators produce. Misuse of these functions (wrong dtype or shape) is a bug
in the caller, so it raises ValueError rather than a user-facing DataError.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _check_nchw(images: np.ndarray, what: str) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty N,C,H,W array with C in {{1, 3}}, got shape {images.shape}")


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 N,C,H,W images to N,C,size,size with Pillow's bilinear filter.

    Each channel is resized on its own as an 'L' image, which is what Pillow does
    per band for RGB too, so the result depends only on the pixels.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"resize_images: expected uint8 N,C,H,W, got {images.dtype} {images.shape}")
    if size < 1:
        raise ValueError(f"resize_images: size must be a positive integer, got {size}")
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images.copy()
    out = np.empty((n, c, size, size), dtype=np.uint8)
    for i in range(n):
        for j in range(c):
            band = Image.fromarray(np.ascontiguousarray(images[i, j]))
            out[i, j] = np.asarray(band.resize((size, size), Image.Resampling.BILINEAR))
    return out


def _is_numpy(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def to_unit_range(images_uint8: Any) -> Any:
    """uint8 0..255 -> float32 [-1, 1]; numpy in, numpy out; torch tensor in, tensor out."""
    if _is_numpy(images_uint8):
        if images_uint8.dtype != np.uint8:
            raise ValueError(f"to_unit_range: expected uint8, got {images_uint8.dtype}")
        return images_uint8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    import torch  # only reached with a tensor, so torch is already loaded

    if images_uint8.dtype != torch.uint8:
        raise ValueError(f"to_unit_range: expected uint8, got {images_uint8.dtype}")
    return images_uint8.float() / 127.5 - 1.0


def from_unit_range(images_float: Any) -> Any:
    """float [-1, 1] -> uint8 0..255, clamping out-of-range values and rounding.

    numpy in, numpy out; torch tensor in, tensor out (on the same device).
    """
    if _is_numpy(images_float):
        if images_float.dtype.kind != "f":
            raise ValueError(f"from_unit_range: expected floats, got {images_float.dtype}")
        scaled = (np.clip(images_float, -1.0, 1.0) + 1.0) * 127.5
        return np.rint(scaled).astype(np.uint8)
    import torch  # only reached with a tensor, so torch is already loaded

    if not images_float.dtype.is_floating_point:
        raise ValueError(f"from_unit_range: expected floats, got {images_float.dtype}")
    scaled = (images_float.clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8)


def _as_numpy(images: Any) -> np.ndarray:
    if _is_numpy(images):
        return images
    if hasattr(images, "detach"):
        return images.detach().cpu().numpy()
    return np.asarray(images)


def make_grid(images: Any, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile N,C,H,W images (float [-1, 1] or uint8) into one uint8 H,W,C grid.

    ``nrow`` is the number of images per row (default ceil(sqrt(N)), a square-ish
    grid); ``padding`` black pixels surround every cell, as in torchvision.
    """
    images = _as_numpy(images)
    _check_nchw(images, "make_grid")
    if images.dtype.kind == "f":
        images = from_unit_range(images)
    elif images.dtype != np.uint8:
        raise ValueError(f"make_grid: expected float in [-1, 1] or uint8, got {images.dtype}")
    n, c, h, w = images.shape
    ncol = math.ceil(math.sqrt(n)) if nrow is None else nrow
    if ncol < 1 or padding < 0:
        raise ValueError(f"make_grid: expected nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    rows = math.ceil(n / ncol)
    grid = np.zeros((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), dtype=np.uint8)
    for k in range(n):
        top = padding + (k // ncol) * (h + padding)
        left = padding + (k % ncol) * (w + padding)
        grid[top : top + h, left : left + w] = images[k].transpose(1, 2, 0)
    return grid


def save_image_grid(images: Any, path: str | Path, nrow: int | None = None) -> Path:
    """Write ``make_grid(images)`` as a PNG, atomically (temp file, then rename)."""
    grid = make_grid(images, nrow=nrow)
    picture = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private; a sample grid is not secret
        with os.fdopen(fd, "wb") as f:
            picture.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
