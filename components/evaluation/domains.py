"""Evaluation of unpaired and multi-domain families: did the image reach its target domain, and keep its content?

Held-out source images are translated to every other domain (or, for
attribute families, to the attributes of another held-out image). A
classifier of the real data's domains or attributes, trained on the training
rows and cached by data version like the feature extractor, scores
``translation_accuracy``: the fraction of outputs it assigns the target
domain (attribute families: all known attributes right; ``attribute_accuracy``
per attribute). Content: the evaluator's class of each output against its
source's label where the data has labels (``content_preservation``), and the
L1 of translating back (``cycle_l1``). FID per target domain compares outputs
for domain d with the real images of d; ``diversity`` is the mean feature
distance between two translations of the same input (0 for deterministic
families; the style codes of MUNIT and StarGAN v2 make it positive).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.nn import functional as F

from components.config import EvaluationConfig
from components.data.images import to_unit_range
from components.data.prepared import PreparedDataset
from components.errors import CheckpointError, ConfigError
from components.evaluation import metrics
from components.evaluation.extractors import DomainClassifier, FeatureExtractor, all_cores
from components.families import DomainCondition, Family

CLASSIFIER_EPOCHS = 3
_WEIGHTS, _META = "weights.safetensors", "meta.json"


def evaluate_domain_translation(family: Family, prepared: PreparedDataset, extractor: FeatureExtractor,
                                cfg: EvaluationConfig, data_version: str) -> tuple[np.ndarray, dict[str, float]]:
    """(outputs, task metrics) of ``family`` translating held-out rows (at most cfg.num_samples outputs)."""
    attributes = family.conditions_on_attributes
    if attributes and prepared.attributes is None or not attributes and prepared.domains is None:
        raise ConfigError(f"family {family.name} needs data with {'attributes' if attributes else 'domains'} to be "
                          f"evaluated; the prepared data is {prepared.task} ({prepared.manifest.get('source')})")
    batches = held_out_conditions(prepared, cfg.num_samples, attributes)
    conditions = [b.condition for b in batches]
    outputs = _translate(family, conditions, cfg.batch_size, cfg.seed)
    again = _translate(family, conditions, cfg.batch_size, cfg.seed + 1)
    back = _translate(family, [DomainCondition(torch.from_numpy(o), c.target, c.source, None, _source_mask(prepared, b))
                               for o, c, b in zip(_split(outputs, conditions), conditions, batches)],
                      cfg.batch_size, cfg.seed)
    sources = torch.cat([c.images for c in conditions]).numpy()
    targets = torch.cat([c.target for c in conditions]).numpy()
    classifier = load_or_train_domain_classifier(prepared, data_version, cfg.cache_dir, cfg.seed, attributes)
    scores = {"cycle_l1": metrics.mean_l1(back, sources)}
    scores.update(_accuracy(classifier, outputs, targets, attributes, cfg.batch_size,
                            _target_mask(prepared, batches) if attributes else None))
    features = extractor.extract(outputs, cfg.batch_size)[0]
    scores["diversity"] = metrics.mean_feature_distance(features, extractor.extract(again, cfg.batch_size)[0])
    labels = torch.cat([b.labels for b in batches]).numpy() if batches[0].labels is not None else None
    if labels is not None and extractor.predicts_data_classes:
        predicted = extractor.extract(outputs, cfg.batch_size)[1].argmax(axis=1)
        scores["content_preservation"] = float((predicted == labels).mean())
    if not attributes:
        scores.update(_fid_per_domain(prepared, extractor, cfg, features, targets))
    return outputs, scores


@dataclass(frozen=True)
class HeldOutTranslation:
    """A batch of held-out sources, where to translate them, and their rows and labels."""

    condition: DomainCondition
    rows: np.ndarray
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.condition)


def held_out_conditions(prepared: PreparedDataset, count: int, attributes: bool,
                        batch_size: int = 100) -> list[HeldOutTranslation]:
    """Batches of conditions over the held-out rows: each image to every other domain, or to the attributes of
    another held-out row; at most ``count`` in all, the sources spread evenly over the domains."""
    held = prepared.held_out_rows()
    if not attributes:
        domains = prepared.domains[held]
        per_domain = [held[domains == d] for d in range(len(prepared.domain_names))]
        order = np.stack([rows[:min(len(r) for r in per_domain)] for rows in per_domain], axis=1).ravel()
        offsets = range(1, len(prepared.domain_names))
    else:
        order, offsets = held, [1]
    sources = order[:max(1, count // len(offsets))]
    conditions = []
    for offset in offsets:
        for start in range(0, len(sources), batch_size):
            conditions.append(_condition(prepared, sources[start:start + batch_size], offset, attributes))
    return conditions


def _condition(prepared: PreparedDataset, rows: np.ndarray, offset: int, attributes: bool) -> HeldOutTranslation:
    images = torch.from_numpy(to_unit_range(prepared.images[rows]))
    mask = None
    if attributes:
        source = torch.from_numpy(prepared.attributes[rows]).float()
        partners = np.roll(rows, offset)
        target = torch.from_numpy(prepared.attributes[partners]).float()
        references = torch.from_numpy(to_unit_range(prepared.images[partners]))
        if prepared.attribute_mask is not None:
            mask = torch.from_numpy(prepared.attribute_mask[partners]).float()
    else:
        source = torch.from_numpy(prepared.domains[rows])
        target = (source + offset) % len(prepared.domain_names)
        references = torch.from_numpy(to_unit_range(prepared.images[_references(prepared, target.numpy())]))
    labels = None if prepared.labels is None else torch.from_numpy(prepared.labels[rows])
    return HeldOutTranslation(DomainCondition(images, source, target, references, mask), rows, labels)


def _references(prepared: PreparedDataset, targets: np.ndarray) -> np.ndarray:
    """For each target domain, held-out images of that domain, taken in turn."""
    held = prepared.held_out_rows()
    picks = np.empty(len(targets), dtype=np.int64)
    for d in np.unique(targets):
        pool = held[prepared.domains[held] == d]
        where = np.nonzero(targets == d)[0]
        picks[where] = pool[np.arange(len(where)) % len(pool)]
    return picks


def _target_mask(prepared: PreparedDataset, batches: list[HeldOutTranslation]) -> np.ndarray | None:
    """Which target attributes are defined: those of the partner row's dataset (all of them for one set)."""
    if prepared.attribute_mask is None:
        return None
    return np.concatenate([prepared.attribute_mask[np.roll(b.rows, 1)] for b in batches])


