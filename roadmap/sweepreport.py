"""A sweep's report: `runner.py sweep-report NAME`, from the records of its cells alone (pycls's generated tables;
the ResNet-strikes-back tables of one model under several budgets).

Per cell, each step's top-1 and the gap between the roadmap's endpoints (ConvNeXt-T minus the modern-recipe
ResNet-50, paired over the cell's seeds: Student's t on the per-seed gaps). Per factor, how the gap moves from one
level to another with every other factor fixed: seeds of different cells are independent runs, so Welch's t on the
two cells' per-seed gaps (study.welch_difference). Generated lines say which factors move the gap beyond noise and
where, if anywhere, ConvNeXt-T ends above the modern ResNet; a figure puts the gap against each factor's level.
"""
from __future__ import annotations

import math
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import ConfigError, Step, load_roadmap, load_scale
from .figures import save_figure
from .markdown import bullets, markdown_table, signed
from .readme import held_markers, sweep_markers, write_report_blocks
from .results import COMPLETE, atomic_write_text, check_writable, data_slug, load_records
from .study import welch_difference
from .sweep import Cell, Sweep, load_sweep, plan_sweep
from .table import CONFIDENCE, _mean, _std, missing, paired_delta

UNTESTED = "no test (fewer than 2 seeds with both endpoints)"


@dataclass(frozen=True)
class Endpoints:
    start: Step     # the modern-recipe ResNet: the first adopted step trained with the modern recipe
    end: Step       # ConvNeXt-T: the adopted step equal to a library ConvNeXt

    @property
    def paper_gap(self) -> float:
        return self.end.paper.top1 - self.start.paper.top1


def find_endpoints(sweep: Sweep) -> Endpoints:
    steps = [s for s in load_roadmap(sweep.roadmap) if s.id in sweep.steps]
    start = next((s for s in steps if s.recipe.name == "modern" and s.adopted), None)
    end = next((s for s in steps if s.equals and "convnext" in s.equals and s.adopted), None)
    if start is None or end is None:
        raise ConfigError(f"{sweep.path}: the report measures the gap between the modern-recipe ResNet and ConvNeXt; "
                          f"its steps ({', '.join(sweep.steps)}) need both (e.g. modern_recipe, separate_downsampling)")
    return Endpoints(start, end)


# ---------------------------------------------------------------------------- each cell
def base_levels(sweep: Sweep) -> dict:
    """Each factor's level at the base scale: its value there (a data spec as its folder name; a recipe key is
    the steps' own preset)."""
    scale = load_scale(sweep.scale)
    return {f: data_slug(sweep.data or scale.data) if f == "scale.data" else
            getattr(scale, f.partition(".")[2]) if f.startswith("scale.") else "preset" for f in sweep.factors}


def coordinates(sweep: Sweep) -> dict[int, dict]:
    """Every cell's level of every factor, the base scale's where the cell leaves a factor alone."""
    base = base_levels(sweep)
    return {cell.index: {f: data_slug(v) if f == "scale.data" else v for f, v in {**base, **cell.levels}.items()}
            for cell in sweep.cells}


def cell_records(sweep: Sweep, cell: Cell, folder: Path) -> list[dict]:
    """The cell's complete runs of the sweep's steps (every seed there, the sweep's and any other)."""
    return [r for r in load_records(folder, sweep.roadmap, sweep.scale, sweep.data_of(cell) or load_scale(sweep.scale).data)
            if r["status"] == COMPLETE and r["step"] in sweep.steps and not missing(r.get("top1"))]


def scores_of(records: list[dict]) -> dict[str, dict[int, float]]:
    """step -> seed -> top-1."""
    scores: dict[str, dict[int, float]] = {}
    for record in records:
        scores.setdefault(record["step"], {})[record["seed"]] = float(record["top1"])
    return scores


