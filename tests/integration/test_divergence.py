"""A family that diverges or collapses: the run is failed with its reason, nothing is registered, the champion
is untouched, and the other families of the flow carry on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from components import pipeline
from components.config import load_params
from components.data import prepare_dataset
from components.errors import DivergedError

from .test_translation_flow import make_project

pytestmark = pytest.mark.integration


def set_params(project: Path, **changes) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(params))


def registry_of(project: Path) -> MlflowClient:
    uri = yaml.safe_load((project / "params.yaml").read_text())["registry"]["tracking_uri"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions(client: MlflowClient, model: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{model}'"))


@pytest.mark.slow
@pytest.mark.chaos
def test_a_diverging_family_registers_nothing_and_leaves_its_champion(ray_cluster, tmp_path, monkeypatch):
    from flows.retrain import retrain

    project = make_project(tmp_path, monkeypatch, "mnist5k", ["gan", "wgan_gp"],
                           {"steps": 3, "batch_size": 16, "checkpoint_every": 3, "sample_every": 3})
    set_params(project, registry__min_classes_covered=0)  # 3 steps: too early to judge collapse
    first = retrain(params_path=str(project / "params.yaml"))
    assert [(r["family"], r["status"], r["version"]) for r in first] == [("gan", "finished", "1"),
                                                                          ("wgan_gp", "finished", "1")], first
    client = registry_of(project)
    champion = client.get_model_version_by_alias("mnist5k-wgan_gp", "champion").version

    # a penalty weight beyond float32's range makes the critic loss infinite at the first step
    set_params(project, overrides__wgan_gp={"gp_weight": 1.0e39})
    state = retrain(params_path=str(project / "params.yaml"), force=True, return_state=True)
    assert state.is_failed() and "1 of 2 families failed: wgan_gp (train: wgan_gp: training diverged: diverged at " \
                                 "step 1: non-finite loss d_loss=" in state.message
    rows = {r["family"]: r for r in state.result(raise_on_failure=False)}
    assert rows["wgan_gp"]["status"] == "diverged" and rows["wgan_gp"]["failed_stage"] == "train"
    assert rows["wgan_gp"]["version"] == ""
    # the other family carried on: same data, params and seed, so the same version (registration is idempotent)
    assert rows["gan"]["status"] == "finished" and rows["gan"]["version"] == "1"
    assert versions(client, "mnist5k-wgan_gp") == ["1"]
    assert client.get_model_version_by_alias("mnist5k-wgan_gp", "champion").version == champion
    training = json.loads((project / "reports" / "wgan_gp" / "training.json").read_text())
    assert training["status"] == "diverged" and not training["checkpoint"]


def test_a_collapsed_generator_is_refused_before_anything_reaches_the_registry(tmp_path):
    prepare_dataset("mnist5k", tmp_path / "prepared")
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml",
                         [f"data.prepared_dir={tmp_path / 'prepared'}", f"evaluation.reports_dir={tmp_path / 'reports'}",
                          f"registry.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    reports = tmp_path / "reports" / "dcgan"
    reports.mkdir(parents=True)
    (reports / "training.json").write_text(json.dumps({"status": "finished", "checkpoint": str(tmp_path / "none")}))
    (reports / "metrics.json").write_text(json.dumps({"metrics": {"fid": 300.0, "fid_std": 1.0, "kid": 1.0,
                                                                  "kid_std": 0.1, "classes_covered": 1.0}}))
    with pytest.raises(DivergedError, match=r"^dcgan: not registered: diverged: the generator collapsed: its samples "
                                            r"cover 1 of 10 classes \(registry.min_classes_covered is 2\)$"):
        pipeline.register_stage(params, "dcgan")
    assert not (tmp_path / "mlflow.db").exists() and not (reports / "registry.json").exists()
    summary = pipeline.summary_row("dcgan", {}, failed_stage="register",
                                   reason="dcgan: not registered: diverged: the generator collapsed")
    assert summary["status"] == "diverged"
