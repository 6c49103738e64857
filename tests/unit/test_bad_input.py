"""Bad input is refused with one line that names the file, key or value, and changes nothing on disk.

Covers the four doors input comes through:
  * params.yaml and --set overrides, fuzzed with hypothesis from the shipped file's own structure (random
    values, keys, nesting, huge numbers, NaN/inf, unknown families) plus the YAML that used to crash the loader;
  * data sources: truncated, empty and decompression-bomb images, symbolic links and '..' names leaving the
    dataset folder, pickled .npz arrays, labels out of range; a refused source leaves the prepared dir as it was;
  * checkpoints: a pickle payload in state.pt (never run), a checkpoint of another family, data or size;
  * model URIs, family and run names from the command line, which must never become paths outside the
    configured directories.
Real files in tmp_path throughout; no Ray, MLflow store or subprocess.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import pickle
import struct
import sys
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from components import cli, pipeline
from components.config import Params, load_params, read_yaml, validate_params
from components.data import prepare_dataset, read_source, write_prepared
from components.data.sources import MAX_IMAGE_PIXELS, RawImages
from components.errors import CheckpointError, ConfigError, DataError, GanzooError
from components.families import DataSpec, build_family, family_names, get_family
from components.registry import models
from components.training.checkpoint import (STATE_FILE, TrainingState, load_family, restore_into,
                                            save_checkpoint)

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
SHIPPED = read_yaml(REPO_PARAMS.read_text())
HUGE_DIGITS = "9" * 5000
# values only YAML text can hold, swapped in for these tokens after dumping: Python's int() refuses 5000 digits,
# a bad date raises ValueError, an alias inside its own anchor loops, a set or bytes are no JSON
RAW_YAML = {"RAWTOKENHUGE": HUGE_DIGITS, "RAWTOKENDATE": "2020-01-01", "RAWTOKENBADDATE": "2020-13-45",
            "RAWTOKENBYTES": "!!binary aGVsbG8=", "RAWTOKENLOOP": "&loop [*loop]", "RAWTOKENSET": "!!set {dcgan: null}",
            "RAWTOKENDEEP": "[" * 200 + "]" * 200}
HUGE = "RAWTOKENHUGE"


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    return message


# -- params.yaml and --set ------------------------------------------------------------------------


def _key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    paths = []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += [prefix + (key,)] + _key_paths(value, prefix + (key,))
    return paths


BASE_PATHS = _key_paths(SHIPPED)
HYPER_PATHS = [("overrides", name, field.name) for name in family_names()
               for field in dataclasses.fields(get_family(name).Config)]
ODD_NAMES = ["../../etc", "dcgan/../x", "DCGAN", "", " ", "a\nb", "pack", "mnist5k", "1e-4", "~", "null", HUGE]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**80, max_value=2**80),
    st.floats(),  # NaN and ±inf included
    st.text(max_size=12), st.sampled_from(family_names() + ODD_NAMES), st.sampled_from(sorted(RAW_YAML)),
)
KEYS = st.one_of(st.text(max_size=8), st.sampled_from([p[-1] for p in BASE_PATHS + HYPER_PATHS]), st.integers())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=6)
PATHS = st.one_of(st.sampled_from(BASE_PATHS), st.sampled_from(HYPER_PATHS),
                  st.tuples(st.sampled_from([p[:-1] for p in BASE_PATHS + HYPER_PATHS]), KEYS)
                  .map(lambda parent_key: parent_key[0] + (parent_key[1],)))
EDITS = st.lists(st.tuples(st.sampled_from(["set", "set", "delete"]), PATHS, VALUES), min_size=1, max_size=4)


def _edited(edits: list) -> dict:
    """The shipped params with each (op, key path, value) applied; paths through a replaced scalar are skipped."""
    raw = copy.deepcopy(SHIPPED)
    for op, path, value in edits:
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if op == "delete":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return raw


def _yaml_text(value: Any) -> str:
    text = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=None, width=10**9)
    for token, raw in RAW_YAML.items():
        text = text.replace(token, raw)
    return text


def _loads_or_refuses(path: Path, overrides: list[str] | None = None) -> None:
    """The only acceptable outcomes: Params, or one ConfigError line starting with the file's name."""
    try:
        params = load_params(path, overrides)
    except ConfigError as exc:
        assert one_line(exc).startswith((path.name, str(path))), str(exc)
        return
    assert isinstance(params, Params)


