"""DVC versioning of the prepared dataset in a real git + DVC repository: local and S3 (moto) remotes."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
import yaml

from components.data import prepare_dataset
from components.data.versioning import (
    DataVersion,
    configure_remote,
    current_data_version,
    find_project_root,
    init_project,
    version_prepared,
)
from components.errors import ConfigError, DataError, GanzooError

from .s3_fixtures import moto_endpoint, s3_client, s3_env  # noqa: F401  (fixtures are found by name here)

pytestmark = pytest.mark.integration

PREPARE_STAGE = {"stages": {"prepare": {"cmd": "ganzoo prepare", "params": ["data.source", "data.image_size"],
                                        "outs": ["data/prepared"]}}}


@pytest.fixture(autouse=True)
def dvc_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep DVC's site cache and global/system config inside the test's temporary folders."""
    home = tmp_path_factory.mktemp("dvc-home")
    for name in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


def _prepare(root: Path, source: str = "digits", image_size: int = 8) -> None:
    """What `ganzoo prepare` does: params.yaml names the data, the component writes data/prepared."""
    (root / "params.yaml").write_text(yaml.safe_dump({"data": {"source": source, "image_size": image_size}}))
    prepare_dataset(source, root / "data" / "prepared", image_size=image_size)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC repository with the `prepare` stage and a small prepared digits dataset."""
    root = tmp_path / "project"
    init_project(root)
    (root / "dvc.yaml").write_text(yaml.safe_dump(PREPARE_STAGE, sort_keys=False))
    _prepare(root)
    return root


def _locked_md5(root: Path) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (out,) = lock["stages"]["prepare"]["outs"]
    assert out["path"] == "data/prepared"
    return out["md5"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_not_a_repository_names_the_commands_and_creates_nothing(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    with pytest.raises(ConfigError) as error:
        find_project_root(folder)
    assert str(error.value) == (
        f"{folder} is not a git/DVC repository: run `git init && dvc init` there, or `ganzoo init`"
    )
    assert list(folder.iterdir()) == []


def test_init_project_is_idempotent(tmp_path):
    root = tmp_path / "fresh"
    assert init_project(root) == ["git init", "dvc init"]
    assert (root / ".git").is_dir() and (root / ".dvc").is_dir()
    assert init_project(root) == []
    (root / "sub").mkdir()
    assert find_project_root(root / "sub") == root.resolve()


def test_local_remote_versions_once_and_follows_the_data(project):
    first = version_prepared(project, "data/prepared", ".dvc-remote")
    assert first.md5.endswith(".dir") and first.pushed > 0
    assert first.path == "data/prepared" and first.remote == str(project / ".dvc-remote")
    assert _locked_md5(project) == first.md5 == current_data_version(project, "data/prepared")
    assert any((project / ".dvc-remote").rglob("*.dir"))
    assert not (project / "data" / "prepared.dvc").exists()  # the stage owns the output: no `dvc add`

    # absolute paths, as load_params anchors them, name the same folders
    again = version_prepared(project, project / "data" / "prepared", str(project / ".dvc-remote"))
    assert (again.md5, again.pushed) == (first.md5, 0)

    _prepare(project, image_size=12)
    changed = version_prepared(project, "data/prepared", ".dvc-remote")
    assert changed.md5 != first.md5 and changed.pushed > 0
    assert _locked_md5(project) == changed.md5
    assert yaml.safe_load((project / "dvc.lock").read_text())["stages"]["prepare"]["params"] == {
        "params.yaml": {"data.source": "digits", "data.image_size": 12}
    }


def test_s3_remote_pushes_once_and_keeps_secrets_out(project, s3_env, monkeypatch):
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any secret
    bucket = f"ganzoo-{uuid.uuid4().hex[:12]}"
    s3_client(s3_env).create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/dvc"

    first = version_prepared(project, "data/prepared", url, s3_env)
    assert first.pushed > 0 and first.remote == url
    again = version_prepared(project, "data/prepared", url, s3_env)
    assert (again.md5, again.pushed) == (first.md5, 0)

    keys = [o["Key"] for o in s3_client(s3_env).list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == first.pushed and all(key.startswith("dvc/files/md5/") for key in keys)
    config = (project / ".dvc" / "config.local").read_text()
    assert url in config and s3_env in config
    for path in [*(project / ".dvc").glob("config*"), project / "dvc.lock"]:
        assert secret not in path.read_text()
    assert secret not in str(first.to_dict())


def test_configure_remote_is_idempotent_and_switches(project):
    config = project / ".dvc" / "config.local"
    assert configure_remote(project, ".dvc-remote", None) == str(project / ".dvc-remote")
    written = config.stat().st_mtime_ns, config.read_text()
    configure_remote(project, ".dvc-remote", None)
    assert (config.stat().st_mtime_ns, config.read_text()) == written
    assert "../.dvc-remote" in written[1]  # relative to .dvc/, so the repository can move
    assert "/.dvc-remote" in (project / ".gitignore").read_text().splitlines()  # git must not hold the data

    configure_remote(project, "s3://bucket-a/prefix", "http://127.0.0.1:9000")
    configure_remote(project, "s3://bucket-a/prefix", None)
    text = config.read_text()
    assert "s3://bucket-a/prefix" in text and "endpointurl" not in text and ".dvc-remote" not in text


def test_without_a_prepare_stage_falls_back_to_dvc_add(project):
    (project / "dvc.yaml").unlink()
    version = version_prepared(project, "data/prepared", ".dvc-remote")
    assert version.md5.endswith(".dir") and version.pushed > 0
    assert not (project / "dvc.lock").exists()
    recorded = yaml.safe_load((project / "data" / "prepared.dvc").read_text())
    assert recorded["outs"][0]["md5"] == version.md5 == current_data_version(project, "data/prepared")
    assert version_prepared(project, "data/prepared", ".dvc-remote") == DataVersion(
        version.md5, "data/prepared", version.remote, 0
    )


def test_git_ignored_data_folder_works_with_the_stage_not_with_dvc_add(project):
    """ganzoo's own .gitignore lists /data/: dvc.lock sits at the root, but a data/prepared.dvc would be invisible."""
    (project / ".gitignore").write_text("/data/\n")
    assert version_prepared(project, "data/prepared", ".dvc-remote").pushed > 0
    assert not (project / "data" / ".gitignore").exists()  # DVC adds none when the output is already ignored

    (project / "dvc.yaml").unlink()
    (project / "dvc.lock").unlink()
    with pytest.raises(GanzooError, match=r"'data/prepared.dvc' is git-ignored"):
        version_prepared(project, "data/prepared", ".dvc-remote")


