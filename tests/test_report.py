"""The report (table, markdown, readme, figures, report): table values against hand computation, the paired test,
byte-stable outputs, the figure, README."""
import math

import pandas as pd
import pytest

from roadmap import figures, markdown, report, table as tables
from roadmap.config import ConfigError, load_roadmap
from roadmap.readme import update_readme
from roadmap.results import REPO_ROOT, RunKey, write_record

ROADMAP, SCALE, DATA = "resnet50", "demo", "synthetic"

# (step, seed, top1, status, extra): complete runs give top-1; the rest show up as failed or diverged.
RUNS = [
    ("resnet50", 0, 70.0), ("resnet50", 1, 72.0),
    ("modern_recipe", 0, 75.0), ("modern_recipe", 1, 76.0),
    ("stage_ratio", 0, 77.0),                                         # seed 1 never ran
    ("patchify_stem", 0, None, "failed", {"reason": "CUDA error:\n  out of memory"}),
    # depthwise: no record at all
    ("widen", 0, 78.0), ("widen", 1, 79.0),
    ("inverted_bottleneck", 0, 79.0), ("inverted_bottleneck", 1, 80.0),
    ("move_up_dwconv", 0, 80.0), ("move_up_dwconv", 1, 82.0),
    ("kernel5", 0, 81.0), ("kernel5", 1, 81.5),
    ("kernel7", 0, 83.0), ("kernel7", 1, 85.0),
    ("kernel9", 0, 79.0),
    ("kernel9", 1, 12.0, "diverged", {"divergence": {"epoch": 2, "step": 37, "last_finite_loss": 2.3}}),
    ("kernel11", 0, 90.0), ("kernel11", 1, 90.0),
    ("gelu", 0, 90.0), ("gelu", 1, 93.0),
    ("fewer_activations", 0, None, "diverged", {"divergence": {"epoch": 3, "step": 80, "last_finite_loss": 1.1}}),
    ("fewer_activations", 1, None, "diverged", {"divergence": {"epoch": 3, "step": 80, "last_finite_loss": 1.1}}),
]


def make_record(step, seed, top1, status="complete", extra=None):
    record = {
        "schema": 1, "status": status, "reason": None, "divergence": None,
        "roadmap": ROADMAP, "step": step, "order": 0, "title": step, "adopted": True, "base": None,
        "scale": SCALE, "data": DATA, "seed": seed, "top1": top1, "top5": None if top1 is None else 99.0,
        "epochs": [], "params": 12345, "gflops": 0.0123, "image_size": 28, "num_classes": 10,
        "images_per_s": 1000.0 + seed * 100, "wall_s": 30.0, "peak_mem_mb": None, "device": "cpu", "world_size": 1,
        "torch": "2.14.1", "timm": "1.0.31", "git_commit": "abc123", "paper": {}, "config": {},
    }
    record.update(extra or {})
    return record


def write_runs(root, runs=RUNS):
    for run in runs:
        step, seed = run[0], run[1]
        write_record(root, RunKey(ROADMAP, SCALE, DATA, step, seed), make_record(*run))
    return root


@pytest.fixture(scope="module")
def steps():
    return load_roadmap(ROADMAP)


@pytest.fixture()
def results(tmp_path):
    return write_runs(tmp_path / "results")


@pytest.fixture()
def table(steps, results):
    records = tables.select_records(ROADMAP, SCALE, DATA, results)[0]
    return tables.build_table(steps, records).set_index("id")


# ---------------------------------------------------------------------------- statistics
def test_paired_delta_by_hand_and_against_scipy():
    from scipy import stats
    reference, step = {0: 70.0, 1: 72.0, 2: 71.0}, {0: 71.0, 1: 73.5, 2: 71.5}
    out = tables.paired_delta(reference, step)
    diffs = [1.0, 1.5, 0.5]                                 # mean 1, sd 0.5, sem 0.5/sqrt(3)
    half = stats.t.ppf(0.975, 2) * 0.5 / math.sqrt(3)       # 4.303 * 0.2887 = 1.242
    assert out["n_pairs"] == 3
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((1 - half, 1 + half))
    assert out["p_value"] == pytest.approx(stats.ttest_rel(list(step.values()), list(reference.values())).pvalue)
    assert out["significant"] is False and half == pytest.approx(1.2421, abs=1e-4) and sum(diffs) == 3.0


