"""Two Ray nodes on this machine: `placement: spread` puts the workers on different nodes,
and checkpoints land on S3 (a moto server on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .s3_fixtures import moto_endpoint, s3_client, s3_env  # noqa: F401  (fixtures are found by name here)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GANZOO = str(Path(sys.executable).with_name("ganzoo"))


@pytest.fixture
def two_node_cluster(s3_env: str):
    """A head and a worker node, one CPU each; started after s3_env so its raylets see the S3 credentials."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_spread_workers_run_on_two_nodes_and_checkpoint_to_s3(two_node_cluster, s3_env: str, tmp_path: Path):
    s3 = s3_client(s3_env)
    s3.create_bucket(Bucket="ganzoo-runs")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    result = subprocess.run(
        [GANZOO, "train", "--family", "dcgan", "--steps", "4", "--workers", "2", "--no-progress",
         "--ray-address", two_node_cluster.address,
         "--set", "train.placement=strict_spread", "--set", "train.batch_size=16",
         "--set", "train.checkpoint_every=2", "--set", "train.storage_path=s3://ganzoo-runs/runs",
         "--set", f"train.storage_endpoint_url={s3_env}", "--set", f"data.prepared_dir={tmp_path / 'prepared'}",
         "--set", "data.source=digits", "--set", "data.image_size=16"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ganzoo-runs", Prefix="runs/")["Contents"]]
    final = [k for k in keys if k.endswith("checkpoint_0000004/config.json")]
    assert final, keys
    assert any(k.endswith("checkpoint_0000004/COMPLETE") for k in keys)
    meta = json.loads(s3.get_object(Bucket="ganzoo-runs", Key=final[0])["Body"].read())
    nodes = meta["worker_nodes"]
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes  # one worker on each node
    alive = {node["NodeID"] for node in _nodes(two_node_cluster.address)}
    assert set(nodes) <= alive


def _nodes(address: str) -> list[dict]:
    """The cluster's nodes, read in a separate process (this one may hold another Ray connection)."""
    script = f"import json, ray; ray.init(address={address!r}); print(json.dumps(ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