def per_seed_gaps(scores: dict, ends: Endpoints) -> list[float]:
    start, end = scores.get(ends.start.id, {}), scores.get(ends.end.id, {})
    return [end[s] - start[s] for s in sorted(set(start) & set(end))]


def cell_rows(sweep: Sweep, results: Path, ends: Endpoints) -> list[dict]:
    coords = coordinates(sweep)
    # where each cell's records are (its own folder, or results/ itself for a cell equal to the base), planned once
    folders = {run.cell.index: run.results for run in plan_sweep(sweep, results, [c.index for c in sweep.cells])}
    rows = []
    for cell in sweep.cells:
        folder = folders[cell.index]
        records = cell_records(sweep, cell, folder)
        scores = scores_of(records)
        data = data_slug(sweep.data_of(cell) or load_scale(sweep.scale).data)
        row = {"index": cell.index, "cell": cell.name, **coords[cell.index], "untrained": cell.untrained,
               "study_set": f"{sweep.scale}/{data}@{folder.as_posix()}"}
        for step in sweep.steps:
            values = [scores.get(step, {})[s] for s in sorted(scores.get(step, {}))]
            row.update({f"{step}_mean": _mean(values), f"{step}_std": _std(values), f"{step}_n": len(values)})
        gaps = per_seed_gaps(scores, ends)
        test = paired_delta(scores.get(ends.start.id, {}), scores.get(ends.end.id, {}))
        row.update(gap=_mean(gaps), gap_low=test["ci_low"], gap_high=test["ci_high"], gap_p=test["p_value"],
                   gap_significant=test["significant"], gap_n=len(gaps), gaps=gaps,
                   run_hours=sum(float(r.get("wall_s") or 0.0) for r in records) / 3600)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- each factor
def factor_comparisons(sweep: Sweep, rows: list[dict]) -> list[dict]:
    """For each factor, each line of cells that differ in it alone: every level against the line's reference level
    (the base scale's, else the lowest), Welch's t on the two cells' per-seed gaps."""
    base = base_levels(sweep)
    out = []
    for factor in sweep.factors:
        others = [f for f in sweep.factors if f != factor]
        for key, line in factor_lines(sweep, rows, factor).items():
            reference = next((r for r in line if r[factor] == base[factor]), line[0])
            for row in line:
                if row is reference:
                    continue
                test = welch_difference(reference["gaps"], row["gaps"])
                out.append({"factor": factor, "fixed": ", ".join(f"{short(f)}={v}" for f, v in zip(others, key)),
                            "from": reference[factor], "to": row[factor], "from_cell": reference["cell"],
                            "to_cell": row["cell"], "gap_from": reference["gap"], "gap_to": row["gap"],
                            "n_from": reference["gap_n"], "n_to": row["gap_n"], **test})
    return out


def factor_lines(sweep: Sweep, rows: list[dict], factor: str) -> dict[tuple, list[dict]]:
    """The cells with a gap that differ in `factor` alone, two or more a line, keyed by the other factors' levels
    (as text) and ordered by `factor`'s level."""
    others = [f for f in sweep.factors if f != factor]
    lines: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["gap_n"]:
            lines.setdefault(tuple(str(row[f]) for f in others), []).append(row)
    return {key: sorted(line, key=lambda r: level_order(r[factor])) for key, line in lines.items() if len(line) > 1}


def level_order(level) -> tuple:
    """Numbers by value, then names by name: a factor's levels left to right."""
    return (0, float(level), "") if isinstance(level, (int, float)) and not isinstance(level, bool) else (1, 0.0, str(level))


def short(factor: str) -> str:
    return factor.removeprefix("scale.")


# ---------------------------------------------------------------------------- text
def _top1(row: dict, step: str) -> str:
    n = row[f"{step}_n"]
    if n == 0:
        return "–"
    return f"{row[f'{step}_mean']:.2f} ± {row[f'{step}_std']:.2f} (n={n})" if n >= 2 else f"{row[f'{step}_mean']:.2f} (n=1)"


