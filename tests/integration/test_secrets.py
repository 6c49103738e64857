"""Credentials in the environment never reach a store or a log: a tiny `ganzoo run` with recognisable fake
secrets set, then every file it wrote (MLflow database and artifacts, checkpoints and their resolved config,
reports, DVC, Prefect's database and logs, Ray's session logs) and its own output are searched for them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from .test_translation_flow import make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

GANZOO = str(Path(sys.executable).with_name("ganzoo"))
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEGANZOO7777",
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-ganzoo-7f3a9c",
    "AWS_SESSION_TOKEN": "fake-aws-session-ganzoo-51d2e8",
    "MLFLOW_TRACKING_TOKEN": "fake-mlflow-token-ganzoo-c0ffee",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-ganzoo-b4d",
    "PREFECT_API_KEY": "pnu_fakeprefectganzoo0123456789abcdef",
}


def files_under(*roots: Path):
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path


def test_no_secret_reaches_any_store_or_log(tmp_path, monkeypatch):
    project = make_project(tmp_path, monkeypatch, "mnist5k", ["dcgan"],
                           {"steps": 2, "batch_size": 16, "checkpoint_every": 2, "sample_every": 2})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["registry"]["min_classes_covered"] = 0  # 2 steps: too early to judge collapse
    params["evaluation"]["cache_dir"] = str(tmp_path / "cache")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    ray_dir = Path(tempfile.mkdtemp(prefix="gzs", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAY_TMPDIR", str(ray_dir))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # its own cluster, whose workers inherit the secrets
    try:
        done = subprocess.run([GANZOO, "run"], cwd=project, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "dcgan" in done.stdout
        written = list(files_under(tmp_path, ray_dir))
        assert any(p.name == "mlflow.db" for p in written) and any(p.suffix == ".log" for p in written)
        assert any(p.name == "config.json" for p in written)  # the resolved config beside the checkpoint
        assert any(p.parent.name == "prefect-home" or "prefect-home" in p.parts for p in written)
        leaks = []
        for value in SECRETS.values():
            needle = value.encode()
            if needle in done.stdout.encode() or needle in done.stderr.encode():
                leaks.append(f"{value} in the command's output")
            leaks += [f"{value} in {p}" for p in written if needle in p.read_bytes()]
        assert not leaks, leaks
    finally:  # the driver shut its own cluster down on exit
        shutil.rmtree(ray_dir, ignore_errors=True)
