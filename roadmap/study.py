"""Result sets side by side: `runner.py study SET SET ...`, where each SET is `SCALE/DATA[@RESULTS]`.

Which steps of the roadmap depend on the setting they are trained in (resolution, dataset, budget, one's
own data)? For every step, each set's delta against its reference step (paired over that set's seeds, as
the roadmap table takes it), and the difference between two sets' deltas. Seeds of different sets are
independent runs, so that difference is tested with Welch's t on the two sets' per-seed differences
(unequal variances, Welch-Satterthwaite degrees of freedom). Sets are compared where they differ in one
thing (image size, or data, or the scale or its settings: a sweep's cells), else each with the first.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats

from .config import ConfigError, Step, load_roadmap
from .figures import save_figure
from .markdown import bullets, markdown_table, signed
from .readme import held_markers, study_markers, write_report_blocks
from .results import COMPLETE, atomic_write_text, check_writable, data_slug, record_scale
from .table import CONFIDENCE, build_table, missing, paired_delta, reference_steps, select_records

WELCH_TEST = (f"Welch's t-test on the two sets' per-seed differences (step minus its reference; seeds of different "
              f"sets are independent), two-sided: the {CONFIDENCE:.0%} CI of the difference excludes 0")


@dataclass(frozen=True)
class ResultSet:
    """One arm of a study: a roadmap's records at one scale and data in one results folder."""
    scale: str
    data: str
    results: Path
    label: str
    image_size: int
    records: tuple
    settings: dict = dataclasses.field(default_factory=dict)   # the scale settings all its runs share (shared_settings)
    tag: str = ""          # the settings that tell it from a set of the same label ('epochs=40,regularization=0.25')

    @property
    def by_step_seed(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for r in self.records:
            if r.get("status") == COMPLETE and r.get("top1") is not None:
                out.setdefault(r["step"], {})[r["seed"]] = float(r["top1"])
        return out


def parse_set(text: str, roadmap: str, default_results: Path) -> ResultSet:
    """'cpu/fashion-mnist', 'cpu64/imagefolder-cifar10-jpg@other_results' -> its records (a ConfigError if none)."""
    where, _, results = text.partition("@")
    scale, _, data = where.partition("/")
    if not scale or not data:
        raise ConfigError(f"a result set is SCALE/DATA[@RESULTS] (e.g. cpu/fashion-mnist), not '{text}'")
    results_dir = Path(results) if results else default_results
    records, spec = select_records(roadmap, scale, data, results_dir)
    sizes = sorted({r["image_size"] for r in records if r.get("image_size")})
    if len(sizes) != 1:
        raise ConfigError(f"the records of {text} were trained at {len(sizes)} image sizes ({sizes}); a set needs one")
    return ResultSet(scale, data_slug(spec), results_dir, f"{sizes[0]} px {data_slug(spec)}", sizes[0], tuple(records),
                     shared_settings(records))


# Scale keys a set's label already says (image size, data) or that only name the scale.
LABELLED_SCALE_KEYS = frozenset({"name", "data", "image_size"})


def shared_settings(records: list[dict]) -> dict:
    """The scale settings (config.scale) every run of a set was trained with, less LABELLED_SCALE_KEYS. A key its
    runs differ in is left out: the classic ResNet-50 of a sweep cell may train its own number of epochs."""
    scales = [record_scale(r) for r in records]
    if not scales:
        return {}
    keys = set.intersection(*(set(scale) for scale in scales)) - LABELLED_SCALE_KEYS
    return {key: scales[0][key] for key in sorted(keys) if all(s[key] == scales[0][key] for s in scales)}


def settings_changed(a: ResultSet, b: ResultSet) -> list[str]:
    """The scale settings both sets share and hold at different values (['epochs', 'regularization'])."""
    return [key for key in sorted(a.settings.keys() & b.settings.keys()) if a.settings[key] != b.settings[key]]


def distinct_labels(sets: list[ResultSet]) -> list[ResultSet]:
    """'32 px fashion-mnist'; where labels would repeat, the settings that tell those sets apart
    ('epochs=40,regularization=0.25'), then the scale, then the results folder."""
    tagged = []
    for s in sets:
        twins = [o for o in sets if o.label == s.label and o is not s]
        changed = sorted({key for o in twins for key in settings_changed(s, o)})
        tagged.append(dataclasses.replace(s, tag=",".join(f"{key}={s.settings[key]}" for key in changed)))

    def labels(parts):
        return [" ".join(str(p) for p in parts(s) if p) for s in tagged]
    for parts in (lambda s: (s.label,), lambda s: (s.label, s.tag), lambda s: (s.label, s.scale, s.tag),
                  lambda s: (s.label, s.scale, s.tag, f"@{s.results}")):
        candidate = labels(parts)
        if len(set(candidate)) == len(sets):
            break
    return [dataclasses.replace(s, label=label) for s, label in zip(tagged, candidate)]


def welch_difference(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> dict:
    """mean(b) - mean(a) with Welch's CI and p; NaN where either side has fewer than 2 values or no spread."""
    out = {"diff": math.nan, "diff_low": math.nan, "diff_high": math.nan, "diff_p": math.nan, "diff_significant": None}
    if len(a) < 1 or len(b) < 1:
        return out
    out["diff"] = statistics.fmean(b) - statistics.fmean(a)
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return out
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(va + vb)
    p_value = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    out.update(diff_low=out["diff"] - half, diff_high=out["diff"] + half, diff_p=p_value,
               diff_significant=bool(out["diff"] - half > 0 or out["diff"] + half < 0))
    return out


def per_seed_differences(result_set: ResultSet, step: str, reference: str | None) -> list[float]:
    scores = result_set.by_step_seed
    if reference is None:
        return []
    mine, theirs = scores.get(step, {}), scores.get(reference, {})
    return [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]


def what_differs(a: ResultSet, b: ResultSet) -> list[str]:
    """The factors two sets differ in: 'resolution', 'dataset', 'scale' (its other settings), the settings of one
    scale that differ ('epochs and regularization': a sweep's cells), or else 'results' (where they were trained)."""
    factors = []
    if a.image_size != b.image_size:
        factors.append("resolution")
    if a.data != b.data:
        factors.append("dataset")
    changed = settings_changed(a, b) if a.scale == b.scale else []
    if a.scale != b.scale and a.image_size == b.image_size:
        factors.append("scale")
    if changed:
        factors.append(" and ".join(changed))
    elif a.results != b.results:
        factors.append("results")
    return factors


def comparisons(sets: list[ResultSet]) -> list[tuple[int, int, str]]:
    """(i, j, factor) for the pairs of sets that differ in one factor; without any, each set against the first."""
    pairs = []
    for i, j in itertools.combinations(range(len(sets)), 2):
        factors = what_differs(sets[i], sets[j])
        if len(factors) == 1:
            pairs.append((i, j, factors[0]))
    return pairs or [(0, j, " and ".join(what_differs(sets[0], sets[j])) or "nothing") for j in range(1, len(sets))]


def short_label(result_set: ResultSet) -> str:
    return result_set.label


def compared_rows(df: pd.DataFrame) -> list[dict]:
    """The steps that have a reference step to be compared with (not the roadmap's first)."""
    return [row for row in df.to_dict("records") if isinstance(row["reference"], str)]


def build_study(steps: list[Step], sets: list[ResultSet]) -> tuple[pd.DataFrame, list[tuple[int, int, str]]]:
    """One row per step: the paper's delta, each set's delta (paired CI) and each compared pair's difference."""
    references = reference_steps(steps)
    tables = [build_table(steps, list(s.records)).set_index("id") for s in sets]
    pairs = comparisons(sets)
    rows = []
    for step in steps:
        row = {"id": step.id, "change": step.title, "adopted": step.adopted, "reference": references[step.id],
               "paper_delta": tables[0].loc[step.id, "paper_delta"]}
        for k, (result_set, table) in enumerate(zip(sets, tables)):
            diffs = per_seed_differences(result_set, step.id, references[step.id])
            row[f"top1_{k}"] = table.loc[step.id, "top1_mean"]
            row[f"delta_{k}"] = table.loc[step.id, "delta"]
            row[f"low_{k}"], row[f"high_{k}"] = table.loc[step.id, "ci_low"], table.loc[step.id, "ci_high"]
            row[f"significant_{k}"] = table.loc[step.id, "significant"]
            row[f"n_{k}"] = len(diffs)
        for i, j, _ in pairs:
            test = welch_difference(per_seed_differences(sets[i], step.id, references[step.id]),
                                    per_seed_differences(sets[j], step.id, references[step.id]))
            row.update({f"{key}_{i}_{j}": value for key, value in test.items()})
        rows.append(row)
    return pd.DataFrame(rows), pairs


# ---------------------------------------------------------------------------- text
def _delta_cell(row: dict, k: int) -> str:
    if missing(row[f"delta_{k}"]):
        return "–"
    star = "*" if row[f"significant_{k}"] is True else ""
    ci = "" if missing(row[f"low_{k}"]) else f" [{signed(row[f'low_{k}'])}, {signed(row[f'high_{k}'])}]"
    return f"{signed(row[f'delta_{k}'])}{star}{ci}"


def _diff_cell(row: dict, i: int, j: int) -> str:
    diff = row[f"diff_{i}_{j}"]
    if missing(diff):
        return "–"
    star = "*" if row[f"diff_significant_{i}_{j}"] is True else ""
    low, high = row[f"diff_low_{i}_{j}"], row[f"diff_high_{i}_{j}"]
    return f"{signed(diff)}{star}" + ("" if missing(low) else f" [{signed(low)}, {signed(high)}]")


def study_markdown(df: pd.DataFrame, sets: list[ResultSet], pairs: list) -> str:
    header = ["step", "change", "paper Δ"] + [f"Δ {short_label(s)} (n)" for s in sets] + \
             [f"{short_label(sets[j])} − {short_label(sets[i])} ({factor})" for i, j, factor in pairs]
    rows = []
    for row in compared_rows(df):
        paper = "–" if missing(row["paper_delta"]) else signed(row["paper_delta"])
        rows.append([row["id"], row["change"] + ("" if row["adopted"] else " (branch)"), paper]
                    + [f"{_delta_cell(row, k)} ({row[f'n_{k}']})" for k in range(len(sets))]
                    + [_diff_cell(row, i, j) for i, j, _ in pairs])
    return markdown_table(header, rows, align="lll" + "r" * (len(sets) + len(pairs)))


def endpoint_line(result_set: ResultSet, steps: list[Step]) -> str | None:
    """Whether ConvNeXt-T (the roadmap's last step equal to a library ConvNeXt) ends above the modern-recipe
    ResNet (the first modern step), paired over the set's seeds."""
    start = next((s for s in steps if s.recipe.name == "modern" and s.adopted), None)
    end = next((s for s in steps if s.equals and "convnext" in s.equals and s.adopted), None)
    if start is None or end is None:
        return None
    scores = result_set.by_step_seed
    test = paired_delta(scores.get(start.id, {}), scores.get(end.id, {}))
    if test["n_pairs"] == 0:
        return None
    delta = statistics.fmean(scores[end.id][s] - scores[start.id][s] for s in set(scores[end.id]) & set(scores[start.id]))
    verdict = ("above" if delta > 0 else "below") + (" beyond noise" if test["significant"] else
                                                     " within noise" if test["significant"] is False else " (no test)")
    return (f"{short_label(result_set)}: {end.id} ends {verdict} {start.id} ({signed(delta)} points, "
            f"n={test['n_pairs']})")


# A set needs 2 seeds of a step and its reference (both sets, for a difference) before a t-test can say anything.
UNTESTED = "not tested yet (fewer than 2 seeds with the step and its reference)"


# What the table's cells mean: the notes under it, before the study's answer.
STUDY_LEGEND = (f"Δ: a step's mean top-1 minus its reference step's in that set, * beyond noise (paired t-test over "
                f"the set's seeds, {CONFIDENCE:.0%} CI in brackets); paper Δ: ImageNet-1k at 224 px.",
                f"Differences between sets: {WELCH_TEST}; * marks those.")


def study_notes(df: pd.DataFrame, sets: list[ResultSet], pairs: list, steps: list[Step]) -> list[str]:
    """The study's answer, a line each: what reproduces in each set, what depends on the factor two sets differ
    in, and where ConvNeXt-T ends against the modern-recipe ResNet."""
    rows = compared_rows(df)
    notes = []
    for k, result_set in enumerate(sets):
        tested = [r for r in rows if r[f"significant_{k}"] in (True, False) and not missing(r["paper_delta"])]
        agree = [r["id"] for r in tested if r[f"significant_{k}"] and _same_sign(r[f"delta_{k}"], r["paper_delta"])]
        counted = f"{len(agree)} of {len(tested)} tested steps" + (f": {', '.join(agree)}" if agree else "")
        notes.append(f"Reproduces in {short_label(result_set)} (same sign as the paper, beyond noise): "
                     + (counted if tested else UNTESTED))
    for i, j, factor in pairs:
        tested = [r for r in rows if r[f"diff_significant_{i}_{j}"] is not None]
        moved = [r for r in tested if r[f"diff_significant_{i}_{j}"]]
        towards = [r["id"] for r in moved if _moves_towards_paper(r, i, j)]
        if moved:
            found = ", ".join(f"{r['id']} ({signed(r[f'diff_{i}_{j}'])})" for r in moved)
        else:
            found = f"none of {len(tested)} tested steps" if tested else UNTESTED
        text = (f"Depends on {factor} ({short_label(sets[i])} -> {short_label(sets[j])}), the step's delta changing "
                f"beyond noise: {found}")
        if moved:
            text += f"; towards the paper's sign: {', '.join(towards) or 'none'}"
        notes.append(text)
    notes += [line for s in sets if (line := endpoint_line(s, steps))]
    return notes


def _same_sign(a: float, b: float) -> bool:
    return (a > 0) == (b > 0) and a != 0 and b != 0


def _moves_towards_paper(row: dict, i: int, j: int) -> bool:
    paper = row["paper_delta"]
    return not missing(paper) and paper != 0 and (row[f"diff_{i}_{j}"] > 0) == (paper > 0)


def context_line(roadmap: str, sets: list[ResultSet]) -> str:
    parts = [f"{s.label}: seeds {', '.join(map(str, sorted({r['seed'] for r in s.records})))}, {len(s.records)} runs"
             for s in sets]
    return f"Study of roadmap `{roadmap}` over {len(sets)} result sets: " + "; ".join(parts) + "."


def study_stem(roadmap: str, sets: list[ResultSet]) -> str:
    return f"study-{roadmap}-" + "-vs-".join("-".join(filter(None, (s.scale, s.data, s.tag))) for s in sets)


# ---------------------------------------------------------------------------- the figure
SET_COLORS = ("#3b6ea8", "#e08a2e", "#4c9a5b", "#8e5ba8", "#8c8c8c")
PAPER_COLOR = "#d1495b"


def plot_study(df: pd.DataFrame, sets: list[ResultSet], out_dir: Path, stem: str, title: str) -> list[Path]:
    """Each step's delta in every set (its 95% CI, * beyond noise) beside the paper's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = compared_rows(df)
    series = len(sets) + 1
    height = 0.8 / series
    with plt.rc_context({"svg.hashsalt": "roadmap", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(9, 1.5 + 0.22 * series * len(rows)), layout="constrained")
        for n, row in enumerate(rows):
            y0 = n - 0.4 + height / 2
            if not missing(row["paper_delta"]):
                ax.barh(y0, row["paper_delta"], height, color=PAPER_COLOR, alpha=0.6,
                        label="paper (ImageNet, 224 px)" if n == 0 else None)
            for k, result_set in enumerate(sets):
                y, delta = y0 + (k + 1) * height, row[f"delta_{k}"]
                if missing(delta):
                    continue
                color = SET_COLORS[k % len(SET_COLORS)]
                err = None if missing(row[f"low_{k}"]) else [[delta - row[f"low_{k}"]], [row[f"high_{k}"] - delta]]
                ax.barh(y, delta, height, color=color, xerr=err, error_kw={"elinewidth": 0.8, "capsize": 1.5},
                        label=short_label(result_set) if n == 0 else None)
                if row[f"significant_{k}"] is True:
                    end = row[f"high_{k}"] if delta >= 0 else row[f"low_{k}"]
                    ax.text(end, y, " *" if delta >= 0 else "* ", va="center", ha="left" if delta >= 0 else "right",
                            fontsize=8, color=color)
        ax.set_yticks(range(len(rows)), [r["id"] for r in rows])
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel(f"Δ top-1 vs reference step (points); ours ± {CONFIDENCE:.0%} CI, * beyond seed noise")
        ax.legend(loc="best", fontsize=8)
        ax.set_title(textwrap.fill(title.replace("`", ""), 110), fontsize=9)
        paths = save_figure(fig, out_dir, stem)
        plt.close(fig)
    return paths


# ---------------------------------------------------------------------------- entry point
def make_study(roadmap: str, set_texts: list[str], results_dir: Path, out_dir: Path, readmes: list[Path] = (),
               with_plot: bool = True) -> list[Path]:
    """<out_dir>/study-<roadmap>-<sets>.md/.csv (and .png/.svg); in each of `readmes`, every study block it has
    markers for (readme.write_report_blocks)."""
    if len(set_texts) < 2:
        raise ConfigError("a study needs two or more result sets (SCALE/DATA[@RESULTS] each)")
    steps = load_roadmap(roadmap)
    sets = distinct_labels([parse_set(text, roadmap, results_dir) for text in set_texts])
    held = {readme: held_markers(readme, [study_markers(roadmap), study_markers(roadmap, "answer")])
            for readme in readmes}   # refused before anything is written
    check_writable(out_dir, "--out")
    df, pairs = build_study(steps, sets)
    stem, title = study_stem(roadmap, sets), context_line(roadmap, sets)
    answer = study_notes(df, sets, pairs, steps)
    body = study_markdown(df, sets, pairs) + "\n" + bullets([*STUDY_LEGEND, *answer])
    written = [Path(out_dir) / f"{stem}.md", Path(out_dir) / f"{stem}.csv"]
    atomic_write_text(written[0], title + "\n\n" + body)
    atomic_write_text(written[1], df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    if with_plot:
        written += plot_study(df, sets, out_dir, stem, title)
    figure = Path(out_dir) / f"{stem}.png" if with_plot else None
    written += write_report_blocks(held, lambda part="": study_markers(roadmap, part), "study", title, body, answer,
                                   figure)
    return written