def test_paired_delta_clears_noise_only_when_the_interval_excludes_zero():
    out = tables.paired_delta({0: 80.0, 1: 81.0, 2: 80.5}, {0: 82.0, 1: 82.9, 2: 82.6})
    assert out["significant"] is True and out["ci_low"] > 0
    assert out["p_value"] < 0.05


def test_paired_delta_pairs_by_seed_and_refuses_what_it_cannot_test():
    # Only seeds on both sides pair up.
    assert tables.paired_delta({0: 1.0, 1: 2.0}, {1: 3.0, 2: 4.0})["n_pairs"] == 1
    assert tables.paired_delta({0: 1.0}, {0: 2.0})["significant"] is None          # n=1: no test
    no_spread = tables.paired_delta({0: 1.0, 1: 2.0}, {0: 2.0, 1: 3.0})          # both differences 1.0
    assert no_spread["significant"] is None and math.isnan(no_spread["ci_low"])


# ---------------------------------------------------------------------------- the table
def test_references_follow_adopted_steps_and_branch_bases(steps):
    refs = tables.reference_steps(steps)
    assert refs["resnet50"] is None and refs["modern_recipe"] == "resnet50"
    assert refs["kernel5"] == refs["kernel7"] == refs["kernel9"] == refs["kernel11"] == "move_up_dwconv"
    assert refs["gelu"] == "kernel7"


def test_every_step_has_a_row_in_roadmap_order(table, steps):
    assert list(table.index) == [s.id for s in steps]
    assert table.loc["kernel5", "adopted"] == False  # noqa: E712 - numpy bool
    assert table.loc["kernel7", "adopted"] == True  # noqa: E712


def test_means_stds_and_counts(table):
    assert table.loc["resnet50", ["n", "top1_mean"]].tolist() == [2, 71.0]
    assert table.loc["resnet50", "top1_std"] == pytest.approx(math.sqrt(2.0))  # sample std, ddof=1
    assert table.loc["modern_recipe", "top1_std"] == pytest.approx(math.sqrt(0.5))
    assert table.loc["stage_ratio", "n"] == 1 and math.isnan(table.loc["stage_ratio", "top1_std"])
    assert table.loc["kernel9", "top1_mean"] == 79.0  # the diverged seed's 12% does not count
    assert table.loc["resnet50", "images_per_s"] == 1050.0
    assert table.loc["resnet50", "gflops"] == 0.0123 and table.loc["resnet50", "params"] == 12345


def test_nothing_is_silently_dropped(table):
    status = table["status"]
    assert status["resnet50"] == "ok"
    assert status["stage_ratio"] == "partial: 1 ok, 1 missing"
    assert status["patchify_stem"] == "failed: CUDA error: out of memory"
    assert status["depthwise"] == "missing"
    assert status["kernel9"] == "partial: 1 ok, 1 failed"
    assert status["fewer_activations"] == "diverged at epoch 3"
    assert table.loc["kernel9", "failures"] == "seed 1: diverged at epoch 2"
    assert table.loc["patchify_stem", ["n", "n_failed", "n_missing"]].tolist() == [0, 1, 1]
    assert status["separate_downsampling"] == "missing"


def test_deltas_against_the_reference_step(table):
    assert math.isnan(table.loc["resnet50", "delta"]) and pd.isna(table.loc["resnet50", "reference"])
    assert table.loc["modern_recipe", "delta"] == pytest.approx(4.5)
    assert table.loc["kernel5", "delta"] == pytest.approx(81.25 - 81.0)  # branch: from its base move_up_dwconv
    assert table.loc["kernel11", "delta"] == pytest.approx(90.0 - 81.0)
    assert table.loc["kernel7", "delta"] == pytest.approx(84.0 - 81.0)
    assert table.loc["gelu", "reference"] == "kernel7"
    assert table.loc["gelu", "delta"] == pytest.approx(91.5 - 84.0)  # not against kernel11's 90
    assert math.isnan(table.loc["widen", "delta"])  # its reference, depthwise, never ran
    assert math.isnan(table.loc["depthwise", "delta"])


