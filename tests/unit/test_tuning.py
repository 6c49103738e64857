"""``ganzoo tune``'s pure parts: the search space, the trial bookkeeping, the table and the overrides block."""

import pickle

import pytest
import yaml

from components import tuning
from components.config import validate_params
from components.errors import ConfigError
from components.tuning import Dimension, SearchLog, TrialFailed, TrialRecord, TrialStatus


@pytest.fixture
def params():
    return validate_params({"train": {"batch_size": 16, "max_seconds": 8.0, "storage_path": "/tmp/user-runs"},
                            "overrides": {"dcgan": {"beta1": 0.4}}})


def plan_for(params, family="dcgan", rungs=2, **space):
    dimensions = space or {"overrides.dcgan.lr": Dimension("overrides.dcgan.lr", "loguniform", (1e-4, 1e-3))}
    return tuning.make_plan(params, family, dimensions, trials=2, rungs=rungs)


# -- the search space ------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, expected", [
    ("lr=loguniform:1e-4:4e-3", Dimension("overrides.dcgan.lr", "loguniform", (1e-4, 4e-3))),
    ("beta1=uniform:0:0.9", Dimension("overrides.dcgan.beta1", "uniform", (0, 0.9))),
    ("z_dim=randint:16:128", Dimension("overrides.dcgan.z_dim", "randint", (16, 128))),
    ("z_dim=choice:32,64,64", Dimension("overrides.dcgan.z_dim", "choice", (32, 64))),
    ("batch_size=choice:32,64", Dimension("train.batch_size", "choice", (32, 64))),
    ("train.batch_size=choice:8", Dimension("train.batch_size", "choice", (8,))),
    ("overrides.dcgan.lr=choice:1e-4,2e-4", Dimension("overrides.dcgan.lr", "choice", (1e-4, 2e-4))),
])
def test_space_entries_name_their_params_key(params, entry, expected):
    assert tuning.parse_space_entry(entry, "dcgan", params) == expected


def test_n_critic_is_a_family_hyperparameter_where_the_family_has_one(params):
    dimension = tuning.parse_space_entry("n_critic=choice:1,2,5", "wgan_gp", params)
    assert dimension == Dimension("overrides.wgan_gp.n_critic", "choice", (1, 2, 5))
    assert dimension.name == "n_critic" and dimension.spec() == "choice:1,2,5"


@pytest.mark.parametrize("entry, message", [
    ("lrr=choice:1,2", "--space lrr=choice:1,2: overrides.dcgan.lrr: unknown hyperparameter of dcgan "
                       "(expected one of: z_dim, g_width, d_width, lr, beta1, ema_decay)"),
    ("n_critic=choice:1,2", "overrides.dcgan.n_critic: unknown hyperparameter of dcgan"),
    ("train.nope=choice:1", "--space train.nope=choice:1: train.nope: unknown key (expected one of: steps,"),
    ("lr", "--space 'lr': expected KEY=SPEC, e.g. lr=loguniform:1e-4:4e-3"),
    ("lr=", "--space 'lr=': expected KEY=SPEC"),
    ("lr=normal:1:2", "unknown distribution 'normal' (expected one of: loguniform, uniform, randint, choice)"),
    ("lr=loguniform:1e-4", "--space lr=loguniform:1e-4: expected loguniform:LOW:HIGH with 0 < LOW < HIGH"),
    ("lr=loguniform:0:1e-3", "expected loguniform:LOW:HIGH with 0 < LOW < HIGH"),
    ("lr=loguniform:4e-3:1e-4", "expected loguniform:LOW:HIGH with 0 < LOW < HIGH"),
    ("lr=uniform:a:b", "expected uniform:LOW:HIGH with LOW < HIGH"),
    ("z_dim=randint:1.5:4", "expected randint:LOW:HIGH with integers LOW <= HIGH"),
    ("lr=choice:", "expected choice:A,B,... with at least one value"),
    ("lr=choice:1e-4,,2e-4", "expected choice:A,B,... with at least one value"),
    ("lr=choice:fast", "--space lr=choice:fast: overrides.dcgan.lr: expected a number, got 'fast'"),
    ("batch_size=choice:0,64", "--space batch_size=choice:0,64: train.batch_size: expected a positive integer, "
                               "got 0"),
    ("z_dim=uniform:10:100", "overrides.dcgan.z_dim takes integers; use randint:LOW:HIGH or choice:A,B,..."),
    ("batch_size=loguniform:8:64", "train.batch_size takes integers"),
    ("max_seconds=choice:5", "train.max_seconds is set by the search at every budget mark"),
    ("data.source=choice:digits", "data.source: expected a hyperparameter of dcgan (e.g. lr) or train.KEY"),
    ("overrides.cgan.lr=choice:1e-3", "overrides.cgan.lr: expected a hyperparameter of dcgan"),
])
def test_bad_space_entries_fail_with_one_line_naming_the_key(params, entry, message):
    with pytest.raises(ConfigError) as caught:
        tuning.parse_space_entry(entry, "dcgan", params)
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_the_default_space_centres_on_the_configured_values(params):
    space = tuning.default_space("wgan_gp", params, set())
    assert space == [Dimension("overrides.wgan_gp.n_critic", "choice", (1, 2, 5)),
                     Dimension("overrides.wgan_gp.lr", "loguniform", (2e-4, 3.2e-3)),  # its 8e-4, / 4 and * 4
                     Dimension("train.batch_size", "choice", (8, 16, 32))]


