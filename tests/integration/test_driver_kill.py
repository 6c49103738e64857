"""The flow's driver killed between training and registration: running `retrain` again resumes without
training the family again, registers exactly one version, and promotes it once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow import MlflowClient

from .test_translation_flow import make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

GANZOO = str(Path(sys.executable).with_name("ganzoo"))


def kill_tree(root: psutil.Process) -> None:
    """SIGKILL a process and everything it started (its Ray cluster, its Prefect server)."""
    try:
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


def test_a_rerun_after_the_driver_died_registers_the_trained_run_once(ray_cluster, tmp_path, monkeypatch):
    from flows.retrain import retrain

    project = make_project(tmp_path, monkeypatch, "mnist5k", ["gan"],
                           {"steps": 4, "batch_size": 16, "checkpoint_every": 2, "sample_every": 4})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["registry"]["min_classes_covered"] = 0  # 4 steps: too early to judge collapse
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    training_file = project / "reports" / "gan" / "training.json"

    # the driver joins this session's cluster, as a flow joins a real one: the cluster outlives the driver
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    driver = subprocess.Popen([GANZOO, "run"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 420
    try:
        while not training_file.is_file():  # written when the train stage ends; evaluation comes next
            assert driver.poll() is None, f"the driver ended before training finished: {driver.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "training did not finish within 420 s"
            time.sleep(0.1)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        kill_tree(psutil.Process(driver.pid)) if psutil.pid_exists(driver.pid) else None
        driver.wait(timeout=60)
    first = json.loads(training_file.read_text())
    assert first["status"] == "finished" and first["step"] == 4
    assert not (project / "reports" / "gan" / "registry.json").exists()  # killed before registration

    rows = retrain(params_path=str(project / "params.yaml"))
    assert [(r["family"], r["status"], r["version"], r["decision"]) for r in rows] == \
        [("gan", "finished", "1", "promoted")], rows
    again = json.loads(training_file.read_text())
    assert again["checkpoint"] == first["checkpoint"] and again["metrics"]["start_step"] == 4  # not trained again

    # a third run after a crash between registration and promotion finds the same version: nothing new
    (project / "reports" / "gan" / "registry.json").unlink()
    rows = retrain(params_path=str(project / "params.yaml"), force=True)
    assert [(r["version"], r["decision"]) for r in rows] == [("1", "already_champion")], rows
    uri = params["registry"]["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.search_model_versions("name = 'mnist5k-gan'")
    assert [str(v.version) for v in found] == ["1"]
    assert str(client.get_model_version_by_alias("mnist5k-gan", "champion").version) == "1"
    runs = client.search_runs([client.get_experiment_by_name("ganzoo").experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]  # the run is logged once too
