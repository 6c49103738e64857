"""The collapse gate: a noise-to-image generator whose samples cover too few classes is never registered."""

import pytest

from components.registry.register import collapse_reason


def test_one_class_of_ten_is_a_collapse_naming_the_numbers():
    reason = collapse_reason({"classes_covered": 1.0, "fid": 80.0}, num_classes=10, min_classes=2)
    assert reason == ("diverged: the generator collapsed: its samples cover 1 of 10 classes "
                      "(registry.min_classes_covered is 2)")


@pytest.mark.parametrize("covered, classes, minimum", [
    (2.0, 10, 2),   # at the threshold
    (10.0, 10, 2),
    (1.0, 1, 2),    # one-class data cannot show a collapse
    (1.0, 0, 2),    # unlabelled data: no classes to cover
    (1.0, 10, 0),   # the gate switched off
    (1.0, 10, 1),
])
def test_enough_classes_or_no_way_to_tell_is_not_a_collapse(covered, classes, minimum):
    assert collapse_reason({"classes_covered": covered}, classes, minimum) is None


def test_a_report_without_class_coverage_is_not_judged():
    assert collapse_reason({"fid": 12.0}, 10, 2) is None


def test_a_stricter_threshold_counts_more_runs_as_collapsed():
    assert collapse_reason({"classes_covered": 4.0}, 10, 5).startswith("diverged: the generator collapsed: its "
                                                                       "samples cover 4 of 10")
