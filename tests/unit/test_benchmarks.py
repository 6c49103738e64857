"""The benchmark scripts' own arithmetic and bookkeeping (their figures are not asserted: see docs/performance.md)."""

import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common  # noqa: E402
from cost_growth import measure_one  # noqa: E402
from pipeline_overhead import busy_seconds  # noqa: E402
from quality_per_minute import mark_cell, median_points, parse_variant  # noqa: E402
from trainer_overhead import in_thread, iteration_split  # noqa: E402


def test_busy_seconds_counts_overlapping_stages_once():
    # training 0-10 and 20-30; the first family's evaluation 8-14 overlaps the gap's start
    assert busy_seconds([(0, 10), (20, 30), (8, 14)]) == pytest.approx(24)
    assert busy_seconds([(0, 10), (2, 3)]) == pytest.approx(10)
    assert busy_seconds([]) == 0


def test_spread_and_show_give_median_min_max():
    assert common.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}
    assert common.show([3.0, 1.0, 2.0, 10.0], 1) == "2.5 (1.0-10.0)"


def test_record_merges_sections_with_the_machine(tmp_path: Path):
    path = tmp_path / "results.json"
    common.record("one", {"value": 1}, path)
    common.record("two", {"value": 2}, path)
    data = json.loads(path.read_text())
    assert set(data["sections"]) == {"one", "two"} and data["sections"]["one"]["value"] == 1
    machine = data["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["versions"]["torch"].startswith("2.")


def test_parse_variant_reads_ints_and_floats():
    assert parse_variant("wgan_gp:n_critic=2,lr=2e-4") == ("wgan_gp", {"n_critic": 2, "lr": 2e-4})
    assert parse_variant("dcgan") == ("dcgan", {})


@pytest.mark.parametrize("family,size", [("dcgan", 28), ("stargan_v2", 32)])
def test_cost_growth_measures_an_iteration(family, size):
    result = measure_one(family, size, 4, 1, 1)
    assert result["step_s"] > 0 and result["peak_mib"] > 0


def test_in_thread_runs_the_measure_off_the_main_thread_and_returns_its_figure():
    assert in_thread(lambda: float(threading.current_thread() is not threading.main_thread())) == 1.0


def test_mark_cell_gives_the_median_fid_over_seeds_and_the_median_iterations():
    assert mark_cell([{"fid": 12.34, "iterations": 100}]) == "12.3 (100 it)"
    seeds = [{"fid": 9.0, "iterations": 98}, {"fid": 7.0, "iterations": 103}, {"fid": 30.0, "iterations": 100}]
    assert mark_cell(seeds) == "9.0 (7.0-30.0) (100 it)"


def test_iteration_split_averages_milliseconds_per_iteration_over_processes():
    ranks = [{"iterations": 100, "elapsed_s": 4.0, "wait_s": 0.2, "transfer_s": 0.3},
             {"iterations": 100, "elapsed_s": 4.0, "wait_s": 0.4, "transfer_s": 0.3}]
    split = iteration_split(ranks)
    assert split == pytest.approx({"iteration_ms": 40.0, "wait_ms": 3.0, "transfer_ms": 3.0, "rest_ms": 34.0})


def test_median_points_take_each_marks_median_over_seeds():
    per_seed = [[{"minutes": 1.0, "iterations": 10, "fid": 9.0, "classes_covered": None}],
                [{"minutes": 1.0, "iterations": 14, "fid": 3.0, "classes_covered": None}],
                [{"minutes": 1.0, "iterations": 12, "fid": 5.0, "classes_covered": None}]]
    assert median_points(per_seed) == [{"minutes": 1.0, "iterations": 12, "fid": 5.0, "classes_covered": None}]
