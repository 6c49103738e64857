"""The prepared on-disk format: images.npy, labels.npy (when labeled) and manifest.json.

Translation data adds inputs.npy (paired: the A side of each image) or
label_maps.npy (segmentation: a class index per pixel); the manifest names the
task, the label-map classes, and how many leading rows train (the rest are
held out for evaluation).

Writing is deterministic (the same input gives byte-identical files, so DVC sees no
change) and atomic (a complete directory appears, or nothing changes).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from components.data.sources import RawImages, read_source
from components.errors import DataError

FORMAT = "ganzoo-prepared/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PreparedDataset:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray | None  # int64 (N,), or None when unlabeled
    manifest: dict
    inputs: np.ndarray | None = None  # uint8 (N, C_in, H, W): paired translation's A side
    label_maps: np.ndarray | None = None  # uint8 (N, H, W): segmentation classes per pixel
    domains: np.ndarray | None = None  # int64 (N,): unpaired / multi-domain
    attributes: np.ndarray | None = None  # uint8 (N, A) of 0/1
    attribute_mask: np.ndarray | None = None  # uint8 (N, A): which attributes each row's dataset defines

    @property
    def task(self) -> str:
        """``images``, ``paired`` or ``segmentation``."""
        return self.manifest.get("task", "images")

    @property
    def map_classes(self) -> list[str]:
        return list(self.manifest.get("map_classes", []))

    @property
    def domain_names(self) -> list[str]:
        return list(self.manifest.get("domain_names", []))

    @property
    def attribute_names(self) -> list[str]:
        return list(self.manifest.get("attribute_names", []))

    @property
    def label_sets(self) -> list[int]:
        return list(self.manifest.get("label_sets", []))

    @property
    def input_channels(self) -> int:
        return 0 if self.inputs is None else int(self.inputs.shape[1])

    @property
    def train_count(self) -> int:
        """Rows [0, train_count) train; the rest are held out (all rows train when the source sets no split)."""
        return int(self.manifest.get("train_count") or self.manifest["count"])

    def held_out_rows(self) -> np.ndarray:
        """Indices of the held-out rows: those after the training split, or every row when nothing is held out."""
        count = int(self.manifest["count"])
        return np.arange(self.train_count, count) if self.train_count < count else np.arange(count)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        height, width = self.images.shape[2:]
        if height != width:
            raise DataError(f"prepared images are {width}x{height}, not square; prepare again with image_size set")
        return int(height)

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    def data_hash(self) -> str:
        """A stable id of the content: sha256 over the manifest's file hashes."""
        return _data_hash(self.manifest["files"])


