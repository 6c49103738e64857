"""A real MLflow SQLite registry in tmp_path (no server): log, register, promote, roll back, load, race.

Tiny dcgan and cgan checkpoints stand in for trained ones; the evaluation
reports are written by hand so the gate's inputs are known.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import Params, validate_params
from components.data import save_image_grid
from components.errors import GanzooError
from components.families import DataSpec, build_family, get_family
from components.registry import promotion
from components.registry.models import generate_from_registry
from components.registry.promotion import Measurement, promote_version, rollback
from components.registry.register import register_version
from components.registry.runs import LoggedRun, log_family_run
from components.training.checkpoint import HISTORY_FILE, TrainingState, save_checkpoint
from components.training.sampling import sample_from_checkpoint

pytestmark = pytest.mark.integration

DATA_VERSION = "0123456789abcdef.dir"
EXTRACTOR = "domain-cnn:ab12cd34ef56ab12"
SPECS = {"dcgan": DataSpec(1, 28, 10), "cgan": DataSpec(1, 28, 10)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained-looking checkpoint of dcgan and cgan, with a loss history and a sample grid."""
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for family, spec in SPECS.items():
        torch.manual_seed(0)
        fam = build_family(family, spec, get_family(family).tiny)
        directory = save_checkpoint(root / family, fam, fam.build_optimizers(), TrainingState(step=5),
                                    extra={"data_hash": "x"})
        history = [{"step": s, "d_loss": 1.0 / s, "g_loss": 2.0 + s} for s in range(1, 6)]
        (directory / HISTORY_FILE).write_text(json.dumps(history))
        save_image_grid(torch.zeros(4, 1, 28, 28), directory / "samples.png")
        made[family] = directory
    return made


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The SQLite file of a fresh registry; file locks in tmp_path too."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GANZOO_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path / "mlflow.db"


def make_params(store: Path, **data) -> Params:
    return validate_params({"data": {"source": "mnist5k", **data}, "train": {"steps": 5, "seed": 0},
                            "registry": {"tracking_uri": f"sqlite:///{store}", "noise_sigmas": 2.0}})


def report(fid: float, fid_std: float = 0.1, num_samples: int = 300, extractor: str = EXTRACTOR) -> dict:
    return {"metrics": {"fid": fid, "fid_std": fid_std, "kid": fid / 1000, "kid_std": 0.0001, "precision": 0.5,
                        "recall": 0.4, "classes_covered": 10.0},
            "extractor": extractor,
            "protocol": {"extractor": extractor, "data_version": DATA_VERSION, "num_samples": num_samples,
                         "seed": 0}}


def training(params: Params, family: str, checkpoint: Path, seed: int) -> dict:
    return {"family": family, "status": "finished", "run_name": f"{family}-run{seed}", "run_path": str(checkpoint),
            "checkpoint": str(checkpoint), "step": 5, "data_version": DATA_VERSION,
            "params_hash": params.params_hash(family), "seed": seed, "dataset": "mnist5k"}


def retrain(params: Params, family: str, checkpoint: Path, seed: int, evaluation: dict,
            artifacts: list[Path] = ()) -> tuple[LoggedRun, str]:
    """What the flow's register stage does for one family: log the run, register its generator."""
    record = training(params, family, checkpoint, seed)
    run = log_family_run(params, family, record, evaluation, artifacts=list(artifacts))
    return run, register_version(params, family, record, evaluation, run)


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def version_tags(model: str, version: str) -> dict[str, str]:
    return client().get_model_version(model, version).tags


def aliases(model: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client().get_registered_model(model).aliases.items()}


def champion(model: str) -> str | None:
    return aliases(model).get("champion")


