"""One real `retrain` flow run over the noise-to-image zoo (issue 5's families together), on 2 Ray workers.

Each family trains a few steps at its default size on mnist5k (28 px), is
evaluated by the pipeline's evaluator (with its own task metrics), registered
and promoted. This is also these families' smoke test on real Ray workers:
tests/integration/test_train_on_ray.py leaves them out rather than train them twice.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from components.data.versioning import init_project

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.zoo]

REPO = Path(__file__).resolve().parents[2]
ZOO = ["wgan", "lsgan", "ebgan", "began", "pggan", "stylegan", "acgan", "infogan", "sgan", "bigan", "gan_t2i"]
TASK_METRICS = {"infogan": {"code_class_nmi"}, "sgan": {"classifier_accuracy", "supervised_baseline_accuracy"},
                "bigan": {"reconstruction_mse", "linear_probe_accuracy"}, "acgan": {"conditional_accuracy"},
                "gan_t2i": {"conditional_accuracy"}}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "dvc-home" / name.lower()))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "project"
    init_project(root)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["families"] = ZOO
    params["train"].update({"steps": 3, "batch_size": 16, "workers": 2, "checkpoint_every": 3, "sample_every": 3})
    params["evaluation"].update({"num_samples": 200, "batch_size": 100, "extractor_epochs": 1, "kid_subsets": 3,
                                 "kid_subset_size": 50, "fid_bootstrap": 2})
    params["registry"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params["registry"]["min_classes_covered"] = 0  # 3 steps: too early to judge collapse
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_every_noise_to_image_family_trains_evaluates_and_registers_in_one_flow(ray_cluster, project: Path):
    from flows.retrain import retrain

    rows = retrain(params_path=str(project / "params.yaml"))
    assert [(r["family"], r["status"]) for r in rows] == [(f, "finished") for f in ZOO], rows
    for row in rows:
        assert row["version"] and math.isfinite(row["fid"]), row
        reports = project / "reports" / row["family"]
        assert (reports / "samples.png").stat().st_size > 0 and (reports / "losses.png").stat().st_size > 0
        metrics = json.loads((reports / "metrics.json").read_text())["metrics"]
        assert TASK_METRICS.get(row["family"], set()) <= set(metrics), (row["family"], sorted(metrics))
        assert all(math.isfinite(v) for v in metrics.values()), (row["family"], metrics)
    # eleven families on 2 CPUs, queued for Ray's resources: each finished once and was registered once
    uri = yaml.safe_load((project / "params.yaml").read_text())["registry"]["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for family in ZOO:
        assert [str(v.version) for v in client.search_model_versions(f"name = 'mnist5k-{family}'")] == ["1"], family
