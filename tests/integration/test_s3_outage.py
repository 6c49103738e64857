"""The S3 endpoint stops answering while checkpoints upload: requests are retried with backoff, then the run
fails with a reason; once the store is back the run resumes from the last complete checkpoint, never from a
partly written one."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from components.training import launcher
from components.training.launcher import train_family

from .s3_fixtures import isolate_aws_environment, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

BUCKET = "ganzoo-outage"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stoppable_s3(tmp_path, monkeypatch, tmp_path_factory):
    """A moto S3 server in its own process, so the test can freeze it (SIGSTOP) and thaw it (SIGCONT)."""
    isolate_aws_environment(monkeypatch, tmp_path_factory)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "moto.log", "w"))
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto did not start"
            time.sleep(0.2)
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    yield server, endpoint
    server.send_signal(signal.SIGCONT)
    server.terminate()
    server.wait(timeout=30)


def checkpoint_steps(endpoint: str, run: str) -> tuple[set[int], set[int]]:
    """(steps of every checkpoint folder in the bucket, steps of those with their COMPLETE marker)."""
    keys = [o["Key"] for page in s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    folders = {k.split("/")[2] for k in keys if k.startswith(f"runs/{run}/checkpoint_")}
    complete = {k.split("/")[2] for k in keys if k.startswith(f"runs/{run}/checkpoint_") and k.endswith("/COMPLETE")}
    step = lambda name: int(name.removeprefix("checkpoint_"))  # noqa: E731
    return {step(f) for f in folders}, {step(f) for f in complete}


def test_a_frozen_store_fails_the_run_and_resume_uses_only_complete_checkpoints(ray_cluster, mnist_prepared,
                                                                                 make_params, stoppable_s3,
                                                                                 monkeypatch):
    server, endpoint = stoppable_s3
    # short timeouts and few attempts, so the frozen store fails the run in seconds, not minutes
    monkeypatch.setattr(launcher, "S3_ATTEMPTS", 2)
    monkeypatch.setattr(launcher, "S3_CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(launcher, "S3_REQUEST_TIMEOUT_S", 2.0)
    sets = (f"train.storage_path=s3://{BUCKET}/runs", f"train.storage_endpoint_url={endpoint}",
            "train.checkpoint_every=10", "train.report_every=5", "train.max_failures=1")
    box: dict = {}
    runner = threading.Thread(target=lambda: box.setdefault("outcome", train_family(
        make_params("train.steps=2000", *sets), "dcgan", mnist_prepared, run_name="frozen", show_progress=False)))
    runner.start()
    deadline = time.monotonic() + 300
    while not checkpoint_steps(endpoint, "frozen")[1]:
        assert runner.is_alive() and time.monotonic() < deadline, box
        time.sleep(0.5)
    server.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    runner.join(timeout=600)
    assert not runner.is_alive(), "the run hung on the frozen store"
    failed = box["outcome"]
    assert failed.status == "failed" and failed.reason.startswith("training failed: ") and "\n" not in failed.reason
    assert "AWS Error" in failed.reason or BUCKET in failed.reason, failed.reason  # says what failed
    took = time.monotonic() - frozen_at

    server.send_signal(signal.SIGCONT)
    folders, complete = checkpoint_steps(endpoint, "frozen")
    assert complete, (folders, complete)
    resumed = train_family(make_params(f"train.steps={max(complete) + 10}", *sets), "dcgan", mnist_prepared,
                           run_name="frozen", show_progress=False)
    assert resumed.ok, resumed.reason
    # resumed from a complete checkpoint (a partly written one has no COMPLETE marker and is never read)
    assert resumed.metrics["start_step"] in complete, (resumed.metrics["start_step"], folders, complete)
    assert resumed.step == max(complete) + 10
    print(f"frozen store: the run failed {took:.0f} s later ({failed.reason[:160]}); checkpoints {sorted(folders)}, "
          f"complete {sorted(complete)}; resumed from step {resumed.metrics['start_step']}")
