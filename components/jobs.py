"""Ray Jobs: run the retrain flow as a job on a Ray cluster (`ganzoo submit`, `ganzoo jobs`).

The job's driver runs `ganzoo run` on the head node with the project directory
(git and DVC metadata included, caches and outputs left out) as its working
directory; inside a Ray job, `RAY_ADDRESS` makes `ganzoo run` join that cluster.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path
from typing import Callable

from components.errors import GanzooError

UPLOAD_EXCLUDES = [".venv/", "runs/", "data/", "reports/", "mlartifacts/", "mlruns/", ".ganzoo-cache/", ".dvc-remote/",
                   ".dvc/cache/", ".dvc/tmp/", "*.db", "__pycache__/", ".pytest_cache/", "*.egg-info/"]
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 60  # how long a submission waits for a freshly started head's job agent


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise GanzooError(f"Ray Jobs API at {address}: unreachable ({str(exc).splitlines()[0][:200]})") from None


def retrain_entrypoint(params_file: str, families: list[str], sets: list[str]) -> str:
    """The shell command the job's driver runs."""
    words = ["ganzoo", "run", "--params", params_file]
    for family in families:
        words += ["--family", family]
    for assignment in sets:
        words += ["--set", assignment]
    # Ray's working-dir package drops empty directories, and git needs some (.git/refs/heads);
    # `git init` in an existing repository restores them and leaves its history alone.
    return f"git init --quiet && {shlex.join(words)}"


def pinned_requirements(project_root: Path) -> list[str]:
    """The project's dependencies from pyproject.toml, for a job environment built from a package index."""
    import tomllib

    project = tomllib.loads((project_root / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def submit_retrain(address: str, project_root: Path, params_file: Path, families: list[str], sets: list[str],
                   install: bool = False) -> str:
    """Submit `ganzoo run` as a Ray Job; returns the job id."""
    runtime_env: dict = {"working_dir": str(project_root), "excludes": UPLOAD_EXCLUDES}
    if install:
        runtime_env["pip"] = pinned_requirements(project_root)
    entrypoint = retrain_entrypoint(str(params_file.resolve().relative_to(project_root)), families, sets)
    client = _client(address)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                     metadata={"submitted_by": "ganzoo submit"})
        except RuntimeError as exc:
            # A head that has just started answers before its job agent has registered
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def job_status(address: str, job_id: str) -> str:
    return str(_job_call(address, job_id, "get_job_status")).rsplit(".", 1)[-1]


def job_logs(address: str, job_id: str) -> str:
    return _job_call(address, job_id, "get_job_logs")


def stop_job(address: str, job_id: str) -> bool:
    return bool(_job_call(address, job_id, "stop_job"))


def _job_call(address: str, job_id: str, method: str):
    client = _client(address)
    try:
        return getattr(client, method)(job_id)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            raise GanzooError(f"Ray job {job_id!r}: no such job at {address}") from None
        raise


def follow_logs(address: str, job_id: str, write: Callable[[str], None]) -> str:
    """Stream the job's log lines until it ends; returns its final status."""
    client = _client(address)

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            write(lines)

    asyncio.run(tail())
    return job_status(address, job_id)
