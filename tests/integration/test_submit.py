"""`ganzoo submit`: the retrain flow as a Ray Job on a cluster with a Jobs API, followed to completion."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
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


def _jobs_api_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:  # 401: up, and asking for the cluster's token
        return exc.code == 401
    except OSError:
        return False


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "dvc-home" / name.lower()))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")  # the job's driver runs `ganzoo`
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Ray's default for a new local cluster, and what an earlier ray.init() in this session leaves set:
    # the Jobs API then wants the token from ~/.ray/auth_token, which `ganzoo submit` must send.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], check=True, capture_output=True, timeout=120)
    root = tmp_path / "project"
    init_project(root)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update({"source": "digits", "image_size": 16, "dvc_remote": str(tmp_path / "dvc-remote")})
    params["families"] = ["dcgan"]
    params["overrides"] = {"dcgan": {"g_width": 8, "d_width": 8}}
    params["train"].update({"steps": 4, "batch_size": 16, "checkpoint_every": 4, "sample_every": 4,
                            "storage_path": str(tmp_path / "runs")})
    params["evaluation"].update({"num_samples": 300, "batch_size": 150, "extractor_epochs": 1, "kid_subsets": 5,
                                 "kid_subset_size": 100, "fid_bootstrap": 3,
                                 "cache_dir": str(tmp_path / "cache"), "reports_dir": str(tmp_path / "reports")})
    params["registry"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params["registry"]["min_classes_covered"] = 0  # 4 steps: too early to judge collapse
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_submitted_retrain_job_succeeds_and_registers_a_model(project: Path, tmp_path: Path):
    from mlflow import MlflowClient
    from ray.cluster_utils import Cluster

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The agent's port too: the session's shared cluster already holds Ray's default one (52365)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
        "dashboard_agent_listen_port": _free_port()})
    try:
        deadline = time.monotonic() + 120
        while not _jobs_api_up(url):
            assert time.monotonic() < deadline, "the Ray Jobs API did not come up"
            time.sleep(1)
        submitted = subprocess.run([str(BIN / "ganzoo"), "submit", "--address", url], cwd=project,
                                   capture_output=True, text=True, timeout=900)
        assert submitted.returncode == 0, submitted.stdout[-4000:] + submitted.stderr[-2000:]
        job_id = re.search(r"submitted Ray job (\S+)", submitted.stdout).group(1)
        assert "retrain summary" in submitted.stdout  # the flow's table, streamed from the job's driver
        status = subprocess.run([str(BIN / "ganzoo"), "jobs", "status", job_id, "--address", url],
                                capture_output=True, text=True, timeout=120)
        assert status.stdout.strip() == "SUCCEEDED", status.stdout + status.stderr
    finally:
        cluster.shutdown()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the registry an earlier test set globally
    (version,) = client.search_model_versions("name='digits-dcgan'")
    assert version.tags["data_version"].endswith(".dir")


def test_jobs_commands_name_an_unreachable_api_in_one_line(tmp_path: Path):
    result = subprocess.run([str(BIN / "ganzoo"), "jobs", "status", "raysubmit_x", "--address",
                             f"http://127.0.0.1:{_free_port()}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: Ray Jobs API at http://127.0.0.1:") and result.stderr.count("\n") == 1
