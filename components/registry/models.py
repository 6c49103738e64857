"""Generate images from a registered generator (``models:/mnist5k-dcgan@champion``).

The registered model is a ``torch.export`` graph of one tensor in, one out:
inputs are N x (latent_dim [+ num_classes one-hot]). Its latent size and class
count are read from the model's MLmodel metadata, written when it was logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from components.errors import GanzooError
from components.registry.tracking import redact, with_store_retries

if TYPE_CHECKING:
    import torch

_NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


@dataclass
class RegisteredGenerator:
    """A loaded registered generator and the shape of its input."""

    module: torch.nn.Module  # a torch.fx GraphModule for models logged in the pt2 format
    latent_dim: int
    num_classes: int
    uri: str

    def inputs(self, latents: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The model's input: latents, then one-hot labels when conditional."""
        import torch

        if self.num_classes == 0:
            return latents
        return torch.cat([latents, torch.nn.functional.one_hot(labels, self.num_classes).float()], dim=1)


@with_store_retries
def load_registered_generator(uri: str) -> RegisteredGenerator:
    """Load ``uri`` (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/…``) from the configured store."""
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    try:
        metadata = get_model_info(uri).metadata or {}
        module = mlflow.pytorch.load_model(uri)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND_CODES:
            raise
        raise GanzooError(f"{uri}: no such registered model, version or alias in the MLflow store "
                          f"{redact(mlflow.get_tracking_uri())}") from None
    _to_eval_mode(module)
    latent_dim = metadata.get("latent_dim", getattr(module, "latent_dim", None))
    num_classes = metadata.get("num_classes", getattr(module, "num_classes", 0))
    if latent_dim is None:
        raise GanzooError(f"{uri}: not a ganzoo generator (its MLmodel metadata has no latent_dim)")
    return RegisteredGenerator(module, int(latent_dim), int(num_classes), uri)


def _to_eval_mode(module) -> None:
    """Pickled modules need eval mode; exported graphs were traced in it and refuse ``eval()``."""
    try:
        module.eval()
    except NotImplementedError:
        pass


def generate_from_registry(uri: str, n: int, seed: int = 0,
                           batch_size: int = 500) -> tuple[np.ndarray, np.ndarray | None]:
    """(images N x C x H x W float32 in [-1, 1], labels or None); classes balanced when conditional.

    Latents are drawn as ``sample_from_checkpoint`` draws them (one seeded
    stream, chunk by chunk), so a registered model and its checkpoint give the
    same images for the same seed.
    """
    import torch

    if n <= 0:
        raise GanzooError(f"-n: expected a positive number of samples, got {n}")
    generator = load_registered_generator(uri)
    if generator.latent_dim == 0:
        raise GanzooError(f"{uri}: a translation model maps input images, it does not sample noise; sample its "
                          "family with --checkpoint or --family, which translate the prepared data's held-out rows")
    labels = torch.arange(n) % generator.num_classes if generator.num_classes else None
    chunks = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            latents = torch.randn(stop - start, generator.latent_dim)
            part = None if labels is None else labels[start:stop]
            chunks.append(generator.module(generator.inputs(latents, part)).float().clamp_(-1, 1))
    images = torch.cat(chunks).numpy()
    return images, None if labels is None else labels.numpy().astype(np.int64)
