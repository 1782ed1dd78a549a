"""The study: result sets side by side, deltas per set, Welch differences between sets, notes, stable bytes."""
import math
import statistics

import pytest
from scipy import stats

from roadmap import cli
from roadmap.config import ConfigError
from roadmap.results import RunKey, write_record
from roadmap.study import make_study, welch_difference

ROADMAP = "resnet50"
STEPS = ("resnet50", "modern_recipe", "stage_ratio", "patchify_stem")
# The patchify stem costs 1 point at 32 px and gains 0.5 at 64 px; the other steps move alike in both sets.
GAINS = {32: {"modern_recipe": 5.0, "stage_ratio": 1.0, "patchify_stem": -1.0},
         64: {"modern_recipe": 5.0, "stage_ratio": 1.0, "patchify_stem": +0.5}}
NOISE = {0: 0.1, 1: -0.2, 2: 0.1, 5: 0.1, 6: -0.1}   # per seed, on every other step: each delta's mean is exact


def record(scale, data, step, seed, top1, image_size, settings=None):
    return {"schema": 1, "status": "complete", "reason": None, "divergence": None, "roadmap": ROADMAP, "step": step,
            "order": 0, "title": step, "adopted": True, "base": None, "scale": scale, "data": data, "seed": seed,
            "top1": top1, "top5": 99.0, "epochs": [], "params": 1, "gflops": 0.01, "image_size": image_size,
            "num_classes": 10, "images_per_s": 1000.0, "wall_s": 10.0, "device": "cpu", "world_size": 1,
            "git_commit": "abc", "paper": {}, "config": {"scale": settings} if settings else {}}


def write_set(root, scale, data, image_size, seeds=(0, 1, 2), settings=None):
    for seed in seeds:
        top1 = 80.0 + seed * 0.5
        for n, step in enumerate(STEPS):
            top1 += GAINS[image_size].get(step, 0.0)
            noise = NOISE[seed] if n % 2 else 0.0
            write_record(root, RunKey(ROADMAP, scale, data, step, seed),
                         record(scale, data, step, seed, top1 + noise, image_size,
                                settings(step) if callable(settings) else settings))


@pytest.fixture()
def results(tmp_path):
    root = tmp_path / "results"
    write_set(root, "cpu", "fashion-mnist", 32)
    write_set(root, "cpu64", "fashion-mnist", 64)
    return root