def test_the_unmodified_shipped_params_load():
    assert isinstance(load_params(REPO_PARAMS), Params)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=EDITS)
def test_fuzzed_params_files_load_or_fail_with_one_line_naming_the_file(tmp_path, edits):
    path = tmp_path / "params.yaml"
    path.write_text(_yaml_text(_edited(edits)), encoding="utf-8")
    _loads_or_refuses(path)


def _flow(value: Any) -> str:
    return _yaml_text(value).strip().removesuffix("...").strip().replace("\n", " ")


ASSIGNMENTS = st.one_of(
    st.tuples(PATHS.map(lambda path: ".".join(str(p) for p in path)), VALUES.map(_flow)).map("=".join),
    st.text(max_size=30),  # anything at all, '=' or not
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assignments=st.lists(ASSIGNMENTS, min_size=1, max_size=3))
def test_fuzzed_set_overrides_load_or_fail_with_one_line_naming_the_file(tmp_path, assignments):
    path = tmp_path / "params.yaml"
    if not path.exists():
        path.write_text(REPO_PARAMS.read_text())
    _loads_or_refuses(path, assignments)


@pytest.mark.parametrize("text, expected", [
    # each of these raised TypeError, ValueError or RecursionError before
    ("data: {source: 2020-01-01}\n", "params.yaml: data.source: expected a non-empty string, got datetime.date("),
    ("data: {source: !!binary aGVsbG8=}\n", "params.yaml: data.source: expected a non-empty string, got b'hello'"),
    ("families: !!set {dcgan}\n", "params.yaml: families: expected a non-empty list of family names, got {'dcgan'}"),
    ("families: &a [*a]\n", "params.yaml: families.0.0.0...: nested more than 32 levels deep"),
    ("train: " + "[" * 3000 + "]" * 3000 + "\n", "params.yaml: not valid YAML (nested too deeply)"),
    ("train: {steps: " + HUGE_DIGITS + "}\n", "params.yaml: not valid YAML (an integer of more than 4300 digits)"),
    ("data: {source: 2020-13-45}\n", "params.yaml: not valid YAML (month must be in 1..12)"),
    ("data: {prepared_dir: \"a\\0b\"}\n", "params.yaml: data.prepared_dir: not a usable path (embedded null byte)"),
    ("train: {gpus_per_worker: .inf}\n", "params.yaml: train.gpus_per_worker: expected a non-negative number, "
                                         "got inf"),
    ("overrides: {dcgan: {\"lr\\nx\": 1}}\n", "params.yaml: overrides.dcgan.'lr\\nx': unknown hyperparameter"),
])
def test_yaml_that_crashed_the_loader_is_one_line(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    message = one_line(caught.value)
    assert message.startswith(str(path) if "YAML" in expected else "params.yaml:")
    assert expected.removeprefix("params.yaml") in message


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"train: {steps: \xff}\n")
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert one_line(caught.value) == f"{path}: unreadable (UnicodeDecodeError); expected a UTF-8 YAML file"


@pytest.mark.parametrize("assignment, expected", [
    ("train.steps", "params.yaml (with --set): --set 'train.steps': expected KEY.PATH=VALUE, e.g. train.steps=200"),
    ("train.steps.x=1", "params.yaml (with --set): --set 'train.steps.x=1': steps is not a mapping"),
    ("train.steps=" + HUGE_DIGITS, "params.yaml (with --set): train.steps: expected a positive integer, got '999"),
    ("train=&a [*a]", "params.yaml (with --set): train.0.0.0...: nested more than 32 levels deep"),
])
def test_set_errors_start_with_the_file_name(assignment, expected):
    with pytest.raises(ConfigError) as caught:
        load_params(REPO_PARAMS, [assignment])
    message = one_line(caught.value)
    assert message.startswith(expected) and len(message) < 400