def _ci(low, high) -> str:
    return "–" if missing(low) else f"[{signed(low)}, {signed(high)}]"


def _noise(flag) -> str:
    return "yes" if flag else "no" if flag is False else "–"


def cell_status(row: dict) -> str:
    if row["untrained"]:
        return f"untrained: {row['untrained']}"
    if row["gap_n"]:
        return f"{row['gap_n']} seed(s)"
    return "training: no seed with both endpoints yet" if row["run_hours"] else "not trained yet"


def cells_markdown(sweep: Sweep, rows: list[dict], ends: Endpoints) -> str:
    header = ["cell", *map(short, sweep.factors), *(f"{s} top-1 (%)" for s in sweep.steps), "gap", f"gap {CONFIDENCE:.0%} CI",
              "> noise", "h of runs", "status"]
    body = [[r["cell"], *(str(r[f]) for f in sweep.factors), *(_top1(r, s) for s in sweep.steps), signed(r["gap"]),
             _ci(r["gap_low"], r["gap_high"]), _noise(r["gap_significant"]),
             f"{r['run_hours']:.2f}" if r["run_hours"] else "–", cell_status(r)] for r in rows]
    return markdown_table(header, body, align="l" * (1 + len(sweep.factors)) + "r" * (len(sweep.steps) + 2) + "lrl")


def gaps_markdown(rows: list[dict], ends: Endpoints) -> str:
    """The answer's table: each cell with a gap, the gap alone."""
    header = ["cell", f"gap: {ends.end.id} - {ends.start.id}", f"{CONFIDENCE:.0%} CI", "> noise", "seeds"]
    body = [[r["cell"], signed(r["gap"]), _ci(r["gap_low"], r["gap_high"]), _noise(r["gap_significant"]),
             str(r["gap_n"])] for r in rows if r["gap_n"]]
    return markdown_table(header, body, align="lrrlr")


def factors_markdown(comparisons: list[dict]) -> str:
    header = ["factor", "others fixed", "from -> to", "gap from (n)", "gap to (n)", "Δ gap", f"Δ gap {CONFIDENCE:.0%} CI",
              "> noise"]
    body = [[short(c["factor"]), c["fixed"], f"{c['from']} -> {c['to']}", f"{signed(c['gap_from'])} ({c['n_from']})",
             f"{signed(c['gap_to'])} ({c['n_to']})", signed(c["diff"]), _ci(c["diff_low"], c["diff_high"]),
             _noise(c["diff_significant"])] for c in comparisons]
    return markdown_table(header, body, align="llllrrrl")


def factor_line(factor: str, comparisons: list[dict]) -> str:
    mine = [c for c in comparisons if c["factor"] == factor]
    tested = [c for c in mine if c["diff_significant"] is not None]
    moved = [c for c in tested if c["diff_significant"]]
    if not mine:
        return f"{short(factor)}: no comparison yet (no two cells with records differ in it alone)"
    if not tested:
        return f"{short(factor)}: {UNTESTED} in its {len(mine)} comparison(s)"
    found = "; ".join(f"{c['from']} -> {c['to']} ({signed(c['diff'])} [{signed(c['diff_low'])}, "
                      f"{signed(c['diff_high'])}], with {c['fixed']})" for c in moved)
    return (f"{short(factor)}: moves the gap beyond noise in {len(moved)} of {len(tested)} tested comparison(s)"
            + (f": {found}" if moved else ""))


def legend(sweep: Sweep, ends: Endpoints) -> list[str]:
    """What the tables' columns mean."""
    return [f"Gap: {ends.end.id} (ConvNeXt-T) minus {ends.start.id} (the modern-recipe ResNet-50) in top-1 points, "
            f"paired over each cell's seeds (Student's t on the per-seed gaps, {CONFIDENCE:.0%} CI); the paper's gap "
            f"on ImageNet-1k at 224 px: {signed(ends.paper_gap)}.",
            f"Δ gap: the gap at one level minus the gap at the line's reference level (the base scale's, else the "
            f"lowest), every other factor fixed; Welch's t on the two cells' per-seed gaps (seeds of different cells "
            f"are independent runs), {CONFIDENCE:.0%} CI.",
            "h of runs: the cell's runs' own wall times added up (two run at a time with --jobs 2, so the cell "
            "took about half that of the machine)."]