def test_welch_difference_matches_scipy():
    a, b = [0.1, -0.3, 0.2, 0.0], [1.1, 0.8, 1.4]
    out = welch_difference(a, b)
    assert out["diff"] == pytest.approx(statistics.fmean(b) - statistics.fmean(a))
    assert out["diff_p"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert (out["diff_low"], out["diff_high"]) == pytest.approx((ci.low, ci.high))
    assert out["diff_significant"] is True
    assert math.isnan(welch_difference([0.1], [0.2, 0.3])["diff_low"])   # one seed: a difference, no test


def test_the_study_names_the_step_that_depends_on_resolution(results, tmp_path):
    out = tmp_path / "report"
    paths = make_study(ROADMAP, ["cpu/fashion-mnist", "cpu64/fashion-mnist"], results, out, with_plot=False)
    text = paths[0].read_text()
    assert "Δ 32 px fashion-mnist (n)" in text and "Δ 64 px fashion-mnist (n)" in text
    row = next(line for line in text.splitlines() if line.startswith("| patchify_stem |"))
    assert "-1.00*" in row and "+0.50*" in row and "+1.50*" in row   # both deltas and their difference, beyond noise
    assert "Depends on resolution (32 px fashion-mnist -> 64 px fashion-mnist), the step's delta changing beyond " \
           "noise: patchify_stem (+1.50); towards the paper's sign: patchify_stem" in text
    assert "Reproduces in 64 px fashion-mnist (same sign as the paper, beyond noise): 3 of 3" in text
    assert "Reproduces in 32 px fashion-mnist (same sign as the paper, beyond noise): 2 of 3" in text


def test_a_set_of_one_seed_is_said_untested_not_reproducing_nothing(tmp_path):
    root = tmp_path / "results"
    write_set(root, "cpu", "fashion-mnist", 32)
    write_set(root, "cpu64", "fashion-mnist", 64, seeds=(0,))
    text = make_study(ROADMAP, ["cpu/fashion-mnist", "cpu64/fashion-mnist"], root, tmp_path / "r", with_plot=False)[0]
    text = text.read_text()
    assert "Reproduces in 64 px fashion-mnist (same sign as the paper, beyond noise): not tested yet" in text
    assert "Depends on resolution (32 px fashion-mnist -> 64 px fashion-mnist), the step's delta changing beyond " \
           "noise: not tested yet" in text


def test_the_study_regenerates_byte_for_byte_with_its_figure(results, tmp_path):
    sets = ["cpu/fashion-mnist", "cpu64/fashion-mnist"]
    first = {p.name: p.read_bytes() for p in make_study(ROADMAP, sets, results, tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in make_study(ROADMAP, sets, results, tmp_path / "b")}
    assert set(first) == {f"study-resnet50-cpu-fashion-mnist-vs-cpu64-fashion-mnist.{ext}"
                          for ext in ("md", "csv", "png", "svg")}
    assert first == second


def test_sets_from_two_results_folders_get_labels_that_tell_them_apart(results, tmp_path):
    other = tmp_path / "mine"
    write_set(other, "cpu", "fashion-mnist", 32, seeds=(5, 6))
    paths = make_study(ROADMAP, ["cpu/fashion-mnist", f"cpu/fashion-mnist@{other}"], results, tmp_path / "r",
                       with_plot=False)
    text = paths[0].read_text()
    assert f"@{other}" in text and "Depends on results" in text


def test_a_sweep_cell_is_told_from_its_base_by_the_settings_it_changes(tmp_path):
    base = {"name": "cpu", "data": "fashion-mnist", "image_size": 32, "epochs": 5, "regularization": 0.0,
            "classic_epochs": 2, "width_mult": 0.25}
    cell = {**base, "epochs": 40, "regularization": 0.25}
    write_set(tmp_path / "results", "cpu", "fashion-mnist", 32, settings=base)
    # the cell's classic ResNet-50 trains its own epochs: a setting its runs do not share, so not one that tells it
    write_set(tmp_path / "cell", "cpu", "fashion-mnist", 32,
              settings=lambda step: {**cell, "classic_epochs": 12} if step == "resnet50" else cell)
    paths = make_study(ROADMAP, ["cpu/fashion-mnist", f"cpu/fashion-mnist@{tmp_path / 'cell'}"], tmp_path / "results",
                       tmp_path / "r", with_plot=False)
    assert paths[0].name == ("study-resnet50-cpu-fashion-mnist-epochs=5,regularization=0.0-vs-"
                             "cpu-fashion-mnist-epochs=40,regularization=0.25.md")
    assert ("Depends on epochs and regularization (32 px fashion-mnist epochs=5,regularization=0.0 -> 32 px "
            "fashion-mnist epochs=40,regularization=0.25)") in paths[0].read_text()


@pytest.mark.parametrize("sets, message", [
    (["cpu/fashion-mnist"], "a study needs two or more result sets"),
    (["cpu", "cpu64/fashion-mnist"], "a result set is SCALE/DATA[@RESULTS]"),
    (["cpu/fashion-mnist", "cpu/cifar10"], "no results for roadmap resnet50, scale cpu, data cifar10"),
])
def test_a_bad_set_is_one_line_and_nothing_is_written(results, tmp_path, capsys, sets, message):
    out = tmp_path / "report"
    code = cli.main(["study", *sets, "--results", str(results), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(ConfigError):
        make_study(ROADMAP, sets, results, out)


def test_each_page_gets_the_study_blocks_it_has_markers_for(results, tmp_path, capsys):
    """`--readme` names each page: a landing page with the answer's markers gets the figure and the answer lines
    (no table), a page with the whole study's markers the table too; a page with neither is refused first."""
    (tmp_path / "docs").mkdir()
    landing, page, bare = tmp_path / "README.md", tmp_path / "docs" / "results.md", tmp_path / "bare.md"
    landing.write_text("# Intro\n<!-- study-resnet50-answer:begin -->\n<!-- study-resnet50-answer:end -->\nafter\n")
    page.write_text("<!-- study-resnet50:begin -->\n<!-- study-resnet50:end -->\n")
    bare.write_text("# nothing to fill\n")
    sets, out = ["cpu/fashion-mnist", "cpu64/fashion-mnist"], tmp_path / "report"
    assert cli.main(["study", *sets, "--results", str(results), "--out", str(out), "--readme", str(landing),
                     "--readme", str(bare)]) == 2
    assert "study-resnet50-answer:begin" in capsys.readouterr().err and not out.exists()
    assert cli.main(["study", *sets, "--results", str(results), "--out", str(out), "--readme", str(landing),
                     "--readme", str(page)]) == 0
    answer = landing.read_text().split("<!-- study-resnet50-answer:begin -->\n")[1].split("<!--")[0]
    figure = "study-resnet50-cpu-fashion-mnist-vs-cpu64-fashion-mnist.png"
    assert answer.startswith(f"![study](report/{figure})\n\n- Reproduces in 32 px fashion-mnist")
    assert "| step |" not in answer and "Δ:" not in answer and landing.read_text().endswith("end -->\nafter\n")
    whole = page.read_text()
    assert f"![study](../report/{figure})" in whole and "| patchify_stem |" in whole
    assert "- Δ: a step's mean top-1" in whole and answer.split("\n\n", 1)[1] in whole   # the answer, under the table