def test_values_in_messages_are_cut_to_stay_readable():
    with pytest.raises(ConfigError) as caught:
        validate_params({"train": {"workers": "x" * 10_000}})
    assert one_line(caught.value) == "params.yaml: train.workers: expected a positive integer, got '" + "x" * 96 + "..."


# -- data -----------------------------------------------------------------------------------------


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG whose IHDR declares width x height grey pixels, with a few bytes of pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _dataset(root: Path, bad_name: str | None = None, bad: bytes = b"") -> Path:
    """An unlabeled folder of three 8x8 grey PNGs, plus ``bad_name`` holding ``bad`` when given."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        (root / f"ok{k}.png").write_bytes(_png(np.full((8, 8), 40 * k, dtype=np.uint8)))
    if bad_name:
        (root / bad_name).write_bytes(bad)
    return root


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden temporaries included) with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


def _refused_without_a_trace(tmp_path: Path, spec: str) -> str:
    """Prepare ``spec`` onto a prepared dir that holds a good version: the error is one line and changes nothing."""
    out = tmp_path / "work" / "prepared"
    prepare_dataset(f"folder:{_dataset(tmp_path / 'good')}", out)
    before = _tree(out.parent)
    with pytest.raises(DataError) as caught:
        prepare_dataset(spec, out)
    assert _tree(out.parent) == before  # the previous version intact, no .tmp- or .old- directory left
    fresh = tmp_path / "fresh" / "prepared"
    with pytest.raises(DataError):
        prepare_dataset(spec, fresh)
    assert not fresh.exists()
    return one_line(caught.value)


@pytest.mark.parametrize("name, data, reason", [
    ("cut.png", _png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:-300],
     "cannot decode image"),
    ("cut.jpg", _jpeg(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:-300],
     "cannot decode image"),
    ("empty.png", b"", "empty file (0 bytes); expected a valid PNG or JPEG"),
])
def test_truncated_and_empty_images_are_refused_naming_the_file(tmp_path, name, data, reason):
    root = _dataset(tmp_path / "faces", name, data)
    message = _refused_without_a_trace(tmp_path, f"folder:{root}")
    assert message.startswith(f"{root / name}: {reason}")


@pytest.mark.parametrize("width, height", [(5000, 5000), (100_000, 100_000)])
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, width, height):
    # 5000x5000 is under Pillow's own limit but over this pipeline's; 100000^2 trips Pillow's too
    assert width * height > MAX_IMAGE_PIXELS
    root = _dataset(tmp_path / "faces", "bomb.png", _png_header(width, height))
    message = _refused_without_a_trace(tmp_path, f"folder:{root}")
    assert message.startswith(f"{root / 'bomb.png'}: ") and "decompression bomb" in message


def test_a_bomb_label_map_is_refused_too(tmp_path):
    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "a.png").write_bytes(_png(np.zeros((8, 8, 3), dtype=np.uint8)))
    (root / "labels" / "a.png").write_bytes(_png_header(5000, 5000))
    with pytest.raises(DataError) as caught:
        read_source(f"segmentation:folder:{root}")
    assert one_line(caught.value).startswith(f"{root / 'labels' / 'a.png'}: image is 5000x5000 = 25000000 pixels, "
                                             f"over the limit of {MAX_IMAGE_PIXELS}")


def test_a_symlink_out_of_the_dataset_folder_is_refused_naming_it(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.png").write_bytes(_png(np.full((8, 8), 255, dtype=np.uint8)))
    root = _dataset(tmp_path / "faces")
    (root / "link.png").symlink_to(outside / "key.png")
    message = _refused_without_a_trace(tmp_path, f"folder:{root}")
    assert message == (f"{root / 'link.png'}: a symbolic link to {outside / 'key.png'}, outside the dataset folder "
                       f"{root}; expected files inside it")
    (root / "link.png").unlink()
    (root / "linked_class").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataError, match="linked_class: a symbolic link to .*secret, outside the dataset folder"):
        read_source(f"folder:{root}")


def test_a_symlink_inside_the_dataset_folder_still_reads(tmp_path):
    root = _dataset(tmp_path / "faces")
    (root / "again.png").symlink_to(root / "ok1.png")
    assert len(read_source(f"folder:{root}").images) == 4


def test_a_dotdot_row_of_an_attribute_table_is_refused_naming_it(tmp_path):
    (tmp_path / "outside.png").write_bytes(_png(np.zeros((8, 8), dtype=np.uint8)))
    root = tmp_path / "celeb"
    _dataset(root / "images")
    rows = ["file,smiling"] + [f"ok{k}.png,{k % 2}" for k in range(3)] + ["../../outside.png,1"]
    (root / "attributes.csv").write_text("\n".join(rows) + "\n")
    message = _refused_without_a_trace(tmp_path, f"attributes:folder:{root}")
    assert message == (f"{root / 'attributes.csv'}: row '../../outside.png' names no image in {root / 'images'}")


def test_an_npz_with_pickled_objects_is_refused_naming_it(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, images=np.array([{"__reduce__": "x"}, None], dtype=object))
    message = _refused_without_a_trace(tmp_path, f"npz:{path}")
    assert message == (f"{path}: holds pickled Python objects (an object array), which are not accepted; "
                       "expected numeric arrays 'images' and optional 'labels'")


@pytest.mark.parametrize("labels, expected", [
    (np.array([0, -1, 2]), "negative label -1; expected labels 0..K-1"),
    (np.array([0, 1, 2**62]), f"label {2**62} is out of range; expected labels 0..K-1 with at most 65536 classes"),
])
def test_npz_labels_out_of_range_are_refused(tmp_path, labels, expected):
    path = tmp_path / "digits.npz"
    np.savez(path, images=np.zeros((3, 8, 8), dtype=np.uint8), labels=labels)
    assert _refused_without_a_trace(tmp_path, f"npz:{path}") == f"{path}: {expected}"


def test_a_label_map_class_beyond_classes_txt_is_refused(tmp_path):
    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("sky\ngrass\n")
    (root / "images" / "a.png").write_bytes(_png(np.zeros((8, 8, 3), dtype=np.uint8)))
    (root / "labels" / "a.png").write_bytes(_png(np.full((8, 8), 2, dtype=np.uint8)))
    message = _refused_without_a_trace(tmp_path, f"segmentation:folder:{root}")
    assert message == (f"{root / 'labels' / 'a.png'}: class index 2 is outside the 2 classes of classes.txt; "
                       "expected indices 0..1")


def test_labels_beyond_the_declared_classes_are_never_written(tmp_path):
    out = tmp_path / "prepared"
    prepare_dataset(f"folder:{_dataset(tmp_path / 'good')}", out)
    before = _tree(tmp_path)
    images = np.zeros((3, 1, 8, 8), dtype=np.uint8)
    for labels in (np.array([0, 1, 2]), np.array([0, -1, 1])):
        with pytest.raises(DataError) as caught:
            write_prepared(RawImages(images, labels, ["a", "b"], "mine"), out)
        assert one_line(caught.value) == "mine: labels do not match the images and 2 class names"
    assert _tree(tmp_path) == before


# -- checkpoints ----------------------------------------------------------------------------------


SPEC = DataSpec(channels=1, image_size=8)


def _dcgan(spec: DataSpec = SPEC, **sizes: int):
    torch.manual_seed(0)
    return build_family("dcgan", spec, {**get_family("dcgan").tiny, **sizes})


def _checkpoint(directory: Path) -> Path:
    family = _dcgan()
    return save_checkpoint(directory, family, family.build_optimizers(), TrainingState(step=3))


class _Payload:
    """What a tampered state.pt unpickles to: calling os.mkdir would leave a visible trace."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


