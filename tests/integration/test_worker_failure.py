"""A Ray Train worker killed mid-run: Ray restarts the group and training resumes from the last checkpoint."""

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from components.training.checkpoint import read_history
from components.training.launcher import train_family

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]


def _train_worker_pids() -> list[int]:
    """Ray Train workers of this test session's cluster (its raylet is our child), not of any other on the host."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any("RayTrainWorker" in part for part in proc.info["cmdline"] or []):
            try:
                if any(parent.pid == os.getpid() for parent in proc.parents()):
                    found.append(proc.info["pid"])
            except psutil.NoSuchProcess:
                pass
    return found


def _wait_for(path_glob: Path, pattern: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not list(path_glob.glob(pattern)):
        assert time.monotonic() < deadline, f"no {pattern} under {path_glob} within {timeout} s"
        time.sleep(0.2)


def test_killed_worker_restarts_from_the_last_checkpoint(ray_cluster, mnist_prepared, make_params, tmp_path):
    params = make_params("train.steps=300", "train.checkpoint_every=20", "train.report_every=5", "train.max_failures=2")
    box: dict = {}
    runner = threading.Thread(target=lambda: box.setdefault(
        "outcome", train_family(params, "dcgan", mnist_prepared, run_name="killed", show_progress=False)))
    runner.start()
    _wait_for(tmp_path / "runs", "killed/checkpoint_0000040/COMPLETE", timeout=240)
    time.sleep(2)  # let the controller register the checkpoint before the fault
    victims = _train_worker_pids()
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)
    runner.join(timeout=400)
    assert not runner.is_alive(), "training did not finish after the worker was killed"

    outcome = box["outcome"]
    assert outcome.ok, outcome.reason
    assert outcome.step == 300
    assert outcome.metrics["start_step"] >= 20  # resumed from a checkpoint, not from step 0
    steps = [row["step"] for row in read_history(outcome.checkpoint)]
    assert steps == list(range(5, 301, 5))  # one history across the restart, no step twice
