"""The quality bars: thresholds, bars relative to another metric, missing metrics, history windows."""

import pytest

from components.evaluation.bars import Bar, bars_for, check_bars, history_keys, history_summary


def test_a_threshold_bar_passes_on_the_right_side_only():
    bar = Bar("fid", "<=", 25.0)
    assert bar.check({"fid": 25.0}).passed and not bar.check({"fid": 25.1}).passed
    assert bar.describe() == "fid <= 25"


def test_a_relative_bar_compares_with_the_other_metric_plus_the_margin():
    bar = Bar("classifier_accuracy", ">=", 0.05, relative_to="supervised_baseline_accuracy")
    result = bar.check({"classifier_accuracy": 0.86, "supervised_baseline_accuracy": 0.80})
    assert result.passed and result.target == pytest.approx(0.85)
    assert not bar.check({"classifier_accuracy": 0.84, "supervised_baseline_accuracy": 0.80}).passed
    assert bar.describe() == "classifier_accuracy >= supervised_baseline_accuracy + 0.05"


def test_a_missing_or_non_finite_metric_fails_its_bar():
    assert not Bar("recall", ">=", 0.3).check({}).passed
    assert not Bar("recall", ">=", 0.3).check({"recall": float("nan")}).passed
    assert not Bar("a", ">", 0.0, relative_to="b").check({"a": 1.0}).passed


def test_an_unknown_operator_is_refused():
    with pytest.raises(ValueError, match="op must be one of"):
        Bar("fid", "=<", 25.0)


def test_every_family_gets_the_common_bars_and_an_untrained_generator_fails_them():
    untrained = {"classes_covered": 3.0, "fid": 560.0, "recall": 0.0, "conditional_accuracy": 0.1}
    for family in ("dcgan", "acgan"):
        results = check_bars(bars_for(family), untrained)
        assert [r.bar.metric for r in results][:3] == ["classes_covered", "fid", "recall"]
        assert not any(r.passed for r in results)
    trained = {"classes_covered": 10.0, "fid": 9.0, "recall": 0.6, "conditional_accuracy": 0.95}
    assert all(r.passed for r in check_bars(bars_for("acgan"), trained))


def test_history_summary_averages_the_first_and_last_tenth_of_the_reports():
    history = [{"step": i, "convergence_m": float(v)} for i, v in enumerate([9, 7, 5, 5, 5, 5, 5, 5, 3, 1])]
    history.append({"step": 11, "d_loss": 1.0})  # rows without the key do not count
    summary = history_summary(history, {"convergence_m"}, window=0.2)
    assert summary == {"history/convergence_m_first": 8.0, "history/convergence_m_last": 2.0}
    assert Bar("history/convergence_m_last", "<", 0.0, relative_to="history/convergence_m_first").check(summary).passed


def test_history_keys_are_read_off_the_bars():
    assert history_keys(bars_for("began")) == {"convergence_m"}
    assert history_keys(bars_for("dcgan")) == set()