class _Plain:
    def __init__(self) -> None:
        self.weights = [1.0]


@pytest.mark.parametrize("write", [
    lambda path, marker: torch.save({"nets": _Payload(marker), "step": 0}, path),
    lambda path, marker: path.write_bytes(pickle.dumps(_Payload(marker), protocol=2)),
    lambda path, marker: torch.save(_Plain(), path),
], ids=["torch.save of a payload", "plain pickle of a payload", "plain class instance"])
def test_a_pickle_payload_in_state_pt_is_refused_and_never_runs(tmp_path, write: Callable):
    directory = _checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "payload-ran"
    write(directory / STATE_FILE, marker)
    with pytest.raises(CheckpointError) as caught:
        load_family(directory)
    assert one_line(caught.value).startswith(f"{directory / STATE_FILE}: refused: it holds pickled Python objects")
    assert not marker.exists()


def _weights(family) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in family.nets.items() for k, v in m.state_dict().items()}


def _refused_restore(directory: Path, family) -> str:
    before = _weights(family)
    with pytest.raises(CheckpointError) as caught:
        restore_into(directory, family, family.build_optimizers())
    after = _weights(family)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # untouched
    return one_line(caught.value)


def test_a_checkpoint_of_another_family_is_refused_naming_both(tmp_path):
    directory = _checkpoint(tmp_path / "ckpt")
    other = build_family("wgan_gp", SPEC, get_family("wgan_gp").tiny)
    assert _refused_restore(directory, other) == f"{directory}: checkpoint of family 'dcgan', not 'wgan_gp'"
    with pytest.raises(CheckpointError) as caught:
        load_family(directory, family="wgan_gp")
    assert one_line(caught.value) == f"{directory / 'config.json'}: checkpoint of family 'dcgan', expected 'wgan_gp'"
    assert load_family(directory, family="dcgan")[1]["family"] == "dcgan"