def test_paper_deltas_and_sign_agreement(table):
    assert table.loc["modern_recipe", "paper_delta"] == pytest.approx(78.82 - 76.13)
    assert table.loc["kernel5", "paper_delta"] == pytest.approx(80.35 - 79.92)
    assert table.loc["gelu", "paper_delta"] == pytest.approx(80.62 - 80.57)
    assert table.loc["modern_recipe", "sign_agrees"] is True
    assert table.loc["stage_ratio", "sign_agrees"] is True  # 77 - 75.5 > 0, paper +0.54
    assert table.loc["move_up_dwconv", "sign_agrees"] is False  # ours +1.5, paper -0.72
    assert table.loc["widen", "sign_agrees"] is None


def test_significance_is_a_paired_test_over_seeds(table):
    # gelu - kernel7 per seed: 7 and 8 -> mean 7.5, sem 0.5, t(1) 12.706: CI [1.15, 13.85] excludes 0.
    assert table.loc["gelu", "significant"] is True
    assert table.loc["gelu", ["ci_low", "ci_high"]].tolist() == pytest.approx([7.5 - 6.3531, 7.5 + 6.3531], abs=1e-3)
    # modern_recipe - resnet50: 5 and 4 -> CI [-1.85, 10.85] holds 0.
    assert table.loc["modern_recipe", "significant"] is False
    assert table.loc["kernel7", "significant"] is None  # 3 and 3: no spread, no test
    assert table.loc["stage_ratio", "significant"] is None and table.loc["stage_ratio", "n_pairs"] == 1
    assert table.loc["kernel9", "significant"] is None  # one complete seed
    assert table.attrs["significance_test"].startswith("paired t-test")


