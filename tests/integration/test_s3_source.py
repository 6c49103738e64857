"""The s3:// source against moto on 127.0.0.1: same result as the local folder, clear errors."""

from __future__ import annotations

import re
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data import load_prepared, prepare_dataset, read_source
from components.errors import DataError

from .s3_fixtures import moto_endpoint, s3_client, s3_env  # noqa: F401  (fixtures are found by name here)

pytestmark = pytest.mark.integration


def _make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, count in (("0", 3), ("1", 2)):
        for i in range(count):
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / label / f"img{i}.png")
    (root / "1" / ".hidden").write_text("ignored")
    return root


def _upload(endpoint: str, folder: Path, prefix: str) -> str:
    """Upload ``folder`` to a fresh bucket under ``prefix``; returns the bucket name."""
    bucket = f"ganzoo-{uuid.uuid4().hex[:12]}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key=f"{prefix}/", Body=b"")  # a console-style folder marker
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return bucket


def test_s3_prepare_matches_local_folder(s3_env, tmp_path):
    folder = _make_folder(tmp_path / "digits")
    bucket = _upload(s3_env, folder, "digits")
    remote = prepare_dataset(f"s3://{bucket}/digits", tmp_path / "remote", s3_endpoint_url=s3_env)
    local = prepare_dataset(f"folder:{folder}", tmp_path / "local")
    assert remote["files"] == local["files"] and remote["classes"] == ["0", "1"] and remote["count"] == 5
    from_s3, from_disk = load_prepared(tmp_path / "remote"), load_prepared(tmp_path / "local")
    np.testing.assert_array_equal(from_s3.images, from_disk.images)
    np.testing.assert_array_equal(from_s3.labels, from_disk.labels)
    assert from_s3.data_hash() == from_disk.data_hash()


def test_s3_endpoint_from_environment(s3_env, tmp_path, monkeypatch):
    bucket = _upload(s3_env, _make_folder(tmp_path / "digits"), "digits")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env)
    raw = read_source(f"s3://{bucket}/digits/", image_size=4)
    assert raw.images.shape == (5, 1, 4, 4) and raw.labels.tolist() == [0, 0, 0, 1, 1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_fails_fast_naming_endpoint_and_url(s3_env):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        read_source("s3://bucket/digits", s3_endpoint_url=endpoint)
    message = str(info.value)
    assert time.monotonic() - start < 15
    assert "\n" not in message and "testing" not in message
    assert message.startswith(f"cannot reach S3 endpoint {endpoint} to read s3://bucket/digits:")


@pytest.mark.parametrize("where", ["missing-prefix", "missing-bucket"])
def test_missing_prefix_or_bucket(s3_env, tmp_path, where):
    bucket = _upload(s3_env, _make_folder(tmp_path / "digits"), "digits")
    url = f"s3://{bucket}/nothing-here" if where == "missing-prefix" else f"s3://no-such-{bucket}/digits"
    pattern = f"{re.escape(url)}: not found \\(S3 endpoint {re.escape(s3_env)}\\)"
    with pytest.raises(DataError, match=pattern):
        read_source(url, s3_endpoint_url=s3_env)


def test_bad_file_on_s3_is_named_by_url(s3_env, tmp_path):
    folder = _make_folder(tmp_path / "digits")
    (folder / "0" / "img1.png").write_bytes((folder / "0" / "img1.png").read_bytes()[:40])
    bucket = _upload(s3_env, folder, "digits")
    with pytest.raises(DataError, match=re.escape(f"s3://{bucket}/digits/0/img1.png: cannot decode image")):
        read_source(f"s3://{bucket}/digits", s3_endpoint_url=s3_env)


def test_translation_layouts_load_from_s3_as_from_a_folder(s3_env, tmp_path):
    from tests.unit.test_translation_data import write_ab_folder, write_segmentation_folder

    for task, folder in (("paired", write_ab_folder(tmp_path / "ab")),
                         ("segmentation", write_segmentation_folder(tmp_path / "seg"))):
        bucket = _upload(s3_env, folder, "data")
        remote = prepare_dataset(f"{task}:s3://{bucket}/data", tmp_path / f"{task}-s3", s3_endpoint_url=s3_env)
        local = prepare_dataset(f"{task}:folder:{folder}", tmp_path / f"{task}-local")
        assert remote["files"] == local["files"] and remote["task"] == task
        assert remote["train_count"] == local["train_count"]


def test_domain_layouts_load_from_s3_as_from_a_folder(s3_env, tmp_path):
    from tests.unit.test_domain_data import write_attribute_folder, write_unpaired_folder

    for spec, folder in (("unpaired", write_unpaired_folder(tmp_path / "u")),
                         ("attributes", write_attribute_folder(tmp_path / "celeb"))):
        bucket = _upload(s3_env, folder, "data")
        remote = prepare_dataset(f"{spec}:s3://{bucket}/data", tmp_path / f"{spec}-s3", s3_endpoint_url=s3_env)
        local = prepare_dataset(f"{spec}:folder:{folder}", tmp_path / f"{spec}-local")
        assert remote["files"] == local["files"] and remote["train_count"] == local["train_count"]