def _source_mask(prepared: PreparedDataset, batch: HeldOutTranslation) -> torch.Tensor | None:
    """The attributes the sources' own datasets define: the targets of translating back."""
    return None if prepared.attribute_mask is None else torch.from_numpy(prepared.attribute_mask[batch.rows]).float()


def _translate(family: Family, conditions: list[DomainCondition], batch_size: int, seed: int) -> np.ndarray:
    """Outputs of every condition; references are left out, so style-code families sample their styles."""
    family.nets.eval()
    parts = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for c in conditions:
            for start in range(0, len(c), batch_size):
                part = dataclasses.replace(c[start:start + batch_size], references=None).to(family.device)
                parts.append(family.generate(len(part), part).float().clamp(-1, 1).cpu())
    return torch.cat(parts).numpy()


def _split(outputs: np.ndarray, conditions: list[DomainCondition]) -> list[np.ndarray]:
    bounds = np.cumsum([len(c) for c in conditions])[:-1]
    return np.split(outputs, bounds)


def _accuracy(classifier: "DomainScorer", outputs: np.ndarray, targets: np.ndarray, attributes: bool,
              batch_size: int, mask: np.ndarray | None) -> dict[str, float]:
    predicted = classifier.predict(outputs, batch_size)
    if not attributes:
        return {"translation_accuracy": float((predicted == targets).mean())}
    known = np.ones_like(targets, dtype=bool) if mask is None else mask.astype(bool)
    right = (predicted == (targets > 0.5)) | ~known
    return {"translation_accuracy": float(right.all(axis=1).mean()),
            "attribute_accuracy": float(right[known].mean()) if known.any() else 0.0}