def test_a_checkpoint_of_other_data_is_refused_naming_both_specs(tmp_path):
    directory = _checkpoint(tmp_path / "ckpt")
    message = _refused_restore(directory, _dcgan(DataSpec(channels=3, image_size=8)))
    assert message == (f"{directory}: checkpoint of dcgan for other data (checkpoint vs expected: channels 1 vs 3)")


def test_a_checkpoint_of_other_network_sizes_is_refused_naming_both(tmp_path):
    directory = _checkpoint(tmp_path / "ckpt")
    width = _dcgan().config.g_width
    message = _refused_restore(directory, _dcgan(g_width=width * 2))
    assert message.startswith(f"{directory}: checkpoint of dcgan does not fit: network 'G': ")
    assert message.endswith(f"(config checkpoint vs expected: g_width {width} vs {width * 2})")


@pytest.mark.parametrize("config, expected", [
    ("[1, 2]", "not a ganzoo checkpoint config; expected a mapping with family, config and spec"),
    ('{"family": "nosuch", "config": {}, "spec": {"channels": 1, "image_size": 8}}',
     "cannot rebuild the family (ConfigError: unknown family 'nosuch'"),
    ('{"family": "dcgan", "config": {}, "spec": {"channels": 1, "image_size": 8, "colour": 1}}',
     "cannot rebuild the family (TypeError: "),
    ("{", "unreadable checkpoint config (JSONDecodeError: "),
])
def test_a_foreign_config_json_is_refused_naming_it(tmp_path, config, expected):
    directory = _checkpoint(tmp_path / "ckpt")
    (directory / "config.json").write_text(config)
    with pytest.raises(CheckpointError) as caught:
        load_family(directory)
    assert one_line(caught.value).startswith(f"{directory / 'config.json'}: {expected}")


# -- model URIs, family and run names from the command line ---------------------------------------


@pytest.mark.parametrize("uri", ["models:/mnist5k-dcgan@champion", "models:/mnist5k-dcgan/3", "models:/faces-cgan",
                                 "models:/my data.v2-dcgan/latest", "runs:/0a1b2c3d/generator"])
def test_registered_model_uris_pass(uri):
    assert models.check_model_uri(uri) == uri


