"""A real search on Ray Tune: 2 dcgan trials of 2 Ray Train workers, evaluated at 2 marks, ASHA deciding between."""

from pathlib import Path

import pytest
import yaml

from components import tuning
from components.tuning import TrialStatus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUDGET_S = 4.0


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GANZOO_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path / "mlflow.db"


def small_evaluation(tmp_path: Path) -> list[str]:
    return [f"evaluation.cache_dir={tmp_path / 'cache'}", "evaluation.num_samples=500", "evaluation.extractor_epochs=1",
            "evaluation.kid_subsets=5", "evaluation.kid_subset_size=100", "evaluation.fid_bootstrap=2"]


# Each mark starts a Ray Train job, and the 2 cores may be shared: minutes on a busy machine, not seconds
@pytest.mark.timeout(1800)
def test_a_two_trial_search_logs_nested_runs_and_prints_a_block_to_paste(ray_cluster, mnist_prepared, make_params,
                                                                         store, tmp_path):
    from mlflow import MlflowClient

    sets = [f"registry.tracking_uri=sqlite:///{store}", *small_evaluation(tmp_path)]
    params = make_params(*tuning.search_assignments(sets, BUDGET_S))  # batch 16 per worker, 2 workers
    space = tuning.build_space([], "dcgan", params, fixed={"train.batch_size"})  # the default: dcgan's lr
    plan = tuning.make_plan(params, "dcgan", space, trials=2, rungs=2)
    lines: list[str] = []
    outcome = tuning.run_search(params, plan, mnist_prepared, f"sha256:{mnist_prepared.data_hash()[:32]}",
                                lines.append)

    first, second = outcome.records
    assert first.status is TrialStatus.COMPLETED and len(first.values) == 2, first  # nothing to compare it with
    # ASHA's decision at mark 1, with one earlier trial and reduction factor 2: stop the second iff it is worse
    worse = second.values[0] > first.values[0]
    assert second.status is (TrialStatus.STOPPED if worse else TrialStatus.COMPLETED), (first, second)
    assert len(second.values) == (1 if worse else 2)

    report = tuning.render_report(outcome)
    rows = tuning.table_rows(outcome.records, plan)
    assert [row[2] for row in rows] == [f"{len(r.values)}/2" for r in outcome.records]
    assert rows[1][4] == ("stopped early by ASHA at mark 1/2" if worse else "completed")
    assert all(" ".join(row[:3]) in " ".join(line.split()) for row, line in
               zip(rows, report.splitlines()[2:4])), report
    block = yaml.safe_load(report.partition("best configuration (paste into params.yaml):\n")[2])
    best_lr = block["overrides"]["dcgan"]["lr"]
    assert outcome.best is not None and best_lr == pytest.approx(outcome.best.config["overrides.dcgan.lr"], rel=1e-2)
    assert 2e-4 <= best_lr <= 3.2e-3

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("ganzoo-tune")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outcome.parent_run_id]
    assert [p.info.run_id for p in parents] == [outcome.parent_run_id] and len(children) == 2
    assert parents[0].data.params["tune.space.lr"] == "loguniform:0.0002:0.0032"
    for record in outcome.records:
        child = next(c for c in children if c.info.run_id == record.run_id)
        history = sorted(client.get_metric_history(record.run_id, "fid"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == list(enumerate(record.values, start=1))
        assert child.data.tags["ganzoo.tune.status"] == record.status.value
        assert child.info.status == ("FINISHED" if record.status is TrialStatus.COMPLETED else "KILLED")
        assert float(child.data.params["lr"]) == pytest.approx(record.config["overrides.dcgan.lr"])

    directory = Path(plan.directory)  # the trials' runs live in the user's storage, beside nothing of the repo's
    assert directory.parent == tmp_path / "runs"
    for record in outcome.records:
        assert list((directory / tuning.trial_run_name(record.trial_id)).glob("checkpoint_*")), record
    assert any(line.startswith("trial 1 mark 2/2: fid ") for line in lines), lines
