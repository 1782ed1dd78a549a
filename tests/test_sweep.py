"""Sweeps: the file (grid, cells, untrained), planning and the base cell, training with and without --jobs, the
dry run, Slurm's array script, one-line refusals, and the report (gap per cell, Welch per factor, stable bytes)."""
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy import stats

from conftest import ROOT, TINY_SETTINGS, main
from roadmap.results import RunKey, read_record, write_record
from roadmap.sweep import array_spec, load_sweep, plan_sweep
from roadmap.sweepreport import make_sweep_report

STEPS = ["modern_recipe", "separate_downsampling"]
TINY_SET = {key: yaml.safe_load(value) for key, value in TINY_SETTINGS.items()}


@pytest.fixture()
def steps_dir(tmp_path, monkeypatch):
    """A copy of steps/ as ROADMAP_STEPS_DIR, with sweeps/ of the test's own."""
    target = tmp_path / "steps"
    shutil.copytree(ROOT / "steps", target, ignore=shutil.ignore_patterns("sweeps"))
    (target / "sweeps").mkdir()
    monkeypatch.setenv("ROADMAP_STEPS_DIR", str(target))
    return target


def write_sweep(steps_dir, name="tiny", **changes):
    sweep = {"title": "a tiny sweep", "roadmap": "resnet50", "scale": "demo", "data": "synthetic", "steps": STEPS,
             "seeds": [0, 1], "set": TINY_SET, "grid": {"scale.epochs": [1, 2]}, **changes}
    (steps_dir / "sweeps" / f"{name}.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    return name


def test_the_file_gives_grid_then_cells_once_each(steps_dir):
    write_sweep(steps_dir, cells=[{"scale.epochs": 2},   # the grid's already: one cell
                                  {"scale.epochs": 1, "recipe.label_smoothing": 0.0},
                                  {"scale.epochs": 3, "untrained": "too long for a test"}])
    sweep = load_sweep("tiny")
    assert [c.name for c in sweep.cells] == ["epochs=1", "epochs=2", "epochs=1,recipe.label_smoothing=0.0",
                                             "epochs=3"]
    assert [c.untrained for c in sweep.cells] == ["", "", "", "too long for a test"]
    runs = plan_sweep(sweep, steps_dir / "results")
    assert len(runs) == 3 * 2 * 2   # three trained cells x two seeds x two steps; the untrained one left out
    by_cell = {r.cell.name: r for r in runs}
    assert by_cell["epochs=1"].is_base and by_cell["epochs=1"].results == steps_dir / "results"   # = the base scale
    assert by_cell["epochs=2"].results == steps_dir / "results" / "sweeps" / "tiny" / "epochs=2"
    assert not by_cell["epochs=1,recipe.label_smoothing=0.0"].is_base
    assert {r.plan.cfg.scale.epochs for r in runs if r.cell.name == "epochs=2"} == {2}
    assert [r.cell.name for r in plan_sweep(sweep, steps_dir / "results", [3])] == ["epochs=3"] * 4   # when named


def test_a_sweep_trains_every_cell_once_then_skips_it(steps_dir, tmp_path, capsys):
    write_sweep(steps_dir)
    results = tmp_path / "out"
    code, err = main(capsys, "sweep", "tiny", "--results", results, "--no-progress")
    assert code == 0, err
    for folder, epochs in ((results, 1), (results / "sweeps" / "tiny" / "epochs=2", 2)):
        for step in STEPS:
            for seed in (0, 1):
                record = read_record(RunKey("resnet50", "demo", "synthetic", step, seed).record_path(folder))
                assert record["status"] == "complete" and len(record["epochs"]) == epochs
    for weights in results.rglob("*.safetensors"):   # as in a clean clone: records committed, weights not
        weights.unlink()
    code, err = main(capsys, "sweep", "tiny", "--results", results, "--no-progress")
    assert code == 0 and "0 complete, 8 skipped" in err
    # the base cell's records are the base scale's own, reused: no advice to delete them to train them again
    assert err.count("the base scale's own record, reused") == 4 and err.count("warning:") == 4, err
    from roadmap.sweep import dry_run   # each cell's measured wall time, from its records' start and end times
    assert dry_run(load_sweep("tiny"), results, None, 2).count(" (4 runs) |") == 2


def test_measured_time_counts_runs_side_by_side_once():
    from roadmap.sweep import union_seconds
    assert union_seconds([(0.0, 10.0), (5.0, 15.0), (20.0, 25.0)]) == 20.0
    assert union_seconds([(0.0, 10.0), (2.0, 3.0)]) == 10.0 and union_seconds([]) == 0.0


def test_jobs_and_a_slurm_task_train_one_cell(steps_dir, tmp_path):
    """The array script's task trains the cell its index names, in two worker processes (--jobs 2)."""
    write_sweep(steps_dir)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_SUBMIT_DIR": str(ROOT), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "2", "ROADMAP_STEPS_DIR": str(steps_dir)}
    done = subprocess.run(["bash", str(ROOT / "steps" / "sweeps" / "sweep.sbatch"), "tiny", "--jobs", "2",
                           "--results", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "4 complete" in done.stderr
    assert len(list((tmp_path / "out" / "sweeps" / "tiny" / "epochs=2").rglob("seed*.json"))) == 4
    assert not list((tmp_path / "out").glob("resnet50"))   # cell 0 (the base) was not this task's


def test_the_dry_run_lists_cells_and_writes_nothing(steps_dir, tmp_path, capsys):
    write_sweep(steps_dir, cells=[{"scale.epochs": 4, "untrained": "past the budget"}])
    code, err = main(capsys, "sweep", "tiny", "--results", tmp_path / "out", "--dry-run", "--jobs", "2")
    assert code == 0, err
    assert not (tmp_path / "out").exists()


def test_the_dry_run_says_which_cell_is_the_base_and_which_are_untrained(steps_dir, tmp_path, capsys):
    from roadmap.sweep import dry_run
    write_sweep(steps_dir, cells=[{"scale.epochs": 4, "untrained": "past the budget"}])
    text = dry_run(load_sweep("tiny"), tmp_path / "out", None, 2)
    lines = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| ") and "---" not in line
             and "index" not in line}
    assert "the base scale's own" in lines["epochs=1"] and "| 4 | 0 | 4 |" in lines["epochs=1"]
    assert "untrained: past the budget" in lines["epochs=4"]
    assert "8 run(s) to train" in text and "--array=0-1 " in text
    assert array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


BAD_FILES = [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"grid": {"scale.epochs": ["ten"]}}, "cell 0 (epochs=ten)"),
    ({"grid": {"scale.epochs": []}}, "needs a non-empty list of levels"),
    ({"grid": {"model.kernel_size": [3, 5]}}, "must be scale.KEY or recipe.KEY"),
    ({"grid": {"scale.colour": [1]}}, "colour"),
    ({"steps": ["modern_recipe", "kernel_7"]}, "unknown step 'kernel_7'"),
    ({"grid": None, "cells": []}, "no cells"),
    ({"cells": [{"scale.epochs": 2, "untrained": ""}]}, "says why a cell is left untrained"),
    ({"seeds": [-1]}, "seeds must be a list"),
]