def test_the_default_space_finds_every_learning_rate_and_gan_s_d_steps(params):
    assert [d.key for d in tuning.default_space("oasis", params, set())] == [
        "overrides.oasis.lr_g", "overrides.oasis.lr_d", "train.batch_size"]
    assert tuning.default_space("gan", params, set())[0] == Dimension("overrides.gan.d_steps", "choice", (1, 2, 5))


def test_keys_set_with_set_stay_out_of_the_default_space(params):
    fixed = tuning.set_keys(["train.batch_size=16", "overrides={wgan_gp: {n_critic: 5}}"])
    assert fixed == {"train.batch_size", "overrides.wgan_gp.n_critic"}
    assert [d.key for d in tuning.default_space("wgan_gp", params, fixed)] == ["overrides.wgan_gp.lr"]


def test_space_entries_replace_defaults_and_repeats_are_refused(params):
    space = tuning.build_space(["lr=choice:1e-3", "beta1=uniform:0:0.9"], "dcgan", params, set())
    assert space["overrides.dcgan.lr"].kind == "choice"
    assert set(space) == {"overrides.dcgan.lr", "overrides.dcgan.beta1", "train.batch_size"}
    assert set(tuning.build_space(["lr=choice:1e-3"], "dcgan", params, set(), defaults=False)) == {
        "overrides.dcgan.lr"}
    with pytest.raises(ConfigError, match="--space lr=choice:2e-3: lr is given twice"):
        tuning.build_space(["lr=choice:1e-3", "lr=choice:2e-3"], "dcgan", params, set())
    with pytest.raises(ConfigError, match="--space: nothing to search"):
        tuning.build_space([], "dcgan", params, {"overrides.dcgan.lr", "train.batch_size"})


def test_time_is_the_budget_unless_the_user_sets_steps():
    assert tuning.search_assignments(["train.workers=2"], 60.0) == [
        "train.workers=2", "train.max_seconds=60.0", f"train.steps={tuning.UNBOUNDED_STEPS}"]
    assert tuning.search_assignments(["train.steps=500"], None) == ["train.steps=500"]


def test_trial_params_apply_and_validate_the_sampled_values(params):
    import numpy as np

    trial = tuning.trial_params(params, {"overrides.dcgan.lr": np.float64(3e-4), "train.batch_size": np.int64(32)})
    assert trial.overrides["dcgan"] == {"beta1": 0.4, "lr": 3e-4} and trial.train.batch_size == 32
    with pytest.raises(ConfigError, match="tune trial: train.batch_size: expected a positive integer"):
        tuning.trial_params(params, {"train.batch_size": -1})


