"""Feature extractors: images in [-1, 1] to (features, class probabilities) for the metrics.

Two kinds. A domain CNN trained on the prepared data itself (the default: it needs
no downloaded weights and measures what matters for small grey datasets, where
ImageNet features say little), cached per data version. Or the FID Inception-v3
network of pytorch-fid / torch-fidelity, loaded from a local weights file only.

An extractor's ``identity`` names its kind and a hash of its weights; two
reports are comparable only when their identities match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from components.config import EvaluationConfig
from components.data.images import to_unit_range
from components.data.prepared import PreparedDataset
from components.errors import CheckpointError, ConfigError, DataError

WEIGHTS_FILE, META_FILE = "weights.safetensors", "meta.json"


@contextlib.contextmanager
def all_cores() -> Iterator[None]:
    """Use every core this process may run on, then restore the caller's setting (a Ray worker may set 1)."""
    previous = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cores or 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class FeatureExtractor(ABC):
    """Maps float32 N x C x H x W images in [-1, 1] to (features N x D, class probabilities N x K), float64."""

    identity: str  # "kind:first 16 hex digits of the weights' sha256"
    num_classes: int
    accuracy: float | None = None  # held-out accuracy on the real data, where the extractor was trained on it
    predicts_data_classes: bool = False  # True when its classes are the dataset's (conditional accuracy is defined)

    def __init__(self, network: nn.Module) -> None:
        self.network = network.eval()
        self.network.requires_grad_(False)

    @abstractmethod
    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(features, logits) of one batch."""

    def _check(self, images: np.ndarray) -> None:
        if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0 or images.dtype.kind != "f":
            raise DataError(f"images: {images.dtype} {images.shape}; expected float N x C x H x W in [-1, 1] "
                            "with C in {1, 3}")

    def extract(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(features float64 N x D, softmax probabilities float64 N x K) of ``images``."""
        self._check(images)
        features, probs = [], []
        with torch.no_grad(), all_cores():
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))
                feats, logits = self._forward(batch)
                features.append(feats.double())
                probs.append(torch.softmax(logits.double(), dim=1))
        return torch.cat(features).numpy(), torch.cat(probs).numpy()


def _identity(kind: str, weights: bytes) -> str:
    return f"{kind}:{hashlib.sha256(weights).hexdigest()[:16]}"


# The domain CNN


