"""The promotion gate: a pure function of two measurements and a policy, checked with hand-computed margins.

Champion FID 20 ± 1 and challenger std 1 give a noise margin of
2 x sqrt(1² + 1²) = 2.828 at the default 2 sigmas.
"""

import math

import pytest

from components.registry.promotion import Decision, Measurement, decide, measurement_from_tags, protocol_differences

PROTOCOL = {"extractor": "domain-cnn:ab12cd34ef56ab12", "data_version": "md5-a.dir", "num_samples": 5000, "seed": 0}


def measured(version: str, fid: float, fid_std: float = 1.0, **protocol) -> Measurement:
    return Measurement(version, fid, fid_std, fid / 1000, 0.0001, {**PROTOCOL, **protocol})


CHAMPION = measured("1", 20.0)


def test_a_clearly_better_challenger_is_promoted():
    decision = decide(measured("2", 15.0), CHAMPION)
    assert decision.promote and decision.outcome == "promoted"
    assert decision.reason == "better: FID 15.000 vs champion version 1's 20.000, gain 5.000 > margin 2.828"


def test_a_worse_challenger_stays_challenger_with_the_numbers_in_the_reason():
    decision = decide(measured("2", 25.0), CHAMPION)
    assert not decision.promote and decision.outcome == "kept_challenger"
    assert decision.reason == "worse: FID 25.000 vs champion version 1's 20.000 (gain -5.000)"


def test_an_equal_fid_is_not_an_improvement():
    assert decide(measured("2", 20.0, 0.0), measured("1", 20.0, 0.0)).reason.startswith("worse")


def test_a_gain_within_the_noise_is_not_promoted():
    decision = decide(measured("2", 18.0), CHAMPION)
    assert not decision.promote and decision.outcome == "kept_challenger"
    assert decision.reason.startswith("within noise: FID 18.000 vs champion version 1's 20.000, gain 2.000 <= "
                                      "margin 2.828")


def test_the_margin_is_the_larger_of_min_improvement_and_the_noise():
    exact = measured("1", 20.0, 0.0)
    assert decide(measured("2", 18.0, 0.0), exact, min_improvement=0.0).promote
    blocked = decide(measured("2", 18.0, 0.0), exact, min_improvement=3.0)
    assert not blocked.promote and "margin 3.000" in blocked.reason
    assert decide(measured("2", 16.5), CHAMPION, min_improvement=3.0, noise_sigmas=1.0).promote  # 3.5 > max(3, 1.414)


def test_a_gain_exactly_at_the_margin_is_not_promoted():
    assert not decide(measured("2", 17.0, 0.0), measured("1", 20.0, 0.0), min_improvement=3.0).promote


@pytest.mark.parametrize("field, value", [("extractor", "inception-v3:0011"), ("data_version", "md5-b.dir"),
                                          ("num_samples", 1000)])
def test_measurements_under_different_protocols_are_never_compared(field, value):
    decision = decide(measured("2", 1.0, **{field: value}), CHAMPION)  # even a far better FID
    assert not decision.promote and decision.outcome == "remeasure_champion"
    assert f"{field} {value} vs {PROTOCOL[field]}" in decision.reason
    assert "re-measure the champion" in decision.reason


def test_protocols_compare_by_value_not_type_and_ignore_the_seed():
    tagged = {key: str(value) for key, value in PROTOCOL.items()}  # as read back from registry tags
    assert protocol_differences(tagged, {**PROTOCOL, "seed": 7}) == []
    assert protocol_differences({"extractor": "a"}, PROTOCOL)[0].startswith("extractor a vs")
    assert "data_version unrecorded vs md5-a.dir" in protocol_differences({}, PROTOCOL)


def test_without_a_champion_the_challenger_is_promoted():
    decision = decide(measured("1", 80.0), None)
    assert decision == Decision(True, "no champion yet: version 1 (FID 80.000) becomes the first", "promoted")


def test_the_champion_itself_is_already_the_champion():
    assert decide(measured("1", 20.0), CHAMPION).outcome == "already_champion"


def test_a_challenger_without_a_finite_fid_is_never_promoted():
    assert not decide(measured("2", math.nan), CHAMPION).promote
    assert not decide(measured("2", 10.0, math.inf), None).promote


def test_a_champion_without_a_finite_fid_is_replaced():
    assert decide(measured("2", 30.0), measured("1", math.nan)).promote


def test_measurements_read_back_from_version_tags():
    tags = {"fid": "12.5", "fid_std": "0.25", "kid": "0.01", "kid_std": "0.001", "protocol.num_samples": "5000",
            "protocol.extractor": "domain-cnn:x", "data_version": "ignored"}
    assert measurement_from_tags("3", tags) == Measurement("3", 12.5, 0.25, 0.01, 0.001,
                                                           {"num_samples": "5000", "extractor": "domain-cnn:x"})