# -- the plan -------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric, mode", [("fid", "min"), ("kid", "min"), ("fid_domain_red", "min"),
                                          ("cycle_l1", "min"), ("reconstruction_mse", "min"), ("l1", "min"),
                                          ("conditional_accuracy", "max"), ("recall", "max"),
                                          ("segmentation_miou", "max"), ("code_class_nmi", "max")])
def test_the_mode_follows_the_metric(metric, mode):
    assert tuning.metric_mode(metric) == mode


def test_an_unknown_metric_needs_a_mode():
    with pytest.raises(ConfigError, match="--metric sharpness: cannot tell whether lower or higher is better"):
        tuning.metric_mode("sharpness")
    assert tuning.metric_mode("sharpness", "max") == "max"
    with pytest.raises(ConfigError, match="--mode 'up': expected min or max"):
        tuning.metric_mode("fid", "up")


def test_marks_divide_the_budget_evenly():
    assert tuning.budget_marks(240, 4) == (60.0, 120.0, 180.0, 240.0)
    with pytest.raises(ConfigError, match="--rungs: expected a positive integer, got 0"):
        tuning.budget_marks(240, 0)


def test_the_plan_lives_in_the_user_s_storage_and_is_named_by_what_defines_it(params):
    plan = plan_for(params)
    assert plan.marks == (4.0, 8.0) and plan.mode == "min"
    assert plan.directory.startswith("/tmp/user-runs/tune-dcgan-")
    assert plan_for(params).directory == plan.directory
    assert plan_for(params, rungs=4).directory != plan.directory
    with pytest.raises(ConfigError, match="--trials: expected a positive integer, got 0"):
        tuning.make_plan(params, "dcgan", plan.space, trials=0, rungs=2)


def test_a_mark_result_reports_the_metric_or_ends_the_trial():
    result = tuning.mark_result(1, 2.5, 40, {"fid": 80.0, "kid": float("nan")}, "fid")
    assert result == {"mark": 1, "train_seconds": 2.5, "train_step": 40, "eval/fid": 80.0}
    with pytest.raises(TrialFailed, match="failed: the evaluation gave no finite 'conditional_accuracy' "
                                          r"\(it gave: fid\)"):
        tuning.mark_result(1, 2.5, 40, {"fid": 80.0}, "conditional_accuracy")


def test_a_trial_failure_travels_back_to_the_driver_whole():
    error = pickle.loads(pickle.dumps(TrialFailed(TrialStatus.DIVERGED, "diverged at step 7: non-finite loss")))
    assert error.status is TrialStatus.DIVERGED and str(error) == "diverged: diverged at step 7: non-finite loss"

    class RayTaskErrorLike(Exception):  # Ray wraps a trial's exception and keeps it as ``cause``
        cause = error

    assert tuning.failure_of(RayTaskErrorLike("ray::ImplicitFunc.train() ...")) == (
        TrialStatus.DIVERGED, "diverged at step 7: non-finite loss")
    assert tuning.failure_of(RuntimeError("boom\ntraceback")) == (TrialStatus.FAILED, "RuntimeError: boom")


# -- the bookkeeping, the table and the block -----------------------------------------------------

def result(mark, fid, seconds=None, step=None):
    return {"mark": mark, "train_seconds": seconds or 4.0 * mark, "train_step": step or 50 * mark, "eval/fid": fid,
            "eval/kid": fid / 100, "time_this_iter_s": 9.0}


def searched(params):
    plan = plan_for(params, **{"overrides.dcgan.lr": Dimension("overrides.dcgan.lr", "loguniform", (1e-4, 1e-3)),
                               "train.batch_size": Dimension("train.batch_size", "choice", (16, 32))})
    lines = []
    log = SearchLog(plan, say=lines.append)
    configs = {"a": {"overrides.dcgan.lr": 3.14159e-4, "train.batch_size": 32},
               "b": {"overrides.dcgan.lr": 9.0e-4, "train.batch_size": 16},
               "c": {"overrides.dcgan.lr": 1.2e-4, "train.batch_size": 16}}
    log.record("a", configs["a"])
    log.reported("a", configs["a"], result(1, 120.0))
    log.reported("a", configs["a"], result(2, 60.0))
    log.completed("a", configs["a"])
    log.reported("b", configs["b"], result(1, 150.0))  # ASHA stops it: worse than a at mark 1
    log.completed("b", configs["b"])
    log.failed("c", configs["c"], TrialFailed(TrialStatus.DIVERGED, "diverged at step 3: non-finite loss d_loss=nan"))
    return plan, log, lines


