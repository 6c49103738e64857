"""A real Prefect flow run of `retrain` with every store on S3 (a moto server on 127.0.0.1): the DVC remote,
Ray Train's checkpoints and MLflow's artifacts; Ray training on 2 workers, MLflow's registry on SQLite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import yaml

from components.data.versioning import init_project

from .s3_fixtures import moto_endpoint, s3_client, s3_env  # noqa: F401  (fixtures are found by name here)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GANZOO = str(Path(sys.executable).with_name("ganzoo"))


def ganzoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([GANZOO, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _tiny_params(tmp: Path, endpoint: str) -> dict:
    return {
        "data": {"source": "digits", "image_size": 16, "dvc_remote": "s3://ganzoo-dvc/store",
                 "dvc_remote_endpoint_url": endpoint},
        "families": ["dcgan", "cgan"],
        "overrides": {"dcgan": {"g_width": 8, "d_width": 8}},
        "train": {"steps": 4, "batch_size": 16, "workers": 2, "checkpoint_every": 4, "report_every": 1,
                  "sample_every": 4, "storage_path": "s3://ganzoo-runs/runs", "storage_endpoint_url": endpoint},
        "evaluation": {"num_samples": 300, "batch_size": 150, "extractor_epochs": 1, "kid_subsets": 5,
                       "kid_subset_size": 100, "fid_bootstrap": 3},
        "registry": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_location": "s3://ganzoo-mlflow/art",
                     "artifacts_endpoint_url": endpoint,
                     "min_classes_covered": 0},  # 4 steps: too early to judge collapse
    }


@pytest.fixture
def project(tmp_path: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git + DVC project holding ganzoo's dvc.yaml and a tiny params.yaml; Prefect's home in tmp."""
    for name in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "dvc-home" / name.lower()))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for bucket in ("ganzoo-dvc", "ganzoo-runs", "ganzoo-mlflow"):
        s3_client(s3_env).create_bucket(Bucket=bucket)
    root = tmp_path / "project"
    init_project(root)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # dvc.yaml reads paths from the full file
    for section, values in _tiny_params(tmp_path, s3_env).items():
        params[section] = {**params[section], **values} if isinstance(values, dict) else values
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_retrain_flow_versions_trains_evaluates_registers_and_promotes(ray_cluster, project: Path, s3_env: str):
    import mlflow
    from mlflow import MlflowClient

    from flows.retrain import retrain

    rows = retrain(params_path=str(project / "params.yaml"))
    assert [(r["family"], r["status"]) for r in rows] == [("dcgan", "finished"), ("cgan", "finished")], rows
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    data_version = lock["stages"]["prepare"]["outs"][0]["md5"]
    assert data_version.endswith(".dir")
    pushed = s3_client(s3_env).list_objects_v2(Bucket="ganzoo-dvc", Prefix="store/")["KeyCount"]
    assert pushed > 0

    mlflow.set_tracking_uri(f"sqlite:///{project.parent / 'mlflow.db'}")
    client = MlflowClient()
    for row in rows:
        model = f"digits-{row['family']}"
        version = client.get_model_version(model, row["version"])
        assert version.tags["data_version"] == data_version
        assert row["decision"] == "promoted"  # the first version of a model has no champion to beat
        assert str(client.get_model_version_by_alias(model, "champion").version) == row["version"]
        run = client.get_run(version.run_id)
        assert run.data.tags["data_version"] == data_version
        assert run.data.metrics["fid"] == pytest.approx(row["fid"])
    assert (project / "reports" / "cgan" / "losses.png").stat().st_size > 0
    s3 = s3_client(s3_env)
    checkpoints = [o["Key"] for o in s3.list_objects_v2(Bucket="ganzoo-runs")["Contents"]]
    assert any(k.endswith("checkpoint_0000004/COMPLETE") for k in checkpoints)
    assert rows[0]["family"] == "dcgan" and version.tags["checkpoint"].startswith("s3://ganzoo-runs/runs/")
    artifacts = [o["Key"] for o in s3.list_objects_v2(Bucket="ganzoo-mlflow")["Contents"]]
    assert any(k.endswith("MLmodel") for k in artifacts) and any(k.endswith("losses.png") for k in artifacts)

    again = retrain(params_path=str(project / "params.yaml"))  # nothing changed: nothing is trained again
    assert [(r["status"], r["decision"]) for r in again] == [("skipped", "skipped")] * 2, again
    assert yaml.safe_load((project / "dvc.lock").read_text())["stages"]["prepare"]["outs"][0]["md5"] == data_version
    assert s3_client(s3_env).list_objects_v2(Bucket="ganzoo-dvc", Prefix="store/")["KeyCount"] == pushed
    for first, second in zip(rows, again):  # the champion stays, no new version, the skip is recorded on it
        assert second["version"] == first["version"]
        assert len(client.search_model_versions(f"name='digits-{first['family']}'")) == 1
        assert "ganzoo.last_skipped" in client.get_model_version(f"digits-{first['family']}", first["version"]).tags

    forced = retrain(params_path=str(project / "params.yaml"), families=["dcgan"], force=True)
    assert forced[0]["status"] == "finished" and forced[0]["version"] == rows[0]["version"]  # registered once

    # the stages alone, from the command line, on what the flow left behind
    grid = ganzoo("sample", "--model", "models:/digits-cgan@champion", "-n", "20", "--out", "grid.png", cwd=project)
    assert grid.returncode == 0, grid.stderr
    assert Image.open(project / "grid.png").size[0] > 16
    drawn = ganzoo("sample", "--model", "models:/digits-cgan@champion", "-n", "30", "--out", "s.npz", cwd=project)
    assert drawn.returncode == 0, drawn.stderr
    with np.load(project / "s.npz") as arrays:
        assert arrays["images"].shape == (30, 1, 16, 16) and sorted(set(arrays["labels"])) == list(range(10))
    evaluated = ganzoo("evaluate", "--family", "dcgan", cwd=project)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "FID" in evaluated.stdout and "extractor domain-cnn:" in evaluated.stdout
    kept = ganzoo("promote", "--family", "dcgan", cwd=project)
    assert kept.returncode == 0 and "already_champion" in kept.stdout, kept.stdout + kept.stderr
    refused = ganzoo("promote", "--family", "dcgan", "--rollback", cwd=project)
    assert refused.returncode == 2 and "no previous champion" in refused.stderr


def test_run_outside_a_repository_says_what_to_run(tmp_path: Path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    result = ganzoo("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "is not a git/DVC repository: run `git init && dvc init` there, or `ganzoo init`" in result.stderr
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / ".git").exists()
    made = ganzoo("init", cwd=tmp_path)
    assert made.returncode == 0 and "dvc init" in made.stdout, made.stderr
    assert (tmp_path / ".dvc").is_dir() and (tmp_path / ".git").is_dir()
