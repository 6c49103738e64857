"""Sources, the prepared format and every bad-input error, on tiny images made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data import load_prepared, prepare_dataset, read_source
from components.data import prepared as prepared_module
from components.errors import DataError


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def _grey(value: int, h: int = 5, w: int = 6) -> np.ndarray:
    return np.full((h, w), value, dtype=np.uint8)


def _two_class_folder(root: Path) -> Path:
    _save(root / "cat" / "b.png", _grey(20))
    _save(root / "cat" / "a.png", _grey(10))
    _save(root / "dog" / "c.png", _grey(30))
    return root


def _raises_one_line(match: str, spec: str, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        read_source(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# Built-in sources


def test_mnist5k_shape_labels_and_classes():
    raw = read_source("mnist5k")
    assert raw.images.shape == (5000, 1, 28, 28) and raw.images.dtype == np.uint8
    assert raw.labels.dtype == np.int64 and np.bincount(raw.labels).tolist() == [500] * 10
    assert raw.class_names == [str(d) for d in range(10)] and raw.source == "mnist5k"
    assert raw.images.max() == 255
    assert read_source("mnist5k", image_size=32).images.shape == (5000, 1, 32, 32)


def test_digits_scaled_and_resized():
    raw = read_source("digits")
    assert raw.images.shape == (1797, 1, 32, 32) and raw.images.max() == 255
    assert read_source("digits", image_size=16).images.shape == (1797, 1, 16, 16)
    assert raw.labels.dtype == np.int64 and sorted(set(raw.labels.tolist())) == list(range(10))


# Folders


def test_folder_greyscale_classes_sorted(tmp_path):
    raw = read_source(f"folder:{_two_class_folder(tmp_path / 'data')}")
    assert raw.images.shape == (3, 1, 5, 6)
    assert raw.images[:, 0, 0, 0].tolist() == [10, 20, 30]  # classes sorted, then files by name
    assert raw.labels.tolist() == [0, 0, 1] and raw.class_names == ["cat", "dog"]


def test_folder_colour_wins_and_grey_is_replicated(tmp_path):
    _save(tmp_path / "a" / "grey.png", _grey(50))
    _save(tmp_path / "a" / "rgba.png", np.full((5, 6, 4), [1, 2, 3, 255], dtype=np.uint8))
    _save(tmp_path / "b" / "pal.png", np.full((5, 6, 3), [0, 51, 102], dtype=np.uint8), mode="P")  # web-palette colour
    _save(tmp_path / "b" / "photo.JPG", np.full((5, 6, 3), 200, dtype=np.uint8))
    raw = read_source(f"folder:{tmp_path}")
    assert raw.images.shape == (4, 3, 5, 6)
    assert raw.images[:, :, 0, 0].tolist()[:3] == [[50, 50, 50], [1, 2, 3], [0, 51, 102]]


def test_folder_sixteen_bit_grey_is_scaled(tmp_path):
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "x.png")
    raw = read_source(f"folder:{tmp_path}")
    assert raw.images.shape == (1, 1, 4, 4) and (raw.images == 255).all()


def test_folder_without_subfolders_is_unlabeled_and_hidden_files_ignored(tmp_path):
    _save(tmp_path / "one.png", _grey(1))
    _save(tmp_path / "two.png", _grey(2))
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    _save(tmp_path / ".cache" / "three.png", _grey(3))
    raw = read_source(f"folder:{tmp_path}")
    assert raw.labels is None and raw.class_names == []
    assert raw.images[:, 0, 0, 0].tolist() == [1, 2]


def test_folder_image_size_resizes_mixed_sizes(tmp_path):
    _save(tmp_path / "a" / "small.png", _grey(9, 4, 4))
    _save(tmp_path / "a" / "large.png", _grey(9, 10, 7))
    raw = read_source(f"folder:{tmp_path}", image_size=8)
    assert raw.images.shape == (2, 1, 8, 8) and (raw.images == 9).all()


def test_missing_folder(tmp_path):
    _raises_one_line(f"{tmp_path / 'nope'}.*not found", f"folder:{tmp_path / 'nope'}")


def test_empty_folder(tmp_path):
    _raises_one_line(f"{tmp_path}: no images", f"folder:{tmp_path}")


def test_empty_class_folder(tmp_path):
    _save(tmp_path / "a" / "x.png", _grey(1))
    (tmp_path / "b").mkdir()
    _raises_one_line(f"{tmp_path / 'b'}: class folder holds no images", f"folder:{tmp_path}")


def test_truncated_png_names_the_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    path = _save(tmp_path / "a" / "cut.png", noise)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _raises_one_line(f"{path}: cannot decode image", f"folder:{tmp_path}")


def test_garbage_with_image_suffix_names_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "fake.jpg").write_bytes(b"not a jpeg at all")
    _raises_one_line(f"{tmp_path / 'a' / 'fake.jpg'}: cannot decode image", f"folder:{tmp_path}")


def test_mixed_sizes_name_the_file_and_both_sizes(tmp_path):
    _save(tmp_path / "a" / "1.png", _grey(1, 5, 6))
    _save(tmp_path / "a" / "2.png", _grey(1, 5, 6))
    _save(tmp_path / "b" / "3.png", _grey(1, 8, 7))
    message = _raises_one_line("image is 7x8 but", f"folder:{tmp_path}")
    assert str(tmp_path / "b" / "3.png") in message and str(tmp_path / "a" / "1.png") in message
    assert "6x5" in message and "image_size" in message


def test_non_image_file_in_class_folder(tmp_path):
    _two_class_folder(tmp_path)
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    _raises_one_line(f"{tmp_path / 'dog' / 'notes.txt'}: not an image file", f"folder:{tmp_path}")


def test_file_beside_class_folders(tmp_path):
    _two_class_folder(tmp_path)
    _save(tmp_path / "stray.png", _grey(1))
    _raises_one_line(f"{tmp_path / 'stray.png'}: file beside class folders", f"folder:{tmp_path}")


def test_nested_folder_in_class_folder(tmp_path):
    _two_class_folder(tmp_path)
    _save(tmp_path / "dog" / "deeper" / "x.png", _grey(1))
    _raises_one_line(f"{tmp_path / 'dog' / 'deeper'}: nested folder", f"folder:{tmp_path}")


def test_folder_that_is_a_file(tmp_path):
    path = _save(tmp_path / "x.png", _grey(1))
    _raises_one_line(f"{path}: is a file", f"folder:{path}")


# npz


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((4, 6, 5), dtype=np.uint8),
        np.zeros((4, 6, 5, 1), dtype=np.uint8),
        np.zeros((4, 1, 6, 5), dtype=np.uint8),
    ],
    ids=["NHW", "NHWC", "NCHW"],
)
def test_npz_greyscale_layouts(tmp_path, images):
    np.savez(tmp_path / "d.npz", images=images)
    raw = read_source(f"npz:{tmp_path / 'd.npz'}")
    assert raw.images.shape == (4, 1, 6, 5) and raw.labels is None and raw.class_names == []


def test_npz_channels_last_colour_with_labels(tmp_path):
    images = np.zeros((3, 6, 5, 3), dtype=np.uint8)
    images[:, :, :, 2] = 77
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 2, 2], dtype=np.int32))
    raw = read_source(f"npz:{tmp_path / 'd.npz'}", image_size=4)
    assert raw.images.shape == (3, 3, 4, 4) and (raw.images[:, 2] == 77).all() and (raw.images[:, 0] == 0).all()
    assert raw.labels.dtype == np.int64 and raw.labels.tolist() == [0, 2, 2]
    assert raw.class_names == ["0", "1", "2"]


def test_npz_float_unit_range_is_scaled(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32))
    assert read_source(f"npz:{tmp_path / 'd.npz'}").images.ravel().tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"pictures": np.zeros((2, 4, 4), np.uint8)}, r"no 'images' array \(found \['pictures'\]\)"),
        ({"images": np.full((2, 4, 4), 1.5)}, r"outside \[0, 1\]"),
        ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.zeros(3, np.int64)}, "3 labels for 2 images"),
        ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.zeros(2)}, "expected a 1-D integer array"),
        ({"images": np.zeros((2, 4, 4), np.int32)}, "dtype is int32"),
        ({"images": np.zeros((2, 4, 4, 4, 4), np.uint8)}, "has shape"),
    ],
    ids=["no-images", "float-range", "label-count", "label-dtype", "image-dtype", "image-shape"],
)
def test_npz_bad_contents(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    message = _raises_one_line(match, f"npz:{tmp_path / 'd.npz'}")
    assert str(tmp_path / "d.npz") in message


def test_npz_missing_or_not_npz(tmp_path):
    _raises_one_line(f"{tmp_path / 'none.npz'}: no such file", f"npz:{tmp_path / 'none.npz'}")
    (tmp_path / "bad.npz").write_text("hello")
    _raises_one_line(f"{tmp_path / 'bad.npz'}: cannot read as .npz", f"npz:{tmp_path / 'bad.npz'}")


# Specs


@pytest.mark.parametrize("spec", ["mnist", "folder:", "s3://", "http://x/y", ""])
def test_unknown_spec_lists_accepted_forms(spec):
    message = _raises_one_line("expected one of: mnist5k, digits, ", spec)
    for form in ("folder:PATH", "npz:PATH", "s3://BUCKET/PREFIX", "edges2digits", "shapes", "paired:folder:PATH",
                 "segmentation:folder:PATH"):
        assert form in message


@pytest.mark.parametrize("size", [0, -3, "32", True])
def test_bad_image_size(size):
    _raises_one_line("expected a positive integer", "digits", image_size=size)


# Prepared format


def test_prepare_twice_is_byte_identical(tmp_path):
    spec = f"folder:{_two_class_folder(tmp_path / 'data')}"
    first = prepare_dataset(spec, tmp_path / "one")
    second = prepare_dataset(spec, tmp_path / "two")
    assert first == second
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert sorted(_files(tmp_path / "one")) == ["images.npy", "labels.npy", "manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "one", "two"]


def test_manifest_contents_and_load_round_trip(tmp_path):
    spec = f"folder:{_two_class_folder(tmp_path / 'data')}"
    manifest = prepare_dataset(spec, tmp_path / "prep", image_size=4)
    text = (tmp_path / "prep" / "manifest.json").read_text()
    assert text == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    assert manifest["format"] == "ganzoo-prepared/1" and manifest["source"] == spec
    assert manifest["shape"] == [3, 1, 4, 4] and manifest["count"] == 3
    assert manifest["classes"] == ["cat", "dog"] and manifest["class_counts"] == {"cat": 2, "dog": 1}
    assert sorted(manifest["files"]) == ["images.npy", "labels.npy"] and ".tmp-" not in text
    data = load_prepared(tmp_path / "prep")
    np.testing.assert_array_equal(data.images, read_source(spec, image_size=4).images)
    assert data.labels.tolist() == [0, 0, 1] and data.labels.dtype == np.int64
    assert (data.channels, data.image_size, data.num_classes) == (1, 4, 2)
    assert len(data.data_hash()) == 64 and data.data_hash() == load_prepared(tmp_path / "prep").data_hash()


def test_unlabeled_prepare_has_no_labels(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3, 3), np.uint8))
    manifest = prepare_dataset(f"npz:{tmp_path / 'd.npz'}", tmp_path / "prep")
    assert manifest["classes"] == [] and manifest["class_counts"] == {} and list(manifest["files"]) == ["images.npy"]
    data = load_prepared(tmp_path / "prep")
    assert data.labels is None and data.num_classes == 0


def test_data_hash_follows_content(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 3, 3), np.uint8))
    np.savez(tmp_path / "b.npz", images=np.ones((2, 3, 3), np.uint8))
    prepare_dataset(f"npz:{tmp_path / 'a.npz'}", tmp_path / "a")
    prepare_dataset(f"npz:{tmp_path / 'b.npz'}", tmp_path / "b")
    assert load_prepared(tmp_path / "a").data_hash() != load_prepared(tmp_path / "b").data_hash()


def test_load_detects_a_changed_file(tmp_path):
    prepare_dataset(f"folder:{_two_class_folder(tmp_path / 'data')}", tmp_path / "prep")
    images = tmp_path / "prep" / "images.npy"
    blob = bytearray(images.read_bytes())
    blob[-1] ^= 0xFF
    images.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=f"{images}: sha256 does not match"):
        load_prepared(tmp_path / "prep")
    assert load_prepared(tmp_path / "prep", verify=False).images.shape == (3, 1, 5, 6)


def test_load_without_manifest(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'manifest.json'}: missing"):
        load_prepared(tmp_path)


def test_failed_read_leaves_nothing(tmp_path):
    with pytest.raises(DataError):
        prepare_dataset(f"folder:{tmp_path / 'missing'}", tmp_path / "out" / "prep")
    assert list(tmp_path.iterdir()) == []


def _broken_save(file, array, **kwargs):
    file.write(b"partial")
    raise OSError("disk full")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    spec = f"folder:{_two_class_folder(tmp_path / 'data')}"
    monkeypatch.setattr(prepared_module.np, "save", _broken_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(spec, tmp_path / "prep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_failed_write_keeps_the_previous_version(tmp_path, monkeypatch):
    spec = f"folder:{_two_class_folder(tmp_path / 'data')}"
    prepare_dataset(spec, tmp_path / "prep")
    before = _files(tmp_path / "prep")
    _save(tmp_path / "data" / "dog" / "d.png", _grey(40))
    monkeypatch.setattr(prepared_module.np, "save", _broken_save)
    with pytest.raises(OSError):
        prepare_dataset(spec, tmp_path / "prep")
    assert _files(tmp_path / "prep") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "prep"]


def test_failed_rename_restores_the_previous_version(tmp_path, monkeypatch):
    spec = f"folder:{_two_class_folder(tmp_path / 'data')}"
    prepare_dataset(spec, tmp_path / "prep")
    before = _files(tmp_path / "prep")
    real_rename = prepared_module.os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".tmp-"):
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(prepared_module.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        prepare_dataset(spec, tmp_path / "prep", image_size=4)
    assert _files(tmp_path / "prep") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "prep"]


def test_prepare_replaces_the_previous_version(tmp_path):
    spec = f"folder:{_two_class_folder(tmp_path / 'data')}"
    prepare_dataset(spec, tmp_path / "prep")
    prepare_dataset(spec, tmp_path / "prep", image_size=4)
    assert load_prepared(tmp_path / "prep").images.shape == (3, 1, 4, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "prep"]


def test_prepare_onto_a_file(tmp_path):
    (tmp_path / "prep").write_text("x")
    with pytest.raises(DataError, match="exists and is not a directory"):
        prepare_dataset(f"folder:{_two_class_folder(tmp_path / 'data')}", tmp_path / "prep")