def test_the_log_tells_completed_stopped_and_failed_trials_apart(params):
    plan, log, lines = searched(params)
    log.completed("a", {})  # Tune may report an ended trial's end twice: it ends once
    records = log.sorted_records()
    assert len(lines) == 9 and [(r.number, r.status, r.values) for r in records] == [
        (1, TrialStatus.COMPLETED, [120.0, 60.0]), (2, TrialStatus.STOPPED, [150.0]), (3, TrialStatus.DIVERGED, [])]
    assert lines[1] == "trial 1 mark 1/2: fid 120 after 4.0 s of training (50 steps)"
    assert lines[-1] == "trial 3: diverged: diverged at step 3: non-finite loss d_loss=nan"


def test_the_table_has_a_row_per_trial_with_asha_s_decisions(params):
    plan, log, _ = searched(params)
    assert tuning.table_rows(log.sorted_records(), plan) == [
        ["1", "lr=0.000314 train.batch_size=32", "2/2", "60", "completed"],
        ["2", "lr=0.0009 train.batch_size=16", "1/2", "150", "stopped early by ASHA at mark 1/2"],
        ["3", "lr=0.00012 train.batch_size=16", "0/2", "", "diverged: diverged at step 3: non-finite loss d_loss=nan"],
    ]
    table = tuning.format_table(["trial", "config", "marks", "fid", "status"], [["1", "lr=1", "2/2", "60", "ok"]])
    assert table.splitlines() == ["trial  config  marks  fid  status", "-----  ------  -----  ---  ------",
                                  "1      lr=1    2/2    60   ok"]


def test_the_best_completed_trial_becomes_a_params_yaml_block(params):
    plan, log, _ = searched(params)
    records = log.sorted_records()
    best = tuning.best_trial(records, "min")
    assert best.number == 1  # trial 2's 150 at mark 1 is not comparable: it trained a quarter as long
    block = tuning.overrides_block(plan, params.overrides["dcgan"], best, len(records))
    assert block.startswith("# best of 3 trials: trial 1, fid 60 after 8 s of training per trial")
    assert yaml.safe_load(block) == {"overrides": {"dcgan": {"beta1": 0.4, "lr": 0.000314}},
                                     "train": {"batch_size": 32}}
    pasted = validate_params({**yaml.safe_load(block)})  # ready to paste: params.yaml accepts it as it is
    assert pasted.overrides["dcgan"]["lr"] == 0.000314


def test_a_maximised_metric_picks_the_highest_and_no_completed_trial_picks_none():
    records = [TrialRecord(1, "a", {}, [0.2, 0.5], TrialStatus.COMPLETED),
               TrialRecord(2, "b", {}, [0.3, 0.4], TrialStatus.COMPLETED),
               TrialRecord(3, "c", {}, [0.9], TrialStatus.STOPPED)]
    assert tuning.best_trial(records, "max").number == 1
    assert tuning.best_trial(records[2:], "max") is None


def test_the_report_prints_the_table_then_the_block(params):
    plan, log, _ = searched(params)
    records = log.sorted_records()
    best = tuning.best_trial(records, plan.mode)
    block = tuning.overrides_block(plan, {}, best, 3)
    text = tuning.render_report(tuning.SearchOutcome(plan, records, best, block, "ganzoo-tune", "run1"))
    table, _, rest = text.partition("\n\nbest configuration (paste into params.yaml):\n")
    assert table.splitlines()[0].split() == ["trial", "config", "marks", "fid", "status"]
    assert yaml.safe_load(rest) == {"overrides": {"dcgan": {"lr": 0.000314}}, "train": {"batch_size": 32}}
    nothing = tuning.render_report(tuning.SearchOutcome(plan, records[1:], None, None, "ganzoo-tune", "run1"))
    assert nothing.endswith("no trial completed its budget: no configuration to recommend")