def test_logs_one_run_and_registers_one_version_per_key(store: Path, checkpoints, tmp_path: Path):
    params = make_params(store)
    grid = checkpoints["dcgan"] / "samples.png"
    evaluation_file = tmp_path / "metrics.json"
    evaluation_file.write_text(json.dumps(report(30.0)))
    run, version = retrain(params, "dcgan", checkpoints["dcgan"], 0, report(30.0), [grid, evaluation_file])
    assert (run.reused, run.latent_dim, run.num_classes, run.image_shape) == (False, 100, 0, (1, 28, 28))

    logged = client().get_run(run.run_id)
    assert logged.info.artifact_uri.startswith(tmp_path.as_uri())  # nothing written into the repository
    assert logged.data.params["train.steps"] == "5" and logged.data.params["family.z_dim"] == "100"
    assert logged.data.params["overrides"] == "{}" and "data.s3_endpoint_url" in logged.data.params
    assert logged.data.metrics["fid"] == 30.0
    losses = client().get_metric_history(run.run_id, "train/g_loss")
    assert [(m.step, m.value) for m in losses] == [(s, 2.0 + s) for s in range(1, 6)]
    tags = logged.data.tags
    for key in ("data_version", "git_commit", "params_hash", "extractor", "family", "dataset", "seed",
                "checkpoint", "training_run", "ganzoo.key"):
        assert tags[key], key
    assert tags["mlflow.runName"] == "dcgan-run0"
    artifacts = {a.path for a in client().list_artifacts(run.run_id)}
    assert {"samples.png", "metrics.json", "evaluation"} <= artifacts

    model = "mnist5k-dcgan"
    mv_tags = version_tags(model, version)
    for key in ("data_version", "params_hash", "git_commit", "extractor", "protocol.extractor",
                "protocol.data_version", "protocol.num_samples", "protocol.seed", "fid", "fid_std", "kid", "kid_std",
                "checkpoint", "run_id", "ganzoo.key"):
        assert key in mv_tags, key
    assert (mv_tags["run_id"], mv_tags["ganzoo.key"], float(mv_tags["fid"])) == (run.run_id, run.key, 30.0)
    assert aliases(model) == {"challenger": version}

    again, same = retrain(params, "dcgan", checkpoints["dcgan"], 0, report(30.0))  # a re-run after a crash
    assert (again.reused, again.run_id, same) == (True, run.run_id, version)
    assert len(client().search_model_versions(f"name = '{model}'")) == 1
    assert len(client().search_runs([logged.info.experiment_id])) == 1