# ---------------------------------------------------------------------------- files
def test_markdown_and_csv_are_byte_stable(steps, results, tmp_path):
    first = report.make_table(ROADMAP, SCALE, DATA, results, tmp_path / "a", None)
    second = report.make_table(ROADMAP, SCALE, None, results, tmp_path / "b", None)
    assert [p.name for p in first] == ["resnet50-demo-synthetic.md", "resnet50-demo-synthetic.csv"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    md = first[0].read_text()
    assert md.startswith("Roadmap `resnet50`, scale `demo`, data `synthetic` (28 px, 10 classes): seeds 0, 1; cpu;"
                         " 24 runs, total wall time 12.0 min; git abc123.")
    assert "| 71.00 ± 1.41 (n=2) | – |" in md
    assert "| kernel5 | kernel size 5 (branch) | 81.25 ± 0.35 (n=2) | +0.25 |" in md
    assert "| gelu | ReLU -> GELU | 91.50 ± 2.12 (n=2) | +7.50 | [+1.15, +13.85] | 80.62 | +0.05 | yes | yes |" in md
    assert "| kernel7 | kernel size 7 | 84.00 ± 1.41 (n=2) | +3.00 | – | 80.57 | +0.65 | yes | no spread: no test |" in md
    assert "| stage_ratio | stage ratio (3,4,6,3) -> (3,3,9,3) | 77.00 (n=1) | +1.50 | – | 79.36 | +0.54 | yes | n=1: no test |" in md
    assert "What reproduces at this scale: 1 of " in md and "reproduce (same sign as the paper and beyond noise): gelu" in md
    assert "| 77.00 (n=1) |" in md and "| missing |" in md and "failed: CUDA error" in md
    assert "paired t-test over seeds" in md and "side branch" in md and "likely counts norms" in md
    assert "- patchify_stem seed 0: failed: CUDA error: out of memory" in md


def test_csv_round_trips_every_step(results, tmp_path):
    csv = report.make_table(ROADMAP, SCALE, DATA, results, tmp_path, None)[1]
    frame = pd.read_csv(csv)
    assert len(frame) == len(load_roadmap(ROADMAP)) and list(frame.columns) == tables.COLUMNS
    assert frame.set_index("id").loc["kernel5", "delta"] == pytest.approx(0.25)


def test_plot_writes_deterministic_png_and_svg(steps, results, tmp_path):
    first = report.make_plot(ROADMAP, SCALE, DATA, results, tmp_path / "a")
    second = report.make_plot(ROADMAP, SCALE, DATA, results, tmp_path / "b")
    assert [p.name for p in first] == ["resnet50-demo-synthetic.png", "resnet50-demo-synthetic.svg",
                                       "resnet50-demo-synthetic-cost.png", "resnet50-demo-synthetic-cost.svg"]
    assert all(p.stat().st_size > 1000 for p in first)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    svg = first[1].read_text()
    assert "paper top-1 (%), ImageNet-1k" in svg and "our top-1 (%)" in svg and "MFLOPs" not in svg


def test_pareto_front():
    # cost, top-1: (1, 80) and (2, 85) and (4, 90) are on the front; (3, 84) is beaten by (2, 85).
    assert figures.pareto_front([1, 2, 3, 4], [80, 85, 84, 90]) == [0, 1, 3]
    assert figures.pareto_front([100, 300, 200], [80, 90, 85], lower_cost_is_better=False) == [1]
    assert figures.pareto_front([1, float("nan")], [80, 90]) == [0]


def test_reverse_roadmap_table_puts_each_change_beside_its_forward_gain(results, tmp_path):
    for seed, (end, no_gelu) in enumerate([(88.0, 87.0), (88.5, 87.2)]):
        for step, top1 in (("convnext_t", end), ("back_to_relu", no_gelu)):
            write_record(results, RunKey("reverse", SCALE, DATA, step, seed),
                         make_record(step, seed, top1, extra={"roadmap": "reverse"}))
    md_path = report.make_table("reverse", SCALE, DATA, results, tmp_path, None)[0]
    md = md_path.read_text()
    # back_to_relu: -1.15 when taken away; gelu's forward delta in RUNS is 91.5 - 84.0 = +7.50.
    assert "| back_to_relu | back to ReLU (branch) | 87.10 ± 0.14 (n=2) | -1.15 |" in md
    assert "| resnet50/gelu | +7.50 | yes |" in md and "forward Δ" in md
    assert "What reproduces" not in md  # no paper numbers to compare with
    # Two seeds, differences -1.0 and -1.3: t = 7.7 on 1 degree of freedom, short of 12.7.
    assert "- What each change is worth at the end: 0 of 1 tested changes still matter." in md
    assert "- worth nothing measurable at the end (within noise): back_to_relu (-1.15)" in md
    assert "Paper Δ follows" not in md
    paths = report.make_plot("reverse", SCALE, DATA, results, tmp_path)
    assert "still worth at the end" in paths[1].read_text()


def test_missing_results_and_ambiguous_data_are_config_errors(results, tmp_path):
    with pytest.raises(ConfigError, match="no results for roadmap resnet50, scale paper .* run 'runner.py run' first"):
        report.make_table(ROADMAP, "paper", None, results, tmp_path, None)
    write_record(results, RunKey(ROADMAP, SCALE, "cifar10", "resnet50", 0),
                 make_record("resnet50", 0, 50.0, extra={"data": "cifar10"}))
    with pytest.raises(ConfigError, match=r"several datasets \(cifar10, synthetic\)"):
        report.make_table(ROADMAP, SCALE, None, results, tmp_path, None)


# ---------------------------------------------------------------------------- README
def test_update_readme_replaces_only_between_its_roadmaps_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\nbefore\n<!-- results-resnet50:begin -->\nold table\n<!-- results-resnet50:end -->\n"
                      "between\n<!-- results-reverse:begin -->\nold reverse\n<!-- results-reverse:end -->\nafter\n")
    assert update_readme(readme, "resnet50", "| a |\n", "report/x.png", "context") is True
    assert update_readme(readme, "reverse", "| r |\n", "", "undone") is True
    assert readme.read_text() == ("# Title\nbefore\n<!-- results-resnet50:begin -->\ncontext\n\n| a |\n\n"
                                  "![roadmap results](report/x.png)\n<!-- results-resnet50:end -->\n"
                                  "between\n<!-- results-reverse:begin -->\nundone\n\n| r |\n<!-- results-reverse:end -->"
                                  "\nafter\n")
    assert update_readme(readme, "resnet50", "| a |\n", "report/x.png", "context") is False
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results-resnet50:begin"):
        update_readme(readme, "resnet50", "| a |\n", "", "context")
    assert readme.read_text() == "# no markers\n"