@pytest.mark.parametrize("uri", ["models:/../x", "models:/a/b@c", "models:/..", "models:/a/../b", "models:/.",
                                 "models:/a@", "models:/", "models:/a/b/c", "models:/a\\..\\b@c", "models:/a@b\nc",
                                 "models:/a:b@c", "runs:/abc/../../x", "runs:/abc", "runs:/../x/y",
                                 "file:///etc/passwd", "/tmp/model", "../model", ""])
def test_model_uris_that_could_name_files_are_refused_before_any_access(monkeypatch, uri):
    monkeypatch.setattr(models, "_load_checked", lambda *_: pytest.fail("the store was reached"))
    with pytest.raises(GanzooError) as caught:
        models.generate_from_registry(uri, 2)
    assert one_line(caught.value) == (f"{uri!r}: not a registered model URI; expected models:/NAME@ALIAS, "
                                      "models:/NAME/VERSION, runs:/RUN_ID/PATH or the folder of a model saved by "
                                      "MLflow (no '/', ':', '@' or '..' in a name)")


def test_a_folder_of_a_model_saved_by_mlflow_is_accepted_and_others_are_not(tmp_path):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "plain").mkdir()
    assert models.check_model_uri(str(tmp_path / "saved")) == str(tmp_path / "saved")
    assert models.check_model_uri(f"file://{tmp_path / 'saved'}") == f"file://{tmp_path / 'saved'}"
    for refused in (str(tmp_path / "plain"), str(tmp_path / "saved" / "MLmodel")):
        with pytest.raises(GanzooError, match="not a registered model URI"):
            models.check_model_uri(refused)


def test_a_family_name_never_leaves_the_reports_dir(tmp_path):
    planted = tmp_path / "evil" / "training.json"
    planted.parent.mkdir()
    planted.write_text('{"status": "finished", "checkpoint": "/"}')
    params = validate_params({"evaluation": {"reports_dir": str(tmp_path / "reports")}})
    for name in ("../evil", "dcgan/../../evil", str(tmp_path / "evil")):
        with pytest.raises(ConfigError) as caught:
            pipeline.read_training(params, name)
        assert one_line(caught.value).startswith(f"unknown family {name!r} (expected one of: ")


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``ganzoo ARGS`` in this process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ganzoo", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return exited.value.code, capsys.readouterr().err


def test_the_cli_refuses_bad_names_with_one_stderr_line_before_reading_anything(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "_load", lambda *_: pytest.fail("params.yaml was read"))
    code, err = _main(monkeypatch, capsys, "sample", "--family", "../../etc", "-o", str(tmp_path / "x.npz"))
    assert code == 2 and err.startswith("error: unknown family '../../etc' (expected one of: acgan, ")
    assert err.count("\n") == 1 and err.endswith(")\n")
    code, err = _main(monkeypatch, capsys, "sample", "--model", "models:/../x", "-o", str(tmp_path / "x.npz"))
    assert (code, err) == (2, "error: 'models:/../x': not a registered model URI; expected models:/NAME@ALIAS, "
                              "models:/NAME/VERSION, runs:/RUN_ID/PATH or the folder of a model saved by MLflow "
                              "(no '/', ':', '@' or '..' in a name)\n")
    code, err = _main(monkeypatch, capsys, "train", "--run-name", "../../x")
    assert (code, err) == (2, "error: --run-name '../../x': expected letters, digits, '_', '-' or '.' (one folder "
                              "name, no '/' or '..')\n")
    assert not (tmp_path / "x.npz").exists()


def test_sample_family_refuses_a_training_record_naming_another_familys_checkpoint(tmp_path):
    directory = _checkpoint(tmp_path / "runs" / "r" / "checkpoint_0000003")
    record = tmp_path / "reports" / "wgan_gp" / "training.json"
    record.parent.mkdir(parents=True)
    record.write_text(f'{{"status": "finished", "checkpoint": "{directory}"}}')
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"evaluation: {{reports_dir: {tmp_path / 'reports'}}}\n")
    with pytest.raises(CheckpointError) as caught:
        cli._family_checkpoint("wgan_gp", params_file, [])
    assert one_line(caught.value) == f"{directory / 'config.json'}: checkpoint of family 'dcgan', expected 'wgan_gp'"