def answer_lines(sweep: Sweep, rows: list[dict], comparisons: list[dict], ends: Endpoints) -> list[str]:
    """What the sweep found, a line each: which factors move the gap beyond noise, and where ConvNeXt-T ends."""
    trained = [r for r in rows if r["gap_n"]]
    tested = [r for r in trained if r["gap_significant"] is not None]
    above = [r for r in tested if r["gap_significant"] and r["gap"] > 0]
    at_or_above = [r for r in trained if r["gap"] >= 0]
    movers = [short(f) for f in sweep.factors if any(c["factor"] == f and c["diff_significant"] for c in comparisons)]
    lines = [f"Cells with records: {len(trained)} of {len(rows)} ({sum(r['gap_n'] >= 3 for r in trained)} with 3 "
             f"seeds or more); untrained by the file: {sum(bool(r['untrained']) for r in rows)}."]
    lines += [factor_line(f, comparisons) for f in sweep.factors]
    lines.append("Factors that move the gap beyond noise: " + (", ".join(movers) if movers else "none"))
    if above:
        lines.append(f"{ends.end.id} ends above {ends.start.id} beyond noise in: "
                     + ", ".join(f"{r['cell']} ({signed(r['gap'])})" for r in above))
    elif tested:
        best = max(tested, key=lambda r: r["gap"])
        lines.append(f"{ends.end.id} ends above {ends.start.id} beyond noise in none of the {len(tested)} tested cells; "
                     f"nearest: {cell_with_gap(best)}")
    level = [r for r in tested if not r["gap_significant"]]
    lines.append(f"Cells where {ends.end.id} and {ends.start.id} are level within noise (the gap's CI spans 0): "
                 + (", ".join(map(cell_with_gap, level)) if level else "none"))
    lines.append(f"Cells where {ends.end.id} is at or above {ends.start.id} (the mean gap >= 0, noise or not): "
                 + (", ".join(r["cell"] for r in at_or_above) if at_or_above else "none"))
    return lines


def cell_with_gap(row: dict) -> str:
    """'epochs=40 (-0.90 [-1.67, -0.14])'"""
    return f"{row['cell']} ({signed(row['gap'])} [{signed(row['gap_low'])}, {signed(row['gap_high'])}])"


def context_line(sweep: Sweep, rows: list[dict]) -> str:
    runs = sum(r[f"{s}_n"] for r in rows for s in sweep.steps)
    return (f"Sweep `{sweep.name}` ({sweep.title}): roadmap `{sweep.roadmap}`, base scale `{sweep.scale}`, "
            f"{len(rows)} cells, {runs} complete runs; each cell is a `runner.py study` set (the CSV's study_set "
            f"column).")


def cells_frame(sweep: Sweep, rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{k: (" ".join(f"{g:.2f}" for g in v) if k == "gaps" else v) for k, v in r.items()}
                         for r in rows])


