"""check-rerun: a run trained again against the committed seeds' 95% prediction interval."""
import math
import statistics

import pytest
from scipy import stats

from roadmap import cli
from roadmap.rerun import prediction_interval
from roadmap.results import RunKey, write_record
from test_study import record

COMMITTED = {"resnet50": {0: 80.0, 1: 80.4, 2: 80.2}, "modern_recipe": {0: 85.0, 1: 85.2, 2: 84.9}}


def write_runs(root, runs):
    for step, seeds in runs.items():
        for seed, top1 in seeds.items():
            write_record(root, RunKey("resnet50", "cpu", "fashion-mnist", step, seed),
                         record("cpu", "fashion-mnist", step, seed, top1, 32))


def test_the_prediction_interval_is_one_more_draw_by_students_t():
    values = [80.0, 80.4, 80.2, 79.9]
    low, high = prediction_interval(values)
    half = stats.t.ppf(0.975, 3) * statistics.stdev(values) * math.sqrt(1 + 1 / 4)
    assert (low, high) == pytest.approx((statistics.fmean(values) - half, statistics.fmean(values) + half))
    assert all(math.isnan(x) for x in prediction_interval([80.0]))
    assert all(math.isnan(x) for x in prediction_interval([80.0, 80.0]))   # no spread: no interval


def test_check_rerun_says_which_fresh_runs_land_within_and_writes_nothing(tmp_path, capsys):
    committed, fresh = tmp_path / "results", tmp_path / "fresh"
    write_runs(committed, COMMITTED)
    # seed 3 of resnet50 inside, of modern_recipe far outside; seed 1 again: tested against seeds 0 and 2 alone
    write_runs(fresh, COMMITTED)   # a clean clone's results/: the committed records, then what it trained
    write_runs(fresh, {"resnet50": {3: 80.3, 1: 80.5}, "modern_recipe": {3: 87.0}})
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert cli.main(["check-rerun", "cpu/fashion-mnist", "--fresh", str(fresh), "--results", str(committed)]) == 0
    text = capsys.readouterr().out
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[:2] for row in rows] == [["| resnet50", "1"], ["| resnet50", "3"], ["| modern_recipe", "3"]]
    seed1, seed3, modern = rows
    assert "| 2 | 80.10 ± 0.14 |" in seed1 and seed1.endswith("| yes | 80.40 |")   # its own seed left out, shown apart
    assert "| 3 | 80.20 ± 0.20 |" in seed3 and seed3.endswith("| yes | – |")
    assert modern.endswith("| **no** | – |")
    assert "2 of 3 fresh run(s) with a test land within the committed spread" in text
    assert "5 run(s) under" in text and "are copies of committed ones and are left out" in text
