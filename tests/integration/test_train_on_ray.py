"""Training on a real local Ray cluster with 2 workers: every family, resume, divergence."""

from pathlib import Path

import pytest
import torch

from components.families import family_names
from components.training.checkpoint import load_family, read_checkpoint_meta, read_history
from components.training.launcher import train_family

from .test_domain_flow import MULTI_DOMAIN_ZOO, UNPAIRED_ZOO
from .test_translation_flow import PAIRED_ZOO, SEGMENTATION_ZOO
from .test_zoo_flow import ZOO

pytestmark = pytest.mark.integration


# Every family gets a smoke test the moment it registers; the zoo and translation flow tests train theirs on Ray
@pytest.mark.parametrize("family", [name for name in family_names()
                                    if name not in ZOO + PAIRED_ZOO + SEGMENTATION_ZOO + UNPAIRED_ZOO + MULTI_DOMAIN_ZOO])
def test_family_trains_and_checkpoints_on_two_workers(ray_cluster, mnist_prepared, make_params, family):
    params = make_params("train.steps=4", "train.checkpoint_every=2", "train.sample_every=2")
    outcome = train_family(params, family, mnist_prepared, show_progress=False)
    assert outcome.ok, outcome.reason
    assert outcome.step == 4
    checkpoint = Path(outcome.checkpoint)
    assert checkpoint.name == "checkpoint_0000004"
    meta = read_checkpoint_meta(checkpoint)
    assert meta["family"] == family and meta["step"] == 4 and meta["data_hash"] == mnist_prepared.data_hash()
    assert (checkpoint / "samples.png").stat().st_size > 0
    assert (Path(outcome.run_path) / "samples" / "step_0000002.png").is_file()
    restored, _ = load_family(checkpoint)
    restored.nets.eval()
    images = restored.generate(3, restored.sample_conditions(3))
    assert images.shape == (3, 1, 28, 28) and torch.isfinite(images).all()


def test_restarted_run_resumes_at_its_last_checkpoint(ray_cluster, mnist_prepared, make_params):
    first = train_family(make_params("train.steps=3", "train.checkpoint_every=3"), "dcgan", mnist_prepared,
                         run_name="resume-me", show_progress=False)
    assert first.ok and first.step == 3
    again = train_family(make_params("train.steps=6", "train.checkpoint_every=3"), "dcgan", mnist_prepared,
                         run_name="resume-me", show_progress=False)
    assert again.ok, again.reason
    assert again.metrics["start_step"] == 3 and again.step == 6
    assert sorted(p.name for p in Path(again.run_path).glob("checkpoint_0*")) == [
        "checkpoint_0000003", "checkpoint_0000006"]
    history = read_history(again.checkpoint)  # the losses from before the restart travel with the checkpoint
    assert [row["step"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert all(set(row) >= {"d_loss", "g_loss"} for row in history)


def test_rerunning_a_finished_run_trains_nothing_and_returns_its_checkpoint(ray_cluster, mnist_prepared,
                                                                           make_params):
    params = make_params("train.steps=2", "train.checkpoint_every=2")
    first = train_family(params, "gan", mnist_prepared, show_progress=False)
    again = train_family(params, "gan", mnist_prepared, show_progress=False)
    assert again.ok and again.run_name == first.run_name
    assert again.metrics["start_step"] == 2 and again.checkpoint == first.checkpoint


def test_non_finite_loss_stops_the_run_with_a_reason(ray_cluster, mnist_prepared, make_params):
    # a penalty weight beyond float32's range makes the critic loss infinite at the first step
    params = make_params("train.steps=5", "overrides={wgan_gp: {gp_weight: 1.0e+39}}")
    outcome = train_family(params, "wgan_gp", mnist_prepared, show_progress=False)
    assert outcome.status == "diverged"
    assert outcome.reason.startswith("diverged at step 1: non-finite loss d_loss=")
    assert not list(Path(outcome.run_path).glob("checkpoint_*"))


def test_a_time_budget_stops_the_run_and_writes_its_final_checkpoint(ray_cluster, mnist_prepared, make_params):
    # far more steps than 3 seconds allow: the seconds end the run, on both workers at the same step
    params = make_params("train.steps=100000", "train.max_seconds=3", "train.checkpoint_every=100000")
    outcome = train_family(params, "dcgan", mnist_prepared, show_progress=False)
    assert outcome.ok, outcome.reason
    assert 0 < outcome.step < 100000
    meta = read_checkpoint_meta(outcome.checkpoint)
    assert meta["step"] == outcome.step and 3.0 <= meta["elapsed_s"] < 60.0
    assert Path(outcome.checkpoint).name == f"checkpoint_{outcome.step:07d}"
    no_budget = make_params("train.steps=100000", "train.checkpoint_every=100000")
    assert no_budget.params_hash("dcgan") != params.params_hash("dcgan")
    again = train_family(params, "dcgan", mnist_prepared, show_progress=False)  # its budget is spent
    assert again.ok and again.run_name == outcome.run_name
    assert again.step == outcome.step and again.checkpoint == outcome.checkpoint


def test_a_resumed_time_budget_counts_the_seconds_trained_before(ray_cluster, mnist_prepared, make_params):
    first = train_family(make_params("train.steps=100000", "train.max_seconds=2", "train.checkpoint_every=100000"),
                         "dcgan", mnist_prepared, run_name="timed", show_progress=False)
    assert first.ok, first.reason
    longer = make_params("train.steps=100000", "train.max_seconds=4", "train.checkpoint_every=100000")
    again = train_family(longer, "dcgan", mnist_prepared, run_name="timed", show_progress=False)
    assert again.ok, again.reason
    assert again.metrics["start_step"] == first.step < again.step
    before = read_checkpoint_meta(first.checkpoint)["elapsed_s"]
    assert 4.0 <= read_checkpoint_meta(again.checkpoint)["elapsed_s"] < 4.0 + 30.0
    after_restart = [row for row in read_history(again.checkpoint) if row["step"] > first.step]
    assert after_restart and after_restart[-1]["step"] == again.step
    assert all(row["elapsed_s"] >= before for row in after_restart)  # the clock went on from the seconds spent