def test_conditional_generator_registers_and_generates_balanced_classes(store: Path, checkpoints):
    params = make_params(store)
    run, version = retrain(params, "cgan", checkpoints["cgan"], 0, report(40.0))
    assert (run.latent_dim, run.num_classes) == (100, 10)
    assert promote_version(params, "mnist5k-cgan", version)["decision"] == "promoted"

    images, labels = generate_from_registry("models:/mnist5k-cgan@champion", 17, seed=3)
    assert images.shape == (17, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= -1 and images.max() <= 1
    assert labels.tolist() == [i % 10 for i in range(17)]
    expected, expected_labels = sample_from_checkpoint(checkpoints["cgan"], 17, seed=3)
    np.testing.assert_allclose(images, expected, atol=1e-5)  # the registered model is the checkpoint's generator
    assert expected_labels.tolist() == labels.tolist()


def test_champion_loads_with_mlflow_pytorch_for_any_batch_size(store: Path, checkpoints):
    import mlflow.pytorch

    params = make_params(store)
    _, version = retrain(params, "dcgan", checkpoints["dcgan"], 0, report(30.0))
    promote_version(params, "mnist5k-dcgan", version)
    generator = mlflow.pytorch.load_model("models:/mnist5k-dcgan@champion")
    with torch.no_grad():
        for n in (3, 17):
            assert tuple(generator(torch.randn(n, 100)).shape) == (n, 1, 28, 28)
    images, labels = generate_from_registry("models:/mnist5k-dcgan@champion", 5)
    assert images.shape == (5, 1, 28, 28) and labels is None
    np.testing.assert_allclose(images, sample_from_checkpoint(checkpoints["dcgan"], 5)[0], atol=1e-5)
    for missing in ("models:/mnist5k-dcgan@nope", "models:/no-such-model@champion"):
        with pytest.raises(GanzooError) as error:
            generate_from_registry(missing, 2)
        assert missing in str(error.value) and "\n" not in str(error.value)


def test_gate_promotes_better_keeps_worse_and_rolls_back(store: Path, checkpoints):
    params = make_params(store)
    model, ckpt = "mnist5k-dcgan", checkpoints["dcgan"]
    versions = {fid: retrain(params, "dcgan", ckpt, seed, report(fid))[1]
                for seed, fid in enumerate((30.0, 20.0, 25.0, 19.9))}
    first, better, worse, close = versions[30.0], versions[20.0], versions[25.0], versions[19.9]

    assert promote_version(params, model, first)["decision"] == "promoted"
    outcome = promote_version(params, model, better)
    assert outcome == {"decision": "promoted", "reason": outcome["reason"], "promoted": True, "champion": better}
    assert champion(model) == better
    assert version_tags(model, better)["ganzoo.previous_champion"] == first

    outcome = promote_version(params, model, worse)
    assert (outcome["decision"], outcome["champion"]) == ("kept_challenger", better)
    tags = version_tags(model, worse)
    assert tags["ganzoo.decision"] == "kept_challenger" and tags["ganzoo.reason"].startswith("worse")
    assert "25.000" in tags["ganzoo.reason"] and "20.000" in tags["ganzoo.reason"]
    assert aliases(model)["challenger"] == close  # the latest registered

    within = promote_version(params, model, close)  # gain 0.1 < 2 x sqrt(0.1² + 0.1²) = 0.283
    assert within["decision"] == "kept_challenger" and within["reason"].startswith("within noise")
    assert promote_version(params, model, better)["decision"] == "already_champion"

    restored = rollback(params, model)
    assert restored == {"model": model, "version": first, "rolled_back_from": better}
    assert champion(model) == first
    assert version_tags(model, first)["ganzoo.rolled_back_from"] == better
    with pytest.raises(GanzooError, match="no previous champion"):
        rollback(params, model)
    again = promote_version(params, model, better)  # a retrain re-run must not undo the rollback
    assert again["decision"] == "kept_challenger" and "rolled back" in again["reason"]
    assert promote_version(params, model, better, force=True)["decision"] == "promoted"


def test_gate_refuses_to_compare_across_protocols_until_the_champion_is_remeasured(store: Path, checkpoints):
    params = make_params(store)
    model, ckpt = "mnist5k-dcgan", checkpoints["dcgan"]
    _, old = retrain(params, "dcgan", ckpt, 0, report(30.0, num_samples=300))
    _, new = retrain(params, "dcgan", ckpt, 1, report(28.0, num_samples=5000))
    promote_version(params, model, old)
    refused = promote_version(params, model, new)
    assert refused["decision"] == "remeasure_champion" and "num_samples 5000 vs 300" in refused["reason"]
    assert champion(model) == old and refused["champion_checkpoint"] == str(ckpt)
    remeasured = promotion.measurement_from_report(old, report(27.0, num_samples=5000))
    assert promote_version(params, model, new, champion=remeasured)["decision"] == "kept_challenger"
    remeasured = Measurement(old, 35.0, 0.1, 0.035, 0.0001, remeasured.protocol)
    assert promote_version(params, model, new, champion=remeasured)["decision"] == "promoted"


def test_no_credentials_reach_mlflow(store: Path, checkpoints, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-not-a-real-secret")
    params = make_params(store, s3_endpoint_url="http://alice:hunter2@127.0.0.1:9000",
                         dvc_remote_endpoint_url="wJalrXUtnFEMI-not-a-real-secret")
    run, version = retrain(params, "dcgan", checkpoints["dcgan"], 0, report(30.0))
    logged = client().get_run(run.run_id).data
    recorded = {**logged.params, **logged.tags, **version_tags("mnist5k-dcgan", version)}
    text = json.dumps(recorded)
    assert "hunter2" not in text and "alice" not in text and "wJalrXUtnFEMI" not in text
    assert logged.params["data.s3_endpoint_url"] == "http://127.0.0.1:9000"
    assert not [key for key in recorded if any(w in key.lower() for w in ("secret", "password", "token"))]


def _promote_when_released(tracking_db: str, lock_dir: str, version: str, barrier, results) -> None:
    import os

    os.environ["GANZOO_LOCK_DIR"] = lock_dir
    params = make_params(Path(tracking_db))
    promotion.client_for(params.registry)  # import and connect before the race starts
    barrier.wait()
    results.put((version, promote_version(params, "mnist5k-dcgan", version)))


def test_two_processes_promoting_at_once_end_with_one_champion_the_better(store: Path, checkpoints, tmp_path):
    params = make_params(store)
    _, worse = retrain(params, "dcgan", checkpoints["dcgan"], 0, report(30.0))
    _, better = retrain(params, "dcgan", checkpoints["dcgan"], 1, report(10.0))
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    workers = [spawn.Process(target=_promote_when_released, args=(str(store), str(tmp_path / "locks"), v, barrier,
                                                                  results)) for v in (worse, better)]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert champion("mnist5k-dcgan") == better
    assert outcomes[better]["decision"] == "promoted"
    assert outcomes[worse]["decision"] in ("promoted", "kept_challenger")  # depends on who won the lock
    for version in (worse, better):
        assert version_tags("mnist5k-dcgan", version)["ganzoo.decision"] == outcomes[version]["decision"]