class DomainClassifier(nn.Module):
    """Three conv blocks (32 -> 16 -> 8 -> 4 pixels), a 128-d feature layer and a linear classifier.

    Features are standardised with the real training set's per-dimension mean and
    std (buffers, set after training): KID's kernel (x·y/d + 1)³ assumes features of
    order one, as Inception's pool3 features are, and raw activations are not.
    """

    input_size = 32
    feature_dim = 128

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        widths = (channels, 32, 64, 128)
        self.body = nn.Sequential(*(self._block(a, b) for a, b in zip(widths, widths[1:])))
        self.embed = nn.Linear(128 * 4 * 4, self.feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(self.feature_dim, num_classes))
        self.register_buffer("feature_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feature_std", torch.ones(self.feature_dim))

    @staticmethod
    def _block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.MaxPool2d(2))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(standardised features of the layer before the ReLU, logits); images in [-1, 1] at any size."""
        raw = self.raw_features(images)
        return (raw - self.feature_mean) / self.feature_std, self.head(raw)

    def raw_features(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (self.input_size, self.input_size):
            # antialias matters only when shrinking (64x64 or larger data); it blurs before subsampling
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return self.embed(self.body(images).flatten(1))


class DomainExtractor(FeatureExtractor):
    """A trained DomainClassifier as a feature extractor; ``meta`` is what meta.json records."""

    predicts_data_classes = True

    def __init__(self, network: DomainClassifier, meta: dict, weights: bytes) -> None:
        super().__init__(network)
        self.meta = meta
        self.identity = _identity("domain-cnn", weights)
        self.num_classes = int(meta["num_classes"])
        self.accuracy = float(meta["accuracy"])

    def _check(self, images: np.ndarray) -> None:
        super()._check(images)
        if images.shape[1] != self.meta["channels"]:
            raise DataError(f"images have {images.shape[1]} channels; the domain extractor was trained on "
                            f"{self.meta['channels']}-channel data")

    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.network(images)


def held_out_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic 90/10 (train, held-out) split of ``count`` indices."""
    order = np.random.default_rng(seed).permutation(count)
    held_out = max(1, count // 10)
    return order[held_out:], order[:held_out]


def real_split_rows(count: int, seed: int, max_train: int = 10_000,
                    max_test: int = 2_000) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices of the evaluator's train and held-out images, capped for large datasets: what
    ``real_split`` hands a family's task metrics, and what a semi-supervised family's labels come from."""
    train, test = held_out_split(count, seed)
    return np.sort(train[:max_train]), np.sort(test[:max_test])


def _batch(prepared: PreparedDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(to_unit_range(prepared.images[index])), torch.from_numpy(prepared.labels[index])


def _require_labels(prepared: PreparedDataset) -> None:
    if prepared.labels is None or prepared.num_classes < 2:
        raise ConfigError(f"the domain extractor needs labels with at least 2 classes (this dataset has "
                          f"{prepared.num_classes}); set evaluation.inception_weights to a local Inception-v3 file")


def train_domain_extractor(prepared: PreparedDataset, epochs: int, seed: int,
                           data_version: str = "", batch_size: int = 64) -> DomainExtractor:
    """Train a DomainClassifier on 90% of the prepared images; its accuracy is on the other 10%."""
    _require_labels(prepared)
    train_index, held_out = held_out_split(len(prepared.images), seed)
    with torch.random.fork_rng(devices=[]), all_cores():
        torch.manual_seed(seed)
        network = DomainClassifier(prepared.channels, prepared.num_classes)
        optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
        steps = epochs * -(-len(train_index) // batch_size)
        # warm up, then anneal: a short schedule reaches a few points more accuracy than a constant rate
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
        order_rng = np.random.default_rng(seed + 1)
        network.train()
        for _ in range(epochs):
            order = order_rng.permutation(train_index)
            for start in range(0, len(order), batch_size):
                images, labels = _batch(prepared, order[start:start + batch_size])
                loss = F.cross_entropy(network(images)[1], labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        network.eval()
        _standardise_features(network, prepared, train_index)
        accuracy = _accuracy(network, prepared, held_out)
    meta = {"kind": "domain-cnn", "accuracy": accuracy, "epochs": epochs, "seed": seed, "data_version": data_version,
            "channels": prepared.channels, "image_size": int(prepared.images.shape[-1]),
            "input_size": DomainClassifier.input_size, "num_classes": prepared.num_classes,
            "train_count": len(train_index), "held_out_count": len(held_out)}
    return DomainExtractor(network, meta, _weights_bytes(network))


def _standardise_features(network: DomainClassifier, prepared: PreparedDataset, index: np.ndarray) -> None:
    with torch.no_grad():
        raw = torch.cat([network.raw_features(_batch(prepared, index[start:start + 500])[0])
                         for start in range(0, len(index), 500)]).double()
        network.feature_mean.copy_(raw.mean(dim=0))
        network.feature_std.copy_(raw.std(dim=0).clamp(min=1e-6))  # a dead unit stays 0 rather than NaN


def _accuracy(network: DomainClassifier, prepared: PreparedDataset, index: np.ndarray) -> float:
    correct = 0
    with torch.no_grad():
        for start in range(0, len(index), 500):
            images, labels = _batch(prepared, index[start:start + 500])
            correct += int((network(images)[1].argmax(dim=1) == labels).sum())
    return correct / len(index)


def _weights_bytes(network: nn.Module) -> bytes:
    return save_safetensors({name: t.detach().contiguous() for name, t in network.state_dict().items()})


def load_or_train_domain_extractor(prepared: PreparedDataset, data_version: str, cache_dir: str | Path,
                                   epochs: int, seed: int) -> DomainExtractor:
    """The domain extractor of ``data_version``: loaded from ``cache_dir``, or trained once and cached there."""
    _require_labels(prepared)
    if not data_version:
        raise ConfigError("data version is empty; expected the prepared data's DVC md5 or content hash")
    # Versions look like "<md5>.dir" or "sha256:<hex>": keep the name portable and inside cache_dir
    directory = Path(cache_dir) / f"domain-cnn-{re.sub(r'[^A-Za-z0-9._-]', '_', data_version)}"
    if not directory.exists():
        _write_cache(train_domain_extractor(prepared, epochs, seed, data_version), directory)
    # Loading what is on disk, even right after training, gives every process the same weights
    # when two of them trained the same version at once and only one rename won.
    return _load_cache(directory, prepared, data_version)


def _write_cache(extractor: DomainExtractor, directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".tmp-{directory.name}-"))
    try:
        os.chmod(tmp, 0o755)
        (tmp / WEIGHTS_FILE).write_bytes(_weights_bytes(extractor.network))
        (tmp / META_FILE).write_text(json.dumps(extractor.meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.rename(tmp, directory)
    except OSError:
        if not directory.is_dir():  # anything but losing the race to another process that cached it first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cache(directory: Path, prepared: PreparedDataset, data_version: str) -> DomainExtractor:
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        weights = weights_path.read_bytes()
        network = DomainClassifier(int(meta["channels"]), int(meta["num_classes"]))
        network.load_state_dict(load_safetensors(weights))
        extractor = DomainExtractor(network, meta, weights)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{directory}: cached domain extractor is unreadable ({type(exc).__name__}); "
                              "delete the directory to retrain it") from exc
    if meta.get("data_version") != data_version:
        raise CheckpointError(f"{meta_path}: extractor of data version {meta.get('data_version')!r}, not "
                              f"{data_version!r}; delete the directory to retrain it")
    if (meta["channels"], meta["num_classes"]) != (prepared.channels, prepared.num_classes):
        raise CheckpointError(f"{meta_path}: extractor for {meta['channels']} channels and {meta['num_classes']} "
                              f"classes, but the data has {prepared.channels} and {prepared.num_classes}; "
                              "delete the directory to retrain it")
    return extractor


# The FID Inception-v3 ("pt_inception-2015-12-05"), with the parameter names of pytorch-fid and torch-fidelity


class _ConvBN(nn.Module):
    """Convolution without bias, batch norm (TensorFlow's eps) and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: Tensor) -> Tensor:
    # TensorFlow's graph averages only over real pixels at the border, unlike torchvision's Inception
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _ConvBN(cin, 48, 1), _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_3x3(x)),
        ], dim=1)