@pytest.mark.parametrize("changes, message", BAD_FILES)
def test_a_bad_sweep_file_is_one_line_before_anything_is_written(steps_dir, tmp_path, capsys, changes, message):
    write_sweep(steps_dir, **changes)
    for extra in ([], ["--dry-run"]):
        code, err = main(capsys, "sweep", "tiny", "--results", tmp_path / "out", *extra)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_an_unknown_sweep_or_cell_is_one_line(steps_dir, tmp_path, capsys):
    write_sweep(steps_dir)
    code, err = main(capsys, "sweep", "tinny", "--results", tmp_path / "out")
    assert code == 2 and "unknown sweep 'tinny'" in err and "did you mean 'tiny'" in err
    code, err = main(capsys, "sweep", "tiny", "--cell", "7", "--results", tmp_path / "out")
    assert code == 2 and "has cells 0 to 1" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- the report
# Per seed, the modern ResNet's top-1 and ConvNeXt-T's gap to it, in three cells: the gap closes with budget.
GAPS = {"epochs=1": [-3.0, -2.6, -3.3], "epochs=2": [-1.1, -0.7, -1.2], "epochs=4": [0.9, 1.4, 1.1]}


def fake_records(results, cell_folders, gaps=GAPS):
    for cell, folder in cell_folders.items():
        for seed, gap in enumerate(gaps[cell]):
            base = 80.0 + seed
            for step, top1 in zip(STEPS, (base, base + gap)):
                write_record(folder, RunKey("resnet50", "demo", "synthetic", step, seed), {
                    "schema": 1, "status": "complete", "roadmap": "resnet50", "step": step, "scale": "demo",
                    "data": "synthetic", "seed": seed, "top1": top1, "image_size": 16, "config": {}})


