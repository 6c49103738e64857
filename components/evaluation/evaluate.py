"""Score generated images against the prepared real data, and draw loss curves and sample grids.

A report carries its protocol (extractor identity, data version, sample counts,
seed and metric settings): two reports are comparable only when their
protocols match. Real-side features and the real-vs-real floor are cached in
this process, so scoring several checkpoints on the same data computes them once.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from components.config import EvaluationConfig
from components.data.images import save_image_grid, to_unit_range
from components.data.prepared import PreparedDataset
from components.errors import DataError, GanzooError
from components.evaluation import metrics
from components.evaluation.extractors import FeatureExtractor, build_extractor, real_split_rows
from components.families import Family, RealSplit, TaskKind, get_family
from components.training.allocator import keep_freed_memory
from components.training.checkpoint import load_family, read_checkpoint_meta, resolve_checkpoint_dir
from components.training.sampling import sample_from_family

_NOT_PLOTTED = {"step", "images_per_s", "elapsed_s"}  # progress, not losses
_EVALUATED = (TaskKind.UNCONDITIONAL, TaskKind.CLASS_CONDITIONAL, TaskKind.TEXT_CONDITIONAL,
              TaskKind.PAIRED_TRANSLATION, TaskKind.SEGMENTATION_TO_IMAGE, TaskKind.UNPAIRED_TRANSLATION,
              TaskKind.MULTI_DOMAIN_TRANSLATION)
_REAL_CACHE_SIZE = 4


@dataclass
class EvaluationReport:
    metrics: dict[str, float]
    extractor: str  # the extractor's identity, "kind:weights-hash"
    protocol: dict[str, Any]
    extractor_accuracy: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "EvaluationReport":
        data = json.loads(text)
        if not isinstance(data, dict) or not {"metrics", "extractor", "protocol"} <= data.keys():
            raise ValueError("not an evaluation report: expected keys metrics, extractor, protocol")
        return cls({k: float(v) for k, v in data["metrics"].items()}, str(data["extractor"]),
                   dict(data["protocol"]), data.get("extractor_accuracy"))

    @classmethod
    def read(cls, path: str | Path) -> "EvaluationReport":
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise GanzooError(f"{path}: not a readable evaluation report ({type(exc).__name__}: {exc})") from exc

    def write(self, path: str | Path) -> Path:
        """Write as JSON atomically (temporary file, then rename)."""
        return _atomic_write(Path(path), lambda tmp: tmp.write_text(self.to_json(), encoding="utf-8"), ".json")


def _atomic_write(path: Path, write: Callable[[Path], object], suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; reports and plots are not
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# The real side: features of the real evaluation set and the real-vs-real floor


@dataclass(frozen=True)
class _RealSide:
    features: np.ndarray
    floor: dict[str, float]
    count: int
    floor_count: int  # images in each of the two disjoint halves behind the floor


_real_cache: OrderedDict[tuple, _RealSide] = OrderedDict()


def clear_real_cache() -> None:
    """Forget cached real features and floors (they are recomputed on the next evaluation)."""
    _real_cache.clear()


def _real_side(prepared: PreparedDataset, extractor: FeatureExtractor, cfg: EvaluationConfig,
               data_version: str) -> _RealSide:
    key = (extractor.identity, data_version, cfg.num_samples, cfg.seed, cfg.kid_subsets, cfg.kid_subset_size)
    if key not in _real_cache:
        _real_cache[key] = _compute_real_side(prepared, extractor, cfg)
        while len(_real_cache) > _REAL_CACHE_SIZE:
            _real_cache.popitem(last=False)
    _real_cache.move_to_end(key)
    return _real_cache[key]


def _compute_real_side(prepared: PreparedDataset, extractor: FeatureExtractor, cfg: EvaluationConfig) -> _RealSide:
    total = len(prepared.images)
    count = min(cfg.num_samples, total)
    # The floor compares two disjoint real halves; they match the evaluation's size when the data
    # has room for two, else they are half the data each (a higher floor: FID's bias grows as 1/n).
    half = count if total >= 2 * count else total // 2
    if half < 2:
        raise DataError(f"the prepared dataset has {total} images; evaluation needs at least 4")
    order = np.random.default_rng(cfg.seed).permutation(total)[: max(count, 2 * half)]
    features = _features_of_uint8(extractor, prepared.images, order, cfg.batch_size)
    first, second = features[:half], features[half:2 * half]
    floor = {
        "fid_floor": metrics.fid(first, second),
        "kid_floor": metrics.kid(first, second, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)[0],
    }
    return _RealSide(features[:count], floor, count, half)


def _features_of_uint8(extractor: FeatureExtractor, images: np.ndarray, index: np.ndarray,
                       batch_size: int) -> np.ndarray:
    """Features of images[index], converting to float one batch at a time to bound memory."""
    parts = [extractor.extract(to_unit_range(images[index[start:start + batch_size]]), batch_size)[0]
             for start in range(0, len(index), batch_size)]
    return np.concatenate(parts)


# Scoring


def evaluate_images(fake_images: np.ndarray, fake_labels: np.ndarray | None, prepared: PreparedDataset,
                    extractor: FeatureExtractor, cfg: EvaluationConfig, data_version: str) -> EvaluationReport:
    """Score generated images (float N x C x H x W in [-1, 1]; labels when class-conditional) against real data."""
    _check_fakes(fake_images, fake_labels, prepared, cfg.nearest_k)
    real = _real_side(prepared, extractor, cfg, data_version)
    fake_features, fake_probs = extractor.extract(fake_images, cfg.batch_size)
    scores = _feature_metrics(real.features, fake_features, cfg)
    scores.update(_class_metrics(fake_probs, fake_labels, extractor))
    scores.update(real.floor)
    protocol = {
        "extractor": extractor.identity, "data_version": data_version, "num_samples": int(len(fake_images)),
        "real_samples": real.count, "floor_samples": real.floor_count, "seed": cfg.seed,
        "kid_subsets": cfg.kid_subsets, "kid_subset_size": cfg.kid_subset_size, "nearest_k": cfg.nearest_k,
        "fid_bootstrap": cfg.fid_bootstrap,
    }
    return EvaluationReport(scores, extractor.identity, protocol, extractor.accuracy)


def _check_fakes(images: np.ndarray, labels: np.ndarray | None, prepared: PreparedDataset, k: int) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype.kind != "f":
        raise DataError(f"generated images: expected a float N x C x H x W array, got "
                        f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}")
    if not np.isfinite(images).all():
        raise DataError("generated images contain NaN or infinity; the generator has diverged")
    if images.shape[1] != prepared.channels:
        raise DataError(f"generated images have {images.shape[1]} channels; the real data has {prepared.channels}")
    if len(images) <= k:
        raise DataError(f"{len(images)} generated images; evaluation needs more than nearest_k={k}")
    if labels is not None and np.shape(labels) != (len(images),):
        raise DataError(f"generated labels have shape {np.shape(labels)}; expected ({len(images)},)")


def _feature_metrics(real: np.ndarray, fake: np.ndarray, cfg: EvaluationConfig) -> dict[str, float]:
    fid_value, fid_std = metrics.fid_with_std(real, fake, cfg.fid_bootstrap, cfg.seed)
    kid_value, kid_std = metrics.kid(real, fake, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)
    return {"fid": fid_value, "fid_std": fid_std, "kid": kid_value, "kid_std": kid_std,
            **metrics.precision_recall_density_coverage(real, fake, cfg.nearest_k)}


def _class_metrics(probs: np.ndarray, requested: np.ndarray | None, extractor: FeatureExtractor) -> dict[str, float]:
    score, score_std = metrics.inception_score(probs)
    predicted = probs.argmax(axis=1)
    covered, entropy = metrics.class_coverage(predicted, extractor.num_classes)
    scores = {"inception_score": score, "inception_score_std": score_std, "classes_covered": float(covered),
              "class_entropy": entropy, "class_entropy_max": math.log(extractor.num_classes)}
    # Only a classifier of the dataset's own classes can say whether a sample shows the class it was asked for
    if requested is not None and extractor.predicts_data_classes:
        scores["conditional_accuracy"] = metrics.conditional_accuracy(predicted, np.asarray(requested))
    return scores


def evaluate_checkpoint(checkpoint_dir: str | Path, prepared: PreparedDataset, data_version: str,
                        cfg: EvaluationConfig) -> EvaluationReport:
    """Generate cfg.num_samples images from a checkpoint (a run directory means its newest) and score them."""
    directory = resolve_checkpoint_dir(checkpoint_dir)
    task = get_family(read_checkpoint_meta(directory)["family"]).task
    # a text-conditional family's conditions are class labels its captions name (gan_t2i.sample_conditions)
    if task not in _EVALUATED:
        raise GanzooError(f"{directory}: evaluation of {task.value} families is not implemented; expected one of "
                          f"{', '.join(t.value for t in _EVALUATED)}")
    keep_freed_memory()  # the flow runs this in a Prefect worker thread, whose malloc arena would refault each
    # batch's memory: 5,000 vs 5,000 took 5.1 s in a thread with glibc's defaults and 4.3 s after this call
    family, _ = load_family(directory)
    extractor = build_extractor(cfg, prepared, data_version)
    if family.task in (TaskKind.UNPAIRED_TRANSLATION, TaskKind.MULTI_DOMAIN_TRANSLATION):
        from components.evaluation.domains import evaluate_domain_translation

        images, task_scores = evaluate_domain_translation(family, prepared, extractor, cfg, data_version)
    elif family.translates:
        from components.evaluation.translation import evaluate_translation

        images, task_scores = evaluate_translation(family, prepared, extractor, cfg, data_version)
    if family.translates:
        report = evaluate_images(images, None, prepared, extractor, cfg, data_version)
        report.metrics.update(task_scores)
        return report
    images, labels = sample_from_family(family, cfg.num_samples, cfg.seed, cfg.batch_size)
    report = evaluate_images(images, labels, prepared, extractor, cfg, data_version)
    report.metrics.update(_variant_metrics(family, prepared, extractor, cfg, data_version))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        report.metrics.update(family.task_metrics(real_split(prepared, extractor, cfg)))
    return report


def _variant_metrics(family: Family, prepared: PreparedDataset, extractor: FeatureExtractor,
                     cfg: EvaluationConfig, data_version: str) -> dict[str, float]:
    """The family's ``sample_variants`` scored with the ordinary samples' feature and class metrics, keyed
    ``<variant>/<metric>``; drawn in batches under cfg.seed, so a report is reproducible."""
    family.nets.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(cfg.seed)
        for start in range(0, cfg.num_samples, cfg.batch_size):
            for name, images in family.sample_variants(min(cfg.batch_size, cfg.num_samples - start)).items():
                parts.setdefault(name, []).append(images.float().clamp(-1, 1).cpu())
            if not parts:  # a family without variants: nothing to draw in the later batches either
                return {}
    real = _real_side(prepared, extractor, cfg, data_version)
    scores: dict[str, float] = {}
    for name, chunks in parts.items():
        images = torch.cat(chunks).numpy()
        _check_fakes(images, None, prepared, cfg.nearest_k)
        features, probs = extractor.extract(images, cfg.batch_size)
        variant = {**_feature_metrics(real.features, features, cfg), **_class_metrics(probs, None, extractor)}
        scores.update({f"{name}/{metric}": value for metric, value in variant.items()})
    return scores


def real_split(prepared: PreparedDataset, extractor: FeatureExtractor, cfg: EvaluationConfig,
               max_train: int = 10_000, max_test: int = 2_000) -> RealSplit:
    """The extractor's own 90/10 split (its held-out images are unseen by it too), capped for large datasets."""
    train, test = real_split_rows(len(prepared.images), cfg.seed, max_train, max_test)

    def images(index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(to_unit_range(prepared.images[np.sort(index)]))

    def labels(index: np.ndarray) -> torch.Tensor | None:
        return None if prepared.labels is None else torch.from_numpy(prepared.labels[np.sort(index)].astype(np.int64))

    def classify(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(extractor.extract(batch.numpy(), cfg.batch_size)[1])

    return RealSplit(images(train), labels(train), images(test), labels(test),
                     classify if extractor.predicts_data_classes else None)


# Pictures


def write_loss_curves(history: list[dict], path: str | Path) -> Path:
    """A PNG with one panel per numeric key of ``history`` (except step and images_per_s) against step."""
    series = _loss_series(history)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, without pyplot's global state
    from matplotlib.figure import Figure

    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    figure = Figure(figsize=(4 * columns, 2.8 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (name, (steps, values)) in enumerate(sorted(series.items())):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.plot(steps, values, linewidth=1)
        axes.set_title(name)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    return _atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=100), ".png")


def _loss_series(history: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{key: (steps, values)} of the finite numbers in history; every row needs a step."""
    if not history:
        raise GanzooError("loss history is empty: no losses were reported, so there is nothing to plot")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in history:
        if not isinstance(row, dict) or not _is_number(row.get("step")):
            raise GanzooError(f"loss history row {row!r}: expected a mapping with a numeric 'step'")
        for key, value in row.items():
            if key not in _NOT_PLOTTED and _is_number(value) and math.isfinite(value):
                steps, values = series.setdefault(key, ([], []))
                steps.append(float(row["step"]))
                values.append(float(value))
    if not series:
        raise GanzooError("loss history has no numeric values besides step and images_per_s; nothing to plot")
    return series


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_sample_grid(images: Any, path: str | Path, nrow: int | None = None) -> Path:
    """A PNG grid of images (float in [-1, 1] or uint8, N x C x H x W), written atomically."""
    return save_image_grid(images, path, nrow)
