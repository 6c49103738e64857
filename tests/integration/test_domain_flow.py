"""Real `retrain` flow runs over the unpaired and multi-domain families (issue 7), on 2 Ray workers.

The unpaired families train a few steps on ``digits2colored`` (grey <-> coloured
digits, no pairs), the multi-domain ones on ``digit_domains`` (colour, stroke and
background attributes); each is evaluated (translation accuracy by a classifier
of the real domains or attributes, cycle L1, content preservation, FID per
domain, diversity), registered and promoted: their smoke test on real Ray
workers. StarGAN trains long enough on the colour domains to show it learned
them: it reaches the requested colour far more often than chance and keeps
the digit.
"""

from __future__ import annotations

import math

import pytest

from .test_translation_flow import make_project, metrics_of

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.zoo]

UNPAIRED_ZOO = ["cyclegan", "discogan", "unit", "munit"]
MULTI_DOMAIN_ZOO = ["stargan", "stargan_v2", "relgan"]
DOMAIN_METRICS = {"translation_accuracy", "cycle_l1", "content_preservation", "diversity", "fid"}


def check_rows(project, rows, families, extra=lambda family: set()):
    assert [(r["family"], r["status"]) for r in rows] == [(f, "finished") for f in families], rows
    for row in rows:
        assert row["version"] and math.isfinite(row["fid"]), row
        metrics = metrics_of(project, row["family"])
        assert DOMAIN_METRICS | extra(row["family"]) <= set(metrics), (row["family"], sorted(metrics))
        assert all(math.isfinite(v) for v in metrics.values()), (row["family"], metrics)
        assert 0 <= metrics["translation_accuracy"] <= 1


def test_unpaired_families_train_evaluate_and_register_in_one_flow(ray_cluster, tmp_path, monkeypatch):
    from flows.retrain import retrain

    project = make_project(tmp_path, monkeypatch, "digits2colored", UNPAIRED_ZOO,
                           {"steps": 3, "batch_size": 8, "checkpoint_every": 3, "sample_every": 3})
    rows = retrain(params_path=str(project / "params.yaml"))
    check_rows(project, rows, UNPAIRED_ZOO, lambda family: {"fid_domain_grey", "fid_domain_colored"})


def test_multi_domain_families_train_evaluate_and_register_in_one_flow(ray_cluster, tmp_path, monkeypatch):
    from flows.retrain import retrain

    project = make_project(tmp_path, monkeypatch, "digit_domains", MULTI_DOMAIN_ZOO,
                           {"steps": 3, "batch_size": 12, "checkpoint_every": 3, "sample_every": 3})
    rows = retrain(params_path=str(project / "params.yaml"))
    check_rows(project, rows, MULTI_DOMAIN_ZOO)


def test_stargan_reaches_the_requested_colour_and_keeps_the_digit(ray_cluster, tmp_path, monkeypatch):
    from flows.retrain import retrain

    project = make_project(tmp_path, monkeypatch, "digit_domains", ["stargan"],
                           {"steps": 450, "batch_size": 16, "checkpoint_every": 450, "sample_every": 450},
                           overrides={"stargan": {"labels": "domains"}})
    rows = retrain(params_path=str(project / "params.yaml"))
    assert [(r["family"], r["status"]) for r in rows] == [("stargan", "finished")], rows
    metrics = metrics_of(project, "stargan")
    # the target is always another colour: copying the input scores 0, a random colour 1/3; the digit class
    # survives by chance in 0.1. Measured with these settings (2026-12-02): 1.000 reach the requested colour and
    # the digit class survives in 0.220 (at 300 steps: 1.000 and 0.155; at 600: 1.000 and 0.335)
    assert metrics["translation_accuracy"] > 0.8, metrics
    assert metrics["content_preservation"] > 0.15, metrics