def test_make_table_updates_readme_with_relative_figure(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n<!-- results-{ROADMAP}:begin -->\n<!-- results-{ROADMAP}:end -->\n")
    out = tmp_path / "report"
    report.make_plot(ROADMAP, SCALE, DATA, results, out)
    written = report.make_table(ROADMAP, SCALE, DATA, results, out, readme)
    assert written[-1] == readme
    text = readme.read_text()
    assert "![roadmap results](report/resnet50-demo-synthetic.png)" in text and "| kernel7 |" in text
    assert report.make_table(ROADMAP, SCALE, DATA, results, out, readme)[-1] != readme  # unchanged the second time


def test_the_caller_decides_whether_readme_links_the_figure(results, tmp_path):
    """Linked, the figure must be there (nothing is written otherwise); figure=False leaves it out."""
    readme = tmp_path / "README.md"
    before = f"intro\n<!-- results-{ROADMAP}:begin -->\n<!-- results-{ROADMAP}:end -->\n"
    readme.write_text(before)
    out = tmp_path / "report"
    with pytest.raises(ConfigError, match="run 'runner.py plot' with the same options first, or pass --no-figure"):
        report.make_table(ROADMAP, SCALE, DATA, results, out, readme)
    assert readme.read_text() == before and not out.exists()
    report.make_table(ROADMAP, SCALE, DATA, results, out, readme, figure=False)
    assert "| kernel7 |" in readme.read_text() and "![" not in readme.read_text()


def test_the_reverse_columns_are_chosen_by_the_caller_and_placed_by_name(table):
    df = table.reset_index()
    forward = markdown.table_markdown(df, reverse=False).splitlines()[0]
    assert forward.startswith("| step | change | top-1 (%) | Δ | Δ 95% CI | paper top-1 | paper Δ | sign agrees |")
    df["reverts"], df["forward_delta"], df["forward_significant"] = "resnet50/gelu", 1.0, True
    reverse = markdown.table_markdown(df, reverse=True).splitlines()
    assert reverse[0].split(" | ")[5:9] == ["reverts", "forward Δ", "fwd > noise", "> noise"]
    assert "| resnet50/gelu | +1.00 | yes |" in reverse[2] and "paper" not in reverse[0]


def test_markdown_table_keeps_its_old_behaviour():
    assert markdown.markdown_table(["a", "b"], [["x", 1.5]]) == "| a | b |\n|---|---:|\n| x | 1.5 |\n"


def test_spread_notes_give_the_median_the_lowest_step_and_the_seed_spread():
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "top1_mean": [80.0, 90.0, 85.0, float("nan")],
                       "top1_std": [0.1, 0.5, float("nan"), float("nan")]})
    assert markdown.spread_notes(df) == ["Over the 3 steps with results: median top-1 85.00%, lowest 80.00% (a); "
                                       "median seed std 0.30 points."]
    assert markdown.spread_notes(df.iloc[3:]) == []


def test_the_header_names_an_image_folder_inside_the_repo_relative_to_it():
    inside = f"imagefolder:{REPO_ROOT / 'data' / 'cifar10-jpg'}"
    assert tables.shown_data(inside) == "imagefolder:data/cifar10-jpg"
    for spec in ("imagefolder:/datasets/imagenet", "imagefolder:data/mine", "fashion-mnist"):
        assert tables.shown_data(spec) == spec


def test_the_header_says_how_long_and_how_regularised_the_runs_trained():
    """A sweep cell's table must not read like the base scale's: its recipes' epochs and regularisation, from the
    records."""
    def run(recipe, epochs):
        return {"recipe": {"name": recipe, "epochs": epochs}, "config": {"scale": {"regularization": 0.25}}}
    records = [run("modern", 40), run("classic", 12), run("modern", 40)]
    assert tables.training_budget(records) == ["classic 12 epochs", "modern 40 epochs", "regularization 0.25"]
    context = {"roadmap": "resnet50", "scale": "cpu", "data": "fashion-mnist", "seeds": [0], "devices": ["cpu"],
               "runs": 3, "wall_s": 60.0, "training": tables.training_budget(records)}
    assert markdown.context_line(context) == ("Roadmap `resnet50`, scale `cpu`, data `fashion-mnist`: classic 12 epochs, "
                                     "modern 40 epochs, regularization 0.25; seeds 0; cpu; 3 runs, total wall time "
                                     "1.0 min.")