# ---------------------------------------------------------------------------- figure
def plot_sweep(sweep: Sweep, rows: list[dict], comparisons: list[dict], ends: Endpoints, out_dir: Path,
               stem: str) -> list[Path]:
    """The gap against each factor's level, a line per level of the other factors; zero and the paper's gap marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = list(dict.fromkeys(c["factor"] for c in comparisons)) or list(sweep.factors[:1])
    fig, axes = plt.subplots(1, len(factors), figsize=(4.6 * len(factors), 4.2), squeeze=False, sharey=True)
    for ax, factor in zip(axes[0], factors):
        plot_factor(ax, sweep, rows, factor)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.axhline(ends.paper_gap, color="#d1495b", linestyle="--", linewidth=1.0,
                   label=f"paper (ImageNet, 224 px): {signed(ends.paper_gap)}")
        ax.set_xlabel(short(factor) + (" (log scale)" if "epochs" in factor else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7, frameon=False)   # clear of the lines
    axes[0][0].set_ylabel(f"gap: {ends.end.id}\n- {ends.start.id}\n(top-1 points, ± {CONFIDENCE:.0%} CI)")
    fig.suptitle(f"Sweep {sweep.name}: {sweep.title}", fontsize=10)
    fig.tight_layout()
    paths = save_figure(fig, out_dir, stem)
    plt.close(fig)
    return paths


def plot_factor(ax, sweep: Sweep, rows: list[dict], factor: str) -> None:
    others = [f for f in sweep.factors if f != factor]
    lines = factor_lines(sweep, rows, factor)
    levels = sorted({r[factor] for line in lines.values() for r in line}, key=level_order)
    numeric = all(level_order(v)[0] == 0 for v in levels)
    position = (lambda v: float(v)) if numeric else (lambda v: float(levels.index(v)))
    for key, line in lines.items():
        x = [position(r[factor]) for r in line]
        y = [r["gap"] for r in line]
        err = [[0.0 if missing(r["gap_low"]) else r["gap"] - r["gap_low"] for r in line],
               [0.0 if missing(r["gap_high"]) else r["gap_high"] - r["gap"] for r in line]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, linewidth=1.2,
                    label=textwrap.fill(", ".join(f"{short(f)}={v}" for f, v in zip(others, key)), 48,
                                        break_on_hyphens=False))
    if numeric and "epochs" in factor:
        ax.set_xscale("log")
    if levels:
        ax.set_xticks([position(v) for v in levels], [str(v) for v in levels])
        ax.minorticks_off()


# ---------------------------------------------------------------------------- entry point
def make_sweep_report(name: str, results: Path, out_dir: Path, readmes: list[Path] = (),
                      with_plot: bool = True) -> list[Path]:
    """<out>/sweep-NAME.md, .csv (a row per cell), -factors.csv (a row per comparison), .png/.svg; in each of
    `readmes`, every sweep block it has markers for (readme.write_report_blocks)."""
    sweep = load_sweep(name)
    ends = find_endpoints(sweep)
    held = {readme: held_markers(readme, [sweep_markers(name), sweep_markers(name, "answer")])
            for readme in readmes}   # refused before anything is written
    check_writable(out_dir, "--out")
    rows = cell_rows(sweep, results, ends)
    comparisons = factor_comparisons(sweep, rows)
    answer = answer_lines(sweep, rows, comparisons, ends)
    body = (cells_markdown(sweep, rows, ends) + "\n" + (factors_markdown(comparisons) + "\n" if comparisons else "")
            + bullets([*legend(sweep, ends), *answer]))
    title, out, stem = context_line(sweep, rows), Path(out_dir), f"sweep-{name}"
    written = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}-factors.csv"]
    atomic_write_text(written[0], title + "\n\n" + body)
    atomic_write_text(written[1], cells_frame(sweep, rows).to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    atomic_write_text(written[2], pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS).to_csv(
        index=False, float_format="%.6g", lineterminator="\n"))
    if with_plot:
        written += plot_sweep(sweep, rows, comparisons, ends, out, stem)
    figure = out / f"{stem}.png" if with_plot else None
    written += write_report_blocks(held, lambda part="": sweep_markers(name, part), f"sweep {name}", title, body,
                                   answer, figure, gaps_markdown(rows, ends))
    return written


COMPARISON_COLUMNS = ["factor", "fixed", "from", "to", "from_cell", "to_cell", "gap_from", "gap_to", "n_from", "n_to",
                      "diff", "diff_low", "diff_high", "diff_p", "diff_significant"]
