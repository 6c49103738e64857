"""The MLflow store unavailable at registration: retried with backoff, then the flow fails with one clear line
that keeps the trained checkpoint, and `ganzoo register --run` registers it once the store is back."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from components.training.checkpoint import COMPLETE_FILE

from .test_translation_flow import make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

GANZOO = str(Path(sys.executable).with_name("ganzoo"))


class ExclusiveLock:
    """Holds SQLite's exclusive lock on a database once ``trigger`` exists: every other connection is then
    refused with "database is locked", as behind a long migration or a stuck writer."""

    def __init__(self, database: Path, trigger: Path):
        self.database, self.trigger = database, trigger
        self.held, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        while not self.trigger.is_file() and not self.release.is_set():
            time.sleep(0.05)
        connection = sqlite3.connect(self.database, isolation_level=None, timeout=60)
        connection.execute("BEGIN EXCLUSIVE")
        self.held.set()
        self.release.wait()
        connection.execute("ROLLBACK")
        connection.close()


def test_a_locked_store_fails_registration_clearly_and_register_run_recovers(ray_cluster, tmp_path, monkeypatch):
    from components.registry import tracking
    from flows.retrain import retrain

    monkeypatch.setattr(tracking, "ATTEMPTS", 2)  # two tries with backoff, not four: the test's time
    project = make_project(tmp_path, monkeypatch, "mnist5k", ["gan"],
                           {"steps": 3, "batch_size": 16, "checkpoint_every": 3, "sample_every": 3})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["registry"]["min_classes_covered"] = 0  # 3 steps: too early to judge collapse
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    database = tmp_path / "mlflow.db"
    lock = ExclusiveLock(database, project / "reports" / "gan" / "training.json")
    lock.thread.start()
    try:
        started = time.monotonic()
        state = retrain(params_path=str(project / "params.yaml"), return_state=True)
        took = time.monotonic() - started
    finally:
        lock.release.set()
        lock.thread.join(timeout=60)
    assert lock.held.is_set(), "the store was never locked"
    assert state.is_failed(), state
    (row,) = state.result(raise_on_failure=False)
    assert row["status"] == "failed" and row["failed_stage"] == "register" and row["version"] == ""
    reason = row["reason"]
    assert reason.startswith(f"MLflow store sqlite:///{database}: ") and "after 2 attempts" in reason, reason
    assert "database is locked" in reason and "\n" not in reason
    training = json.loads((project / "reports" / "gan" / "training.json").read_text())
    assert f"the trained checkpoint is kept: `ganzoo register --run {training['run_name']}`" in reason
    assert (Path(training["checkpoint"]) / COMPLETE_FILE).is_file()
    assert took < 600, took  # retried a bounded number of times, not for ever

    registered = subprocess.run([GANZOO, "register", "--run", training["run_name"]], cwd=project,
                                capture_output=True, text=True, timeout=600)
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.strip().startswith("mnist5k-gan version 1: promoted"), registered.stdout
    again = subprocess.run([GANZOO, "register", "--run", training["run_name"]], cwd=project,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "mnist5k-gan version 1: already_champion" in again.stdout, again.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{database}", registry_uri=f"sqlite:///{database}")
    assert [str(v.version) for v in client.search_model_versions("name = 'mnist5k-gan'")] == ["1"]

    unknown = subprocess.run([GANZOO, "register", "--run", "gan-nope"], cwd=project, capture_output=True,
                             text=True, timeout=600)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert f"--run gan-nope: no training record of that run under" in unknown.stderr
    assert training["run_name"] in unknown.stderr
