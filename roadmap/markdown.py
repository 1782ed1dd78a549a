"""The table as text: markdown (GitHub) and csv, the header line about the runs, and the notes under it.

Every output is a pure function of the table (table.py), so regenerating it from the same records gives the
same bytes. A reverse roadmap (each change taken away from ConvNeXt-T) shows each change's forward delta
where the forward roadmap shows the paper's numbers; the caller says which it is.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .results import atomic_write_text, printable
from .table import CONFIDENCE, SIGNIFICANCE_TEST, missing


def markdown_table(header: list[str], rows: list[list], align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; numbers right-aligned, or `align` per column ('l' / 'r')."""
    def cell(v):
        return "" if v is None else str(v).replace("|", "\\|")
    if align is None:
        align = ["r" if rows and isinstance(rows[0][i], (int, float)) and not isinstance(rows[0][i], bool) else "l"
                 for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the header line
def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def context_line(context: dict) -> str:
    """'Roadmap `resnet50`, scale `demo`, data `fashion-mnist` (28 px, 10 classes): classic 1 epochs, modern 1 epochs,
    regularization 1.0; seeds 0, 1; ...'."""
    size = ", ".join([f"{s} px" for s in context.get("image_sizes", [])] +
                     [f"{c} classes" for c in context.get("num_classes", [])])
    parts = [", ".join(context["training"])] if context.get("training") else []
    parts += [f"seeds {', '.join(map(str, context['seeds']))}", "; ".join(context["devices"]),
             f"{context['runs']} runs, total wall time {_duration(context['wall_s'])}"]
    if context.get("git_commits"):
        parts.append("git " + ", ".join(c[:10] for c in context["git_commits"]))
    return printable(f"Roadmap `{context['roadmap']}`, scale `{context['scale']}`, data `{context['data']}`"
                     f"{f' ({size})' if size else ''}: " + "; ".join(parts) + ".")


# ---------------------------------------------------------------------------- cells
def signed(x) -> str:
    """'+1.23' / '-0.40' / '–' for no value; never '-0.00'."""
    if missing(x):
        return "–"
    text = f"{x:+.2f}"
    return "+0.00" if text == "-0.00" else text


def _top1_cell(mean, std, n) -> str:
    if n == 0:
        return "–"
    return f"{mean:.2f} ± {std:.2f} (n={n})" if n >= 2 else f"{mean:.2f} (n=1)"


def _yes_no(flag) -> str:
    return "–" if missing(flag) else ("yes" if flag else "no")


def _count(n) -> str:
    if missing(n):
        return "–"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    return str(int(n))


def _gflops(x) -> str:
    return "–" if missing(x) else f"{x:.3g}"


def change_label(row) -> str:
    """The step's title; a side branch says so."""
    return row["change"] if row["adopted"] else f"{row['change']} (branch)"


def _interval(row) -> str:
    return "–" if missing(row["ci_low"]) else f"[{signed(row['ci_low'])}, {signed(row['ci_high'])}]"


def _noise(row) -> str:
    """yes / no from the paired test; otherwise why there is no test."""
    if missing(row["delta"]):
        return "–"
    if row["n_pairs"] < 2:
        return f"n={int(row['n_pairs'])}: no test"
    if missing(row["significant"]):
        return "no spread: no test"
    return "yes" if row["significant"] else "no"


# ---------------------------------------------------------------------------- the table
CI_HEADER = f"Δ {CONFIDENCE:.0%} CI"
# Column -> alignment, and the columns of each kind of roadmap: a reverse roadmap puts what each change gave on
# the way forward where the forward roadmap puts the paper's numbers.
ALIGN = {"step": "l", "change": "l", "top-1 (%)": "r", "Δ": "r", CI_HEADER: "r", "paper top-1": "r",
         "paper Δ": "r", "sign agrees": "l", "reverts": "r", "forward Δ": "r", "fwd > noise": "l", "> noise": "l",
         "GMACs": "r", "params": "r", "img/s": "r", "status": "l"}
FORWARD_HEADER = ["step", "change", "top-1 (%)", "Δ", CI_HEADER, "paper top-1", "paper Δ", "sign agrees", "> noise",
                  "GMACs", "params", "img/s", "status"]
REVERSE_HEADER = ["step", "change", "top-1 (%)", "Δ", CI_HEADER, "reverts", "forward Δ", "fwd > noise", "> noise",
                  "GMACs", "params", "img/s", "status"]


def _cells(row: dict, reverse: bool) -> dict[str, str]:
    """Every cell of a row by column name."""
    cells = {"step": row["id"], "change": change_label(row),
             "top-1 (%)": _top1_cell(row["top1_mean"], row["top1_std"], row["n"]), "Δ": signed(row["delta"]), CI_HEADER: _interval(row), "> noise": _noise(row),
             "GMACs": _gflops(row["gflops"]), "params": _count(row["params"]),
             "img/s": "–" if missing(row["images_per_s"]) else f"{row['images_per_s']:,.0f}", "status": row["status"]}
    if reverse:
        cells.update({"reverts": row["reverts"] or "–", "forward Δ": signed(row["forward_delta"]),
                      "fwd > noise": _yes_no(row["forward_significant"])})
    else:
        cells.update({"paper top-1": "–" if missing(row["paper_top1"]) else f"{row['paper_top1']:.2f}",
                      "paper Δ": signed(row["paper_delta"]), "sign agrees": _yes_no(row["sign_agrees"])})
    return cells


def table_markdown(df: pd.DataFrame, reverse: bool) -> str:
    """The table as markdown; `reverse`: a reverse roadmap (its frame has add_forward_deltas' columns)."""
    header = REVERSE_HEADER if reverse else FORWARD_HEADER
    rows = [[cells[name] for name in header] for cells in (_cells(row, reverse) for row in df.to_dict("records"))]
    return markdown_table(header, rows, align=[ALIGN[name] for name in header])


# ---------------------------------------------------------------------------- the notes under it
def reproduction_notes(df: pd.DataFrame) -> list[str]:
    """What reproduces, from the table alone: per step, sign agreement with the paper and the noise test."""
    rows = [row for row in df.to_dict("records") if not missing(row["delta"]) and not missing(row["paper_delta"])]
    tested = [row for row in rows if row["significant"] in (True, False)]
    if not rows:
        return []  # no paper numbers to compare with (a roadmap of one's own)
    if not tested:
        return ["What reproduces: no step has 2 or more paired seeds with its reference yet, so no delta can be "
                "told from noise."]
    groups = {"reproduce (same sign as the paper and beyond noise)":
              [r for r in tested if r["sign_agrees"] and r["significant"]],
              "same sign as the paper but within noise": [r for r in tested if r["sign_agrees"] and not r["significant"]],
              "opposite sign, within noise": [r for r in tested if not r["sign_agrees"] and not r["significant"]],
              "do not reproduce (opposite sign, beyond noise)": [r for r in tested if not r["sign_agrees"] and r["significant"]]}
    half_widths = sorted((r["ci_high"] - r["ci_low"]) / 2 for r in tested)
    notes = [f"What reproduces at this scale: {len(groups['reproduce (same sign as the paper and beyond noise)'])} "
             f"of {len(tested)} tested steps (each step's delta against its reference, paired over seeds)."]
    notes += [f"{label}: {', '.join(r['id'] for r in members)}" for label, members in groups.items() if members]
    notes.append(f"Smallest delta this scale tells from noise: about ±{statistics.median(half_widths):.2f} points "
                 f"(median half-width of the deltas' {CONFIDENCE:.0%} confidence intervals; "
                 f"range {half_widths[0]:.2f} to {half_widths[-1]:.2f}).")
    return notes


def worth_at_end_notes(df: pd.DataFrame) -> list[str]:
    """A reverse roadmap, from the table alone: which changes still matter in the finished network."""
    tested = [row for row in df.to_dict("records") if row["significant"] in (True, False)]
    if not tested:
        return ["What each change is worth at the end: no undo has 2 or more paired seeds with ConvNeXt-T yet, "
                "so none can be told from noise."]
    still_matter = [r for r in tested if r["significant"] and r["delta"] < 0]
    groups = {"still matter at the end (taking the change away costs accuracy beyond noise)": still_matter,
              "better without at this scale (taking the change away gains accuracy beyond noise)":
              [r for r in tested if r["significant"] and r["delta"] > 0],
              "worth nothing measurable at the end (within noise)": [r for r in tested if not r["significant"]]}
    notes = [f"What each change is worth at the end: {len(still_matter)} of {len(tested)} tested changes still matter."]
    notes += [f"{label}: " + ", ".join(f"{r['id']} ({signed(r['delta'])})" for r in members)
              for label, members in groups.items() if members]
    both = [r for r in tested if r["significant"] and _yes_no(r["forward_significant"]) == "yes"]
    if both:
        agree = [r for r in both if (r["delta"] < 0) == (r["forward_delta"] > 0)]
        notes.append(f"Where both directions clear the noise, the end agrees with the way forward for {len(agree)} "
                     f"of {len(both)} changes (a gain on the way is a cost when taken away, or the reverse): "
                     + ", ".join(f"{r['id']} {'agrees' if r in agree else 'disagrees'}" for r in both) + ".")
    return notes


def spread_notes(df: pd.DataFrame) -> list[str]:
    """Where the steps' accuracy lies and how much seeds move it: what a scale is judged by."""
    rows = [row for row in df.to_dict("records") if not missing(row["top1_mean"])]
    if not rows:
        return []
    lowest = min(rows, key=lambda row: row["top1_mean"])
    stds = [row["top1_std"] for row in rows if not missing(row["top1_std"])]
    spread = f"; median seed std {statistics.median(stds):.2f} points" if stds else ""
    return [f"Over the {len(rows)} steps with results: median top-1 {statistics.median(r['top1_mean'] for r in rows):.2f}%, "
            f"lowest {lowest['top1_mean']:.2f}% ({lowest['id']}){spread}."]


def table_notes(df: pd.DataFrame, context: dict, reverse: bool) -> str:
    """The bullet list under the table: how to read it, step notes, every run that gave no top-1."""
    sizes = ", ".join(f"{s} px" for s in context.get("image_sizes", [])) or "the run's image size"
    notes = [
        "Δ: top-1 with that one change taken away from ConvNeXt-T, minus ConvNeXt-T's (paired over seeds); "
        "forward Δ: the same change's delta on the way forward, in the roadmap it reverts at the same scale "
        "and data." if reverse else
        "Δ: our mean top-1 minus that of the reference step, the previous adopted step; a side branch "
        "(branch) is compared with its base step, and the next adopted step skips it. Paper Δ follows the "
        "same rule with the paper's numbers (ImageNet-1k, 224 px).",
        f"`> noise`: {SIGNIFICANCE_TEST}; a step is paired with its reference seed by seed, and fewer than 2 "
        "pairs (or pairs without any spread) give no test. Top-1 is mean ± sample std over complete seeds.",
        f"GMACs (multiply-accumulates of convs and linear layers, the paper's 'GFLOPs') and params: our runs' "
        f"networks at {sizes}; the paper counts at 224 px and 1000 classes.",
    ]
    notes += spread_notes(df)
    notes += worth_at_end_notes(df) if reverse else reproduction_notes(df)
    notes += [f"{row['id']}: {row['note']}" for row in df.to_dict("records") if row["note"]]
    notes += [f"{row['id']} {row['failures']}" for row in df.to_dict("records") if row["failures"]]
    if context.get("unknown_steps"):
        notes.append("records of steps no longer in the roadmap, not shown: " + ", ".join(context["unknown_steps"]))
    return bullets(notes)


def bullets(lines) -> str:
    """A markdown list, a line each."""
    return "".join(f"- {line}\n" for line in lines)


def table_body(df: pd.DataFrame, context: dict, reverse: bool) -> str:
    """Table and notes: what goes into README between the markers."""
    return table_markdown(df, reverse) + "\n" + table_notes(df, context, reverse)


# ---------------------------------------------------------------------------- files
def render_markdown(df: pd.DataFrame, context: dict, reverse: bool) -> str:
    return context_line(context) + "\n\n" + table_body(df, context, reverse)


def render_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_table(df: pd.DataFrame, out_dir: Path, stem: str, context: dict, reverse: bool) -> list[Path]:
    """<out_dir>/<stem>.md and .csv, written atomically; the same records give the same bytes."""
    md_path, csv_path = Path(out_dir) / f"{stem}.md", Path(out_dir) / f"{stem}.csv"
    atomic_write_text(md_path, render_markdown(df, context, reverse))
    atomic_write_text(csv_path, render_csv(df))
    return [md_path, csv_path]
