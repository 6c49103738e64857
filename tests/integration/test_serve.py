"""`ganzoo serve`: the retrain deployment served on a schedule, triggered through a real Prefect server,
registering into a real MLflow tracking server (both on 127.0.0.1), as a team's stack would.

The first triggered run trains and registers; the second, with unchanged data and
params, skips training and records the skip on the champion.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.data.versioning import init_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what} not ready within {timeout} s")


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real MLflow tracking server on 127.0.0.1 (SQLite behind it, artifacts served by it): the team setup."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "mlflow-server.log", "w"))
    try:
        _wait_for(lambda: _healthy(uri), 180, "the MLflow server")
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture
def prefect_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Prefect server on 127.0.0.1 with its home in tmp; this process's client points at it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                               "--no-ui"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _healthy(api), 180, "the Prefect server")
        monkeypatch.setenv("PREFECT_API_URL", api)
        monkeypatch.setenv("PREFECT_HOME", env["PREFECT_HOME"])
        # Prefect reads its settings once per process: a flow run earlier in this session fixed them,
        # so the environment alone would leave this process's client on that run's ephemeral API.
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: env["PREFECT_HOME"]}):
            yield env
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_server: str) -> Path:
    for name in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "dvc-home" / name.lower()))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "project"
    init_project(root)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update({"source": "digits", "image_size": 16})
    params["families"] = ["dcgan"]
    params["overrides"] = {"dcgan": {"g_width": 8, "d_width": 8}}
    params["train"].update({"steps": 4, "batch_size": 16, "checkpoint_every": 4, "sample_every": 4})
    params["evaluation"].update({"num_samples": 300, "batch_size": 150, "extractor_epochs": 1, "kid_subsets": 5,
                                 "kid_subset_size": 100, "fid_bootstrap": 3})
    params["registry"]["tracking_uri"] = mlflow_server
    params["registry"]["min_classes_covered"] = 0  # 4 steps: too early to judge collapse
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _deployment_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
            return True
        except Exception:  # ObjectNotFound until serve has registered it
            return False


def test_served_deployment_runs_then_skips_unchanged_families(prefect_api, project: Path, tmp_path: Path):
    from mlflow import MlflowClient
    from prefect.deployments import run_deployment

    served = subprocess.Popen([str(BIN / "ganzoo"), "serve", "--cron", "0 3 * * 0"], cwd=project, env=prefect_api,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"))
    try:
        _wait_for(lambda: _deployment_exists("retrain/retrain"), 180, "the served deployment")
        first = run_deployment("retrain/retrain", timeout=900)
        assert first.state.is_completed(), (first.state, (tmp_path / "serve.log").read_text()[-3000:])
        uri = yaml.safe_load((project / "params.yaml").read_text())["registry"]["tracking_uri"]
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the registry an earlier test set globally
        (version,) = client.search_model_versions("name='digits-dcgan'")
        assert "ganzoo.last_skipped" not in version.tags
        assert list((tmp_path / "server-artifacts").rglob("MLmodel"))  # the generator went through the server

        second = run_deployment("retrain/retrain", timeout=900)
        assert second.state.is_completed(), second.state
        (again,) = client.search_model_versions("name='digits-dcgan'")  # no new version: training was skipped
        assert again.version == version.version and "ganzoo.last_skipped" in again.tags
    finally:
        served.terminate()
        served.wait(timeout=60)
