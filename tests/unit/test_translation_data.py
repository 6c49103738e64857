"""The translation layouts a user brings (pix2pix AB folders; images + label maps), the prepared format's
translation fields, and the bad inputs each refuses with one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data import load_prepared, prepare_dataset, read_source
from components.errors import DataError
from components.training.launcher import training_arrays


def write_ab_folder(root: Path, counts=(("train", 3), ("val", 1), ("test", 1)), size=8) -> Path:
    """Side-by-side pairs: A is a grey ramp of the index, B its colour version."""
    rng = np.random.default_rng(0)
    for split, count in counts:
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            b = 255 - a
            Image.fromarray(np.concatenate([a, b], axis=1)).save(root / split / f"{i:03d}.png")
    return root


def write_segmentation_folder(root: Path, count=4, size=8, classes=("sky", "tree", "road"),
                              write_names=True) -> Path:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(count):
        label_map = rng.integers(0, len(classes), (size, size), dtype=np.uint8)
        colours = np.array([[0, 0, 255], [0, 255, 0], [128, 128, 128]], dtype=np.uint8)
        Image.fromarray(colours[label_map]).save(root / "images" / f"s{i}.png")
        Image.fromarray(label_map, mode="L").save(root / "labels" / f"s{i}.png")
    if write_names:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def one_line_error(match: str, spec: str, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        read_source(spec, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_paired_folder_splits_a_and_b_and_holds_out_val_and_test(tmp_path):
    root = write_ab_folder(tmp_path / "facades")
    raw = read_source(f"paired:folder:{root}")
    assert raw.task == "paired" and raw.images.shape == (5, 3, 8, 8) and raw.inputs.shape == (5, 3, 8, 8)
    np.testing.assert_array_equal(raw.images, 255 - raw.inputs)
    assert raw.train_count == 3  # train/ trains; val/ and test/ are held out
    first = np.asarray(Image.open(root / "train" / "000.png"))
    np.testing.assert_array_equal(raw.inputs[0].transpose(1, 2, 0), first[:, :8])


def test_paired_prepared_round_trip_keeps_inputs_and_split(tmp_path):
    root = write_ab_folder(tmp_path / "pairs")
    manifest = prepare_dataset(f"paired:folder:{root}", tmp_path / "prepared", image_size=4)
    assert manifest["task"] == "paired" and manifest["train_count"] == 3 and "inputs.npy" in manifest["files"]
    prepared = load_prepared(tmp_path / "prepared")
    assert prepared.task == "paired" and prepared.inputs.shape == (5, 3, 4, 4) and prepared.input_channels == 3
    np.testing.assert_array_equal(prepared.held_out_rows(), [3, 4])
    arrays = training_arrays(prepared)
    assert len(arrays["images"]) == len(arrays["inputs"]) == 3 and arrays["label_maps"] is None


def test_paired_size_mismatch_names_the_file(tmp_path):
    root = write_ab_folder(tmp_path / "pairs")
    Image.fromarray(np.zeros((8, 12, 3), dtype=np.uint8)).save(root / "val" / "odd.png")
    message = one_line_error("A/B size mismatch", f"paired:folder:{root}")
    assert "odd.png" in message and "12x8" in message


def test_paired_layout_needs_train(tmp_path):
    write_ab_folder(tmp_path / "pairs", counts=(("val", 1),))
    one_line_error("expected the pix2pix layout", f"paired:folder:{tmp_path / 'pairs'}")


def test_segmentation_folder_reads_maps_and_class_names(tmp_path):
    root = write_segmentation_folder(tmp_path / "scenes")
    raw = read_source(f"segmentation:folder:{root}")
    assert raw.task == "segmentation" and raw.map_classes == ["sky", "tree", "road"]
    assert raw.label_maps.shape == (4, 8, 8) and raw.label_maps.dtype == np.uint8
    colours = np.array([[0, 0, 255], [0, 255, 0], [128, 128, 128]])
    np.testing.assert_array_equal(raw.images.transpose(0, 2, 3, 1), colours[raw.label_maps])
    assert raw.train_count == 3  # a tenth held out, at least one row


def test_segmentation_resize_is_nearest_so_classes_stay_indices(tmp_path):
    root = write_segmentation_folder(tmp_path / "scenes", write_names=False)
    raw = read_source(f"segmentation:folder:{root}", image_size=5)
    assert raw.label_maps.shape == (4, 5, 5) and set(np.unique(raw.label_maps)) <= {0, 1, 2}
    assert raw.map_classes == ["0", "1", "2"]  # no classes.txt: 0..the highest index


def test_segmentation_prepared_round_trip(tmp_path):
    root = write_segmentation_folder(tmp_path / "scenes")
    prepare_dataset(f"segmentation:folder:{root}", tmp_path / "prepared")
    prepared = load_prepared(tmp_path / "prepared")
    assert prepared.task == "segmentation" and prepared.map_classes == ["sky", "tree", "road"]
    assert prepared.label_maps.shape == (4, 8, 8) and prepared.held_out_rows().tolist() == [3]


def test_label_map_index_outside_declared_classes_names_the_file(tmp_path):
    root = write_segmentation_folder(tmp_path / "scenes")
    Image.fromarray(np.full((8, 8), 3, dtype=np.uint8), mode="L").save(root / "labels" / "s2.png")
    message = one_line_error("class index 3 is outside the 3 classes", f"segmentation:folder:{root}")
    assert "s2.png" in message


def test_image_without_label_map_names_the_image(tmp_path):
    root = write_segmentation_folder(tmp_path / "scenes")
    (root / "labels" / "s1.png").unlink()
    message = one_line_error("no label map", f"segmentation:folder:{root}")
    assert "s1.png" in message


def test_colour_label_map_is_refused(tmp_path):
    root = write_segmentation_folder(tmp_path / "scenes")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "labels" / "s0.png")
    one_line_error("label map has mode RGB", f"segmentation:folder:{root}")


def test_image_and_label_map_size_mismatch(tmp_path):
    root = write_segmentation_folder(tmp_path / "scenes")
    Image.fromarray(np.zeros((6, 6), dtype=np.uint8), mode="L").save(root / "labels" / "s3.png")
    message = one_line_error("its label map is 6x6", f"segmentation:folder:{root}")
    assert "s3.png" in message


def test_a_failed_prepare_leaves_the_previous_version(tmp_path):
    root = write_segmentation_folder(tmp_path / "scenes")
    prepare_dataset(f"segmentation:folder:{root}", tmp_path / "prepared")
    before = (tmp_path / "prepared" / "manifest.json").read_bytes()
    (root / "labels" / "s1.png").unlink()
    with pytest.raises(DataError):
        prepare_dataset(f"segmentation:folder:{root}", tmp_path / "prepared")
    assert (tmp_path / "prepared" / "manifest.json").read_bytes() == before