def test_the_report_gives_each_cells_gap_and_what_moves_it(steps_dir, tmp_path):
    write_sweep(steps_dir, grid={"scale.epochs": [1, 2, 4]})
    results = tmp_path / "results"
    fake_records(results, {"epochs=1": results, "epochs=2": results / "sweeps" / "tiny" / "epochs=2",
                           "epochs=4": results / "sweeps" / "tiny" / "epochs=4"})
    out = tmp_path / "report"
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- sweep-tiny-answer:begin -->\n<!-- sweep-tiny-answer:end -->\n")
    page = tmp_path / "docs" / "sweeps.md"
    page.parent.mkdir()
    page.write_text("# y\n<!-- sweep-tiny:begin -->\n<!-- sweep-tiny:end -->\n")
    written = make_sweep_report("tiny", results, out, [readme, page])
    text = (out / "sweep-tiny.md").read_text()
    gap = statistics.fmean(GAPS["epochs=2"])
    half = stats.t.ppf(0.975, 2) * statistics.stdev(GAPS["epochs=2"]) / math.sqrt(3)
    assert f"| {gap:+.2f} | [{gap - half:+.2f}, {gap + half:+.2f}] | yes |" in text
    welch = stats.ttest_ind(GAPS["epochs=4"], GAPS["epochs=1"], equal_var=False).confidence_interval(0.95)
    diff = statistics.fmean(GAPS["epochs=4"]) - statistics.fmean(GAPS["epochs=1"])
    assert f"| 1 -> 4 | -2.97 (3) | +1.13 (3) | {diff:+.2f} | [{welch.low:+.2f}, {welch.high:+.2f}] | yes |" in text
    assert "- epochs: moves the gap beyond noise in 2 of 2 tested comparison(s)" in text
    assert "- Factors that move the gap beyond noise: epochs" in text
    assert "separate_downsampling ends above modern_recipe beyond noise in: epochs=4 (+1.13)" in text
    assert "are level within noise (the gap's CI spans 0): none" in text
    answer = readme.read_text()   # the answer alone, on the landing page: the figure, each cell's gap, the lines
    assert answer.startswith("# x\n<!-- sweep-tiny-answer:begin -->\n![sweep tiny](report/sweep-tiny.png)\n\n"
                             "| cell | gap: separate_downsampling - modern_recipe | 95% CI | > noise | seeds |\n")
    assert f"| epochs=2 | {gap:+.2f} | [{gap - half:+.2f}, {gap + half:+.2f}] | yes | 3 |\n" in answer
    assert "|\n\n- Cells with records: 3 of 3" in answer
    assert "<!-- sweep-tiny:begin -->\nSweep `tiny`" in page.read_text() and "(../report/sweep-tiny.png)" in page.read_text()
    first = {path: path.read_bytes() for path in written}
    make_sweep_report("tiny", results, out, [readme, page])
    assert {path: path.read_bytes() for path in written} == first   # regenerated byte for byte


def test_the_report_names_cells_where_the_endpoints_are_level_within_noise(steps_dir, tmp_path):
    write_sweep(steps_dir, grid={"scale.epochs": [1, 2]})
    results = tmp_path / "results"
    gaps = {"epochs=1": GAPS["epochs=1"], "epochs=2": [-0.4, 0.3, -0.2]}   # a CI that spans 0, a mean below it
    fake_records(results, {"epochs=1": results, "epochs=2": results / "sweeps" / "tiny" / "epochs=2"}, gaps)
    make_sweep_report("tiny", results, tmp_path / "report", [], with_plot=False)
    text = (tmp_path / "report" / "sweep-tiny.md").read_text()
    assert "are level within noise (the gap's CI spans 0): epochs=2 (-0.10 [" in text
    assert "(the mean gap >= 0, noise or not): none" in text


def test_the_committed_sweep_report_regenerates_byte_for_byte(tmp_path, monkeypatch):
    """report/sweep-gap.*, README's answer and docs/sweeps.md's block are what the committed records give, written
    as `make sweep` writes them (from the repository root: the cells' folders named relative to it)."""
    monkeypatch.chdir(ROOT)
    pages = {page: tmp_path / page for page in ("README.md", "docs/sweeps.md")}   # the figure linked as from home
    for page, copy in pages.items():
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / page, copy)
    out = tmp_path / "report"
    written = make_sweep_report("gap", Path("results"), out, list(pages.values()))
    for path in written:
        if path.parent == out:
            committed = ROOT / "report" / path.name
            assert committed.read_bytes() == path.read_bytes(), f"{committed} is not what sweep-report writes now"
    for page, copy in pages.items():
        assert copy.read_text() == (ROOT / page).read_text(), f"{page}'s sweep block is not what the records give"
