"""Generate images from a registered generator (``models:/mnist5k-dcgan@champion``).

The registered model is a ``torch.export`` graph of one tensor in, one out:
inputs are N x (latent_dim [+ num_classes one-hot]). Its latent size and class
count are read from the model's MLmodel metadata, written when it was logged.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.errors import GanzooError
from components.registry.tracking import redact, with_store_retries

if TYPE_CHECKING:
    import torch

_NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
_ALIAS = re.compile(r"[A-Za-z0-9_-]+")
_SUFFIX = re.compile(r"[A-Za-z0-9_]+")  # a version number, 'latest' or a stage name
_RUN_ID = re.compile(r"[A-Za-z0-9_-]+")
_URI_FORMS = ("expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or the folder of a model saved "
              "by MLflow")


def _plain_name(name: str) -> bool:
    """A registered model name MLflow accepts and no store could read as a path: no '/', ':', '..' (its rule), and
    no '@' or backslash either."""
    return (bool(name.strip()) and not any(c in name for c in "/:@\\") and posixpath.normpath(name) == name
            and name != "." and not name.startswith(".."))


def _saved_model_folder(uri: str) -> bool:
    """A path (or file:// URI) the user names on purpose: only a folder holding MLflow's MLmodel file."""
    path = Path(uri.removeprefix("file://"))
    return path.is_dir() and (path / "MLmodel").is_file()


def check_model_uri(uri: str) -> str:
    """``uri`` if it is a registered-model URI whose parts cannot name files; else one line, before any access."""
    ok = False
    if uri.isprintable() and uri.startswith("models:/"):
        name, slash, suffix = uri[len("models:/"):].partition("/")
        if slash:
            ok = _plain_name(name) and bool(_SUFFIX.fullmatch(suffix))
        else:
            name, at, alias = name.partition("@")
            ok = _plain_name(name) and (not at or bool(_ALIAS.fullmatch(alias)))
    elif uri.isprintable() and uri.startswith("runs:/"):
        run_id, slash, path = uri[len("runs:/"):].partition("/")
        segments = path.split("/")
        ok = bool(_RUN_ID.fullmatch(run_id)) and bool(slash) and all(
            s and s not in (".", "..") and "\\" not in s for s in segments)
    elif uri.isprintable() and uri:
        ok = _saved_model_folder(uri)
    if not ok:
        raise GanzooError(f"{uri!r}: not a registered model URI; {_URI_FORMS} (no '/', ':', '@' or '..' in a name)")
    return uri


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


def load_registered_generator(uri: str) -> RegisteredGenerator:
    """Load ``uri`` (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/…``) from the configured store."""
    return _load_checked(check_model_uri(uri))  # checked outside the retries: a bad URI is never transient


@with_store_retries
def _load_checked(uri: str) -> RegisteredGenerator:
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
