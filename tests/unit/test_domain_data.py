"""The unpaired and multi-domain layouts (CycleGAN folders, a folder per domain, an attribute table, combined
label sets), their prepared form, balanced domain batches, and the bad inputs each refuses in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data import load_prepared, prepare_dataset, read_source
from components.errors import DataError
from components.training.sampler import ShardSampler


def _save(path: Path, value: int, size: int = 8, colour: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if colour else (size, size)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def write_unpaired_folder(root: Path, with_test: bool = True) -> Path:
    for i in range(3):
        _save(root / "trainA" / f"a{i}.png", 10 + i)
        _save(root / "trainB" / f"b{i}.png", 200 + i, colour=True)
    if with_test:
        _save(root / "testA" / "ta.png", 20)
        _save(root / "testB" / "tb.png", 220, colour=True)
    return root


def write_attribute_folder(root: Path, rows=None) -> Path:
    rows = rows or [("x0.png", "1", "0"), ("x1.png", "0", "1"), ("x2.png", "1", "1"), ("x3.png", "0", "0")]
    for k, (name, *_rest) in enumerate(rows):
        _save(root / "images" / name, 40 * k)
    lines = ["file,smiling,glasses"] + [",".join(row) for row in rows]
    (root / "attributes.csv").write_text("\n".join(lines) + "\n")
    return root


def write_domain_folders(root: Path) -> Path:
    for d, name in enumerate(("happy", "sad", "angry")):
        for i in range(2):
            _save(root / name / f"{name}{i}.png", 60 * d + i)
    return root


def one_line_error(match: str, spec: str, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        read_source(spec, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_unpaired_folder_gives_two_domains_and_holds_out_test(tmp_path):
    raw = read_source(f"unpaired:folder:{write_unpaired_folder(tmp_path / 'u')}")
    assert raw.task == "unpaired" and raw.domain_names == ["A", "B"]
    assert raw.domains.tolist() == [0, 0, 0, 1, 1, 1, 0, 1] and raw.train_count == 6
    assert raw.images.shape == (8, 3, 8, 8)  # grey A images replicated to B's three channels
    assert raw.images[0, :, 0, 0].tolist() == [10, 10, 10] and raw.images[6, 0, 0, 0] == 20


def test_unpaired_without_test_folders_holds_out_a_tenth_of_each_domain(tmp_path):
    raw = read_source(f"unpaired:folder:{write_unpaired_folder(tmp_path / 'u', with_test=False)}")
    assert raw.train_count == 4 and raw.domains.tolist() == [0, 0, 1, 1, 0, 1]


def test_empty_domain_folder_is_named(tmp_path):
    root = write_unpaired_folder(tmp_path / "u")
    for f in (root / "trainB").iterdir():
        f.unlink()
    message = one_line_error("empty domain folder", f"unpaired:folder:{root}")
    assert "trainB" in message


def test_a_folder_per_domain(tmp_path):
    raw = read_source(f"domains:folder:{write_domain_folders(tmp_path / 'faces')}")
    assert raw.task == "multi_domain" and raw.domain_names == ["angry", "happy", "sad"]
    assert raw.train_count == 3 and raw.domains.tolist() == [0, 1, 2, 0, 1, 2]


def test_attribute_table_selects_columns_in_order(tmp_path):
    root = write_attribute_folder(tmp_path / "celeb")
    raw = read_source(f"attributes:folder:{root}", attributes=["glasses", "smiling"])
    assert raw.task == "multi_domain" and raw.attribute_names == ["glasses", "smiling"]
    assert raw.attributes.tolist() == [[0, 1], [1, 0], [1, 1], [0, 0]] and raw.train_count == 3


def test_unknown_attribute_column_is_named(tmp_path):
    root = write_attribute_folder(tmp_path / "celeb")
    message = one_line_error("unknown attribute column 'Blond_Hair'", f"attributes:folder:{root}",
                             attributes=["smiling", "Blond_Hair"])
    assert "smiling, glasses" in message


def test_attribute_value_other_than_0_or_1_is_named(tmp_path):
    root = write_attribute_folder(tmp_path / "celeb", rows=[("x0.png", "1", "0"), ("x1.png", "-1", "1")])
    message = one_line_error("line 3, attribute 'smiling': value '-1'; expected 0 or 1", f"attributes:folder:{root}")
    assert "attributes.csv" in message


def test_image_without_attribute_row_is_named(tmp_path):
    root = write_attribute_folder(tmp_path / "celeb")
    _save(root / "images" / "stray.png", 5)
    one_line_error("stray.png: no row in", f"attributes:folder:{root}")


def test_combined_datasets_carry_a_mask_per_label_set(tmp_path):
    celeb = write_attribute_folder(tmp_path / "celeb")
    faces = write_domain_folders(tmp_path / "faces")
    raw = read_source(f"combine:attributes:folder:{celeb} + domains:folder:{faces}")
    assert raw.label_sets == [2, 3] and raw.attribute_names == ["smiling", "glasses", "angry", "happy", "sad"]
    assert raw.train_count == 3 + 3 and len(raw.images) == 10
    # training rows of both datasets first: celeb's three, then the faces' three (one per domain)
    assert raw.attribute_mask[:3].tolist() == [[1, 1, 0, 0, 0]] * 3
    assert raw.attribute_mask[3:6].tolist() == [[0, 0, 1, 1, 1]] * 3
    assert raw.attributes[3:6, 2:].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert raw.attributes[3:6, :2].sum() == 0


def test_domain_data_prepared_round_trip(tmp_path):
    root = write_unpaired_folder(tmp_path / "u")
    manifest = prepare_dataset(f"unpaired:folder:{root}", tmp_path / "prepared")
    assert manifest["task"] == "unpaired" and "domains.npy" in manifest["files"]
    prepared = load_prepared(tmp_path / "prepared")
    assert prepared.domain_names == ["A", "B"] and prepared.domains.tolist() == [0, 0, 0, 1, 1, 1, 0, 1]
    celeb = write_attribute_folder(tmp_path / "celeb")
    faces = write_domain_folders(tmp_path / "faces")
    prepare_dataset(f"combine:attributes:folder:{celeb} + domains:folder:{faces}", tmp_path / "combined")
    combined = load_prepared(tmp_path / "combined")
    assert combined.task == "multi_domain" and combined.label_sets == [2, 3]
    assert combined.attributes.shape == combined.attribute_mask.shape == (10, 5)


def test_sampler_balances_domains_in_every_batch():
    images = np.zeros((30, 3, 4, 4), dtype=np.uint8)
    domains = np.array([0] * 20 + [1] * 6 + [2] * 4)
    sampler = ShardSampler(images, None, 0, 1, 7, seed=0, domains=domains)
    assert sampler.batch_size == 6  # a multiple of the 3 domains
    for _ in range(5):
        counts = np.bincount(sampler.next_batch().domains.numpy(), minlength=3)
        assert counts.tolist() == [2, 2, 2]