class _InceptionB(nn.Module):
    """Grid reduction 35 -> 17."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


class _InceptionC(nn.Module):
    """Factorised 7x7 convolutions as 1x7 and 7x1 pairs."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, **row)
        self.branch7x7_3 = _ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = _ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = _ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = _ConvBN(c7, 192, **row)
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(_avg_pool_3x3(x)),
        ], dim=1)


class _InceptionD(nn.Module):
    """Grid reduction 17 -> 8."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _ConvBN(cin, 192, 1), _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        tower = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), tower, F.max_pool2d(x, 3, stride=2)], dim=1)


class _InceptionE(nn.Module):
    """Expanded filter bank; ``max_pool`` marks the last block, whose pool branch the FID graph max-pools."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_3x3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], dim=1)


class FIDInceptionV3(nn.Module):
    """The Inception-v3 graph of the original TensorFlow FID code: 2048-d pool3 features and 1008 logits.

    Takes N x 3 x 299 x 299 inputs already scaled to [-1, 1] as TensorFlow's graph does ((x - 128) / 128).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _InceptionA(192, 32), _InceptionA(256, 64), _InceptionA(288, 64)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = _InceptionC(768, 128), _InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _InceptionC(768, 160), _InceptionC(768, 192)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = _InceptionE(1280, max_pool=False), _InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pool3 features N x 2048, logits without the bias N x 1008)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        pool = x.mean(dim=(2, 3))
        # The Inception Score of Salimans et al. reads the logits before the bias ("softmax/logits/MatMul")
        return pool, pool @ self.fc.weight.T


def resize_like_tensorflow1(images: Tensor, size: int) -> Tensor:
    """Bilinear resize sampling at dst * in / out (TensorFlow 1.x, align_corners=False, no half-pixel offset).

    This is the resize inside the original FID graph and torch-fidelity; torch's own bilinear
    resize samples at half-pixel centres and shifts the image by a fraction of a pixel.
    """
    for dim in (3, 2):  # width, then height
        n_in = images.shape[dim]
        position = torch.arange(size, dtype=torch.float32) * torch.tensor(n_in / size, dtype=torch.float32)
        low = position.long()
        high = (low + 1).clamp(max=n_in - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        fraction = (position - low.float()).to(images.dtype).view(shape)
        below, above = images.index_select(dim, low), images.index_select(dim, high)
        images = below + (above - below) * fraction
    return images


class InceptionV3Extractor(FeatureExtractor):
    """FID Inception-v3 features from a local weights file (torch-fidelity's or pytorch-fid's .pth)."""

    max_batch = 50  # 299 x 299 activations: 50 images already take ~2 GB in the first layers

    def __init__(self, network: FIDInceptionV3, identity: str) -> None:
        super().__init__(network)
        self.identity = identity
        self.num_classes = 1008

    @classmethod
    def from_file(cls, path: str | Path) -> "InceptionV3Extractor":
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"evaluation.inception_weights: {path}: no such file; expected a local "
                              "torch-fidelity/pytorch-fid Inception-v3 weights file (.pth); nothing is downloaded")
        network = FIDInceptionV3()
        network.load_state_dict(_inception_state_dict(path, network))
        return cls(network, _identity("inception-v3", path.read_bytes()))

    def extract(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        return super().extract(images, min(batch_size, self.max_batch))

    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # The weights expect the 8-bit images the FID graph was fed: quantise, then (x - 128) / 128
        pixels = ((images + 1.0) * 127.5).round().clamp(0.0, 255.0)
        pixels = pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels
        return self.network((resize_like_tensorflow1(pixels, 299) - 128.0) / 128.0)


def _inception_state_dict(path: Path, network: nn.Module) -> dict[str, Tensor]:
    """The file's tensors under this network's names; checks every key and shape, one-line errors."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise CheckpointError(f"{path}: cannot load as a torch state dict ({type(exc).__name__})") from exc
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; expected Inception-v3 weights")
    # DataParallel prefixes "module."; batch-norm step counters are not weights and the converted file has none
    given = {k.removeprefix("module."): v for k, v in loaded.items() if not k.endswith("num_batches_tracked")}
    expected = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(f"{path}: not FID Inception-v3 weights: {len(missing)} keys missing "
                              f"{missing[:2]}, {len(unexpected)} unexpected {unexpected[:2]}")
    for key, tensor in expected.items():
        if given[key].shape != tensor.shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(given[key].shape)}; expected {tuple(tensor.shape)}")
    for key, tensor in network.state_dict().items():
        if key.endswith("num_batches_tracked"):
            given[key] = tensor
    return given


def build_extractor(cfg: EvaluationConfig, prepared: PreparedDataset, data_version: str) -> FeatureExtractor:
    """Inception-v3 when ``cfg.inception_weights`` is set, else the cached (or newly trained) domain CNN."""
    if cfg.inception_weights:
        return InceptionV3Extractor.from_file(cfg.inception_weights)
    return load_or_train_domain_extractor(prepared, data_version, cfg.cache_dir, cfg.extractor_epochs, cfg.seed)