def _data_hash(files: dict[str, str]) -> str:
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def labelled_subset(labels: np.ndarray, per_class: int, seed: int, candidates: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices into ``labels`` of a stratified labelled subset: ``per_class`` rows of every class present
    among ``candidates`` (default: all rows), drawn with ``seed``.

    Each class draws from its own generator over its candidate rows in ascending order, so the choice depends
    only on which rows are candidates and on their labels. Hence, for sorted candidates ``s``,
    ``s[labelled_subset(labels[s], n, seed)]`` equals ``labelled_subset(labels, n, seed, s)``: training can
    choose among the evaluator's train rows of the whole dataset, and the evaluator, which holds exactly those
    rows in ascending order, picks the very same images from its split. Each class's draw is a prefix of one
    permutation, so a larger ``per_class`` keeps a smaller one's rows.
    """
    if per_class < 1 or seed < 0:
        raise DataError(f"labelled subset: per_class must be >= 1 and seed >= 0, got {per_class} and {seed}")
    labels = np.asarray(labels)
    rows = np.arange(len(labels)) if candidates is None else np.unique(candidates)
    chosen = []
    for label in np.unique(labels[rows]):
        class_rows = rows[labels[rows] == label]
        if len(class_rows) < per_class:
            raise DataError(f"labelled subset: class {int(label)} has {len(class_rows)} candidate rows; "
                            f"{per_class} per class were asked for")
        order = np.random.default_rng([seed, int(label)]).permutation(len(class_rows))
        chosen.append(class_rows[order[:per_class]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def prepare_dataset(
    spec: str, out_dir: str | Path, image_size: int | None = None, s3_endpoint_url: str | None = None,
    attributes: list[str] | None = None,
) -> dict:
    """Read ``spec`` and write it as a prepared dataset at ``out_dir``; returns the manifest."""
    raw = read_source(spec, image_size=image_size, s3_endpoint_url=s3_endpoint_url, attributes=attributes)
    return write_prepared(raw, out_dir)


def write_prepared(raw: RawImages, out_dir: str | Path) -> dict:
    """Write ``raw`` to ``out_dir`` atomically, replacing any previous version; returns the manifest."""
    _check_raw(raw)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a directory; expected a directory for the prepared dataset")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".tmp-"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes the directory private; the dataset is not
        manifest = _write_files(raw, tmp)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_raw(raw: RawImages) -> None:
    images, labels = raw.images, raw.labels
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise DataError(
            f"{raw.source}: images are {images.dtype} {images.shape}; expected non-empty uint8 N,C,H,W, C in {{1, 3}}"
        )
    if labels is not None and (
        labels.dtype.kind not in "iu"
        or labels.shape != (len(images),)
        or labels.min() < 0
        or labels.max() >= len(raw.class_names)
    ):
        raise DataError(f"{raw.source}: labels do not match the images and {len(raw.class_names)} class names")
    _check_translation(raw)


def _check_translation(raw: RawImages) -> None:
    n, _, h, w = raw.images.shape
    if raw.inputs is not None and (raw.inputs.dtype != np.uint8 or raw.inputs.ndim != 4 or len(raw.inputs) != n
                                   or raw.inputs.shape[1] not in (1, 3) or raw.inputs.shape[2:] != (h, w)):
        raise DataError(f"{raw.source}: inputs are {raw.inputs.dtype} {raw.inputs.shape}; expected uint8 "
                        f"{n},C,{h},{w} with C in {{1, 3}}, one per image")
    if raw.label_maps is not None:
        maps = raw.label_maps
        if maps.dtype != np.uint8 or maps.shape != (n, h, w):
            raise DataError(f"{raw.source}: label maps are {maps.dtype} {maps.shape}; expected uint8 {n},{h},{w}")
        if len(raw.map_classes) < 2 or int(maps.max()) >= len(raw.map_classes):
            raise DataError(f"{raw.source}: label maps hold class {int(maps.max())}; "
                            f"{len(raw.map_classes)} map classes are declared")
    if raw.domains is not None and (raw.domains.dtype.kind not in "iu" or raw.domains.shape != (n,) or
                                    raw.domains.min() < 0 or raw.domains.max() >= len(raw.domain_names)):
        raise DataError(f"{raw.source}: domains do not match the images and {len(raw.domain_names)} domain names")
    for name, array in (("attributes", raw.attributes), ("attribute mask", raw.attribute_mask)):
        if array is not None and (array.dtype != np.uint8 or array.shape != (n, len(raw.attribute_names))
                                  or array.max(initial=0) > 1):
            raise DataError(f"{raw.source}: {name} are {array.dtype} {array.shape}; expected 0/1 uint8 "
                            f"{n},{len(raw.attribute_names)}")
    if raw.label_sets and sum(raw.label_sets) != len(raw.attribute_names):
        raise DataError(f"{raw.source}: label sets {raw.label_sets} do not add up to {len(raw.attribute_names)} "
                        "attributes")
    if sum(x is not None for x in (raw.inputs, raw.label_maps, raw.domains if raw.attributes is None else raw.attributes)) > 1:
        raise DataError(f"{raw.source}: inputs, label maps and domains mixed; expected one translation task per dataset")
    if raw.train_count is not None and not 0 < raw.train_count <= n:
        raise DataError(f"{raw.source}: train_count {raw.train_count}; expected 1..{n}")


def _write_files(raw: RawImages, directory: Path) -> dict:
    arrays = {"images.npy": np.ascontiguousarray(raw.images)}
    if raw.labels is not None:
        arrays["labels.npy"] = np.ascontiguousarray(raw.labels, dtype=np.int64)
    if raw.inputs is not None:
        arrays["inputs.npy"] = np.ascontiguousarray(raw.inputs)
    if raw.label_maps is not None:
        arrays["label_maps.npy"] = np.ascontiguousarray(raw.label_maps)
    if raw.domains is not None:
        arrays["domains.npy"] = np.ascontiguousarray(raw.domains, dtype=np.int64)
    if raw.attributes is not None:
        arrays["attributes.npy"] = np.ascontiguousarray(raw.attributes)
    if raw.attribute_mask is not None:
        arrays["attribute_mask.npy"] = np.ascontiguousarray(raw.attribute_mask)
    for name, array in arrays.items():
        _write(directory / name, lambda f, a=array: np.save(f, a, allow_pickle=False))
    counts = np.bincount(raw.labels, minlength=len(raw.class_names)) if raw.labels is not None else []
    manifest = {
        "format": FORMAT,
        "source": raw.source,
        "shape": [int(d) for d in raw.images.shape],
        "classes": list(raw.class_names),
        "class_counts": {name: int(n) for name, n in zip(raw.class_names, counts)},
        "count": int(len(raw.images)),
        "files": {name: _sha256(directory / name) for name in arrays},
    }
    if raw.task != "images":
        manifest.update(task=raw.task, train_count=int(raw.train_count or len(raw.images)),
                        input_shape=[int(d) for d in raw.inputs.shape] if raw.inputs is not None else None,
                        map_classes=list(raw.map_classes), domain_names=list(raw.domain_names),
                        attribute_names=list(raw.attribute_names), label_sets=[int(k) for k in raw.label_sets])
    text = json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    _write(directory / MANIFEST, lambda f: f.write(text.encode("utf-8")))
    return manifest


def _write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write and fsync, so the files are on disk before the directory is renamed into place."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _swap_in(new: Path, out_dir: Path) -> None:
    """Rename ``new`` to ``out_dir``; an existing out_dir is moved aside first and deleted last."""
    if not out_dir.exists():
        os.rename(new, out_dir)
        return
    old = out_dir.parent / f".old-{out_dir.name}-{secrets.token_hex(4)}"
    os.rename(out_dir, old)
    try:
        os.rename(new, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_prepared(prepared_dir: str | Path, verify: bool = True) -> PreparedDataset:
    """Load a prepared dataset; with ``verify`` every file's sha256 is checked against the manifest."""
    prepared_dir = Path(prepared_dir)
    manifest = _read_manifest(prepared_dir / MANIFEST)
    files = manifest["files"]
    for name in files:
        path = prepared_dir / name
        if not path.is_file():
            raise DataError(f"{path}: missing; the manifest lists it (prepare the dataset again)")
        if verify and _sha256(path) != files[name]:
            raise DataError(f"{path}: sha256 does not match {MANIFEST}; the file changed since it was prepared")
    images = _load_array(prepared_dir / "images.npy", np.uint8, tuple(manifest["shape"]))
    labels = inputs = label_maps = None
    if "labels.npy" in files:
        labels = _load_array(prepared_dir / "labels.npy", np.int64, (manifest["count"],))
    if "inputs.npy" in files:
        inputs = _load_array(prepared_dir / "inputs.npy", np.uint8, tuple(manifest["input_shape"]))
    if "label_maps.npy" in files:
        n, _, h, w = manifest["shape"]
        label_maps = _load_array(prepared_dir / "label_maps.npy", np.uint8, (n, h, w))
    n = manifest["count"]
    domains = attributes = attribute_mask = None
    if "domains.npy" in files:
        domains = _load_array(prepared_dir / "domains.npy", np.int64, (n,))
    width = len(manifest.get("attribute_names", []))
    if "attributes.npy" in files:
        attributes = _load_array(prepared_dir / "attributes.npy", np.uint8, (n, width))
    if "attribute_mask.npy" in files:
        attribute_mask = _load_array(prepared_dir / "attribute_mask.npy", np.uint8, (n, width))
    return PreparedDataset(images, labels, manifest, inputs, label_maps, domains, attributes, attribute_mask)


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: missing; expected a prepared dataset directory (run prepare first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({type(exc).__name__}); expected a {FORMAT} manifest") from exc
    keys = ("shape", "classes", "count", "files")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or any(k not in manifest for k in keys):
        raise DataError(f"{path}: not a {FORMAT} manifest; expected keys format, {', '.join(keys)}")
    files = manifest["files"]
    if not isinstance(files, dict) or "images.npy" not in files or ("labels.npy" in files) != bool(manifest["classes"]):
        raise DataError(f"{path}: 'files' must list images.npy, and labels.npy exactly when there are classes")
    task = manifest.get("task", "images")
    needs = {"images": set(), "paired": {"inputs.npy"}, "segmentation": {"label_maps.npy"},
             "unpaired": {"domains.npy"}, "multi_domain": set()}.get(task)
    if needs is None or not needs <= files.keys() or (task == "paired" and "input_shape" not in manifest):
        raise DataError(f"{path}: task {task!r} with files {sorted(files)}; expected images (no extra files), "
                        "paired (inputs.npy, input_shape), segmentation (label_maps.npy), unpaired (domains.npy) "
                        "or multi_domain")
    return manifest


def _load_array(path: Path, dtype: type, shape: tuple) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot load ({type(exc).__name__}); expected a .npy array") from exc
    if array.dtype != dtype or array.shape != shape:
        raise DataError(f"{path}: {array.dtype} {array.shape}; the manifest expects {np.dtype(dtype)} {shape}")
    return array
