"""One local Ray cluster for the whole test session: starting Ray costs seconds."""

import os

import pytest

from components.config import load_params
from components.data import load_prepared, prepare_dataset

from .s3_fixtures import aws_session_env  # noqa: F401  (a fixture, found by name)


@pytest.fixture(scope="session")
def ray_cluster(aws_session_env):
    """Started inside the fake AWS environment, so its workers can write checkpoints to moto."""
    import ray

    from components.training.launcher import ensure_ray

    ensure_ray(None)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mnist_prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "mnist5k"
    prepare_dataset("mnist5k", out)
    return load_prepared(out)


@pytest.fixture
def make_params(tmp_path):
    """Params for a short run on 2 workers with everything written under tmp_path."""

    def build(*sets: str):
        base = [f"train.storage_path={tmp_path / 'runs'}", f"data.prepared_dir={tmp_path / 'prepared'}",
                "train.workers=2", "train.batch_size=16", "train.report_every=1"]
        return load_params(os.path.join(os.path.dirname(__file__), "..", "..", "params.yaml"), base + list(sets))

    return build