def _fid_per_domain(prepared: PreparedDataset, extractor: FeatureExtractor, cfg: EvaluationConfig,
                    features: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    scores = {}
    for d, name in enumerate(prepared.domain_names):
        mine = features[targets == d]
        rows = np.nonzero(prepared.domains == d)[0][:cfg.num_samples]
        if len(mine) < 2 or len(rows) < 2:
            continue
        real = extractor.extract(to_unit_range(prepared.images[rows]), cfg.batch_size)[0]
        scores[f"fid_domain_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"] = metrics.fid(real, mine)
    return scores


# The domain / attribute classifier


class DomainScorer:
    """A DomainClassifier over the data's domains (softmax) or attributes (one sigmoid each)."""

    def __init__(self, network: DomainClassifier, meta: dict):
        self.network = network.eval().requires_grad_(False)
        self.meta = meta
        self.attributes = bool(meta["attributes"])

    def predict(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Domain indices (N), or booleans N x A for attributes."""
        parts = []
        with torch.no_grad(), all_cores():
            for start in range(0, len(images), batch_size):
                logits = self.network(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size],
                                                                            dtype=np.float32)))[1]
                parts.append((logits > 0).numpy() if self.attributes else logits.argmax(dim=1).numpy())
        return np.concatenate(parts)


def train_domain_classifier(prepared: PreparedDataset, seed: int, attributes: bool,
                            epochs: int = CLASSIFIER_EPOCHS, batch_size: int = 64) -> DomainScorer:
    """Trained on the training rows' domains (cross-entropy) or attributes (masked binary cross-entropy)."""
    targets = prepared.attributes if attributes else prepared.domains
    outputs = targets.shape[1] if attributes else len(prepared.domain_names)
    mask = prepared.attribute_mask if attributes and prepared.attribute_mask is not None else None
    rows = np.arange(prepared.train_count)
    with torch.random.fork_rng(devices=[]), all_cores():
        torch.manual_seed(seed)
        network = DomainClassifier(prepared.channels, outputs)
        optimizer = torch.optim.Adam(network.parameters(), 1e-3)
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(rows)
            for start in range(0, len(order), batch_size):
                pick = np.sort(order[start:start + batch_size])
                logits = network(torch.from_numpy(to_unit_range(prepared.images[pick])))[1]
                if attributes:
                    weight = None if mask is None else torch.from_numpy(mask[pick]).float()
                    loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(targets[pick]).float(), weight)
                else:
                    loss = F.cross_entropy(logits, torch.from_numpy(targets[pick]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    scorer = DomainScorer(network, {"attributes": attributes, "outputs": outputs, "channels": prepared.channels,
                                    "epochs": epochs, "seed": seed})
    held = prepared.held_out_rows()
    predicted = scorer.predict(to_unit_range(prepared.images[held]))
    truth = targets[held] > 0 if attributes else targets[held]
    scorer.meta["held_out_accuracy"] = float((predicted == truth).mean())
    return scorer


def load_or_train_domain_classifier(prepared: PreparedDataset, data_version: str, cache_dir: str | Path,
                                    seed: int, attributes: bool) -> DomainScorer:
    """The classifier of ``data_version``: loaded from ``cache_dir``, or trained once and cached there."""
    kind = "attributes" if attributes else "domains"
    version = re.sub(r"[^A-Za-z0-9._-]", "_", data_version)
    directory = Path(cache_dir) / f"{kind}-classifier-{version}-seed{seed}"
    if not directory.exists():
        scorer = train_domain_classifier(prepared, seed, attributes)
        scorer.meta["data_version"] = data_version
        _write(scorer, directory)
    return _load(directory, data_version)


def _write(scorer: DomainScorer, directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".tmp-{directory.name}-"))
    try:
        os.chmod(tmp, 0o755)
        state = {k: v.detach().contiguous() for k, v in scorer.network.state_dict().items()}
        (tmp / _WEIGHTS).write_bytes(save_safetensors(state))
        (tmp / _META).write_text(json.dumps(scorer.meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.rename(tmp, directory)
    except OSError:
        if not directory.is_dir():  # anything but losing the race to another process that cached it first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(directory: Path, data_version: str) -> DomainScorer:
    try:
        meta = json.loads((directory / _META).read_text(encoding="utf-8"))
        network = DomainClassifier(int(meta["channels"]), int(meta["outputs"]))
        network.load_state_dict(load_safetensors((directory / _WEIGHTS).read_bytes()))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{directory}: cached domain classifier is unreadable ({type(exc).__name__}); "
                              "delete the directory to retrain it") from exc
    if meta.get("data_version") != data_version:
        raise CheckpointError(f"{directory / _META}: classifier of data version {meta.get('data_version')!r}, not "
                              f"{data_version!r}; delete the directory to retrain it")
    return DomainScorer(network, meta)