def test_credentials_in_urls_are_refused_unrepeated(project):
    for remote, endpoint in (("s3://key:secret@bucket/dvc", None), ("s3://bucket/dvc", "http://key:secret@127.0.0.1:9")):
        with pytest.raises(ConfigError, match="holds credentials") as error:
            version_prepared(project, "data/prepared", remote, endpoint)
        assert "secret" not in str(error.value)
    assert not (project / ".dvc" / "config.local").exists()


def test_unreachable_s3_remote_fails_fast_in_one_line(project, s3_env):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(GanzooError) as error:
        version_prepared(project, "data/prepared", "s3://ganzoo-nowhere/dvc", endpoint)
    message = str(error.value)
    assert time.monotonic() - started < 15
    assert "\n" not in message and "s3://ganzoo-nowhere/dvc" in message and endpoint in message
    assert "testing" not in message  # the fake credentials


def test_missing_prepared_dir_and_unversioned_data(tmp_path):
    root = tmp_path / "empty"
    init_project(root)
    assert current_data_version(root, "data/prepared") is None
    with pytest.raises(DataError, match=r"data/prepared: no prepared dataset there"):
        version_prepared(root, "data/prepared", ".dvc-remote")
    with pytest.raises(ConfigError, match="inside the project root"):
        version_prepared(root, tmp_path / "elsewhere", ".dvc-remote")
