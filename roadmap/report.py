"""Tables (markdown + csv) and figures of roadmap results.

One row per step, in roadmap order: our mean top-1 over seeds, the delta against the step's
reference (the previous adopted step; a side branch's own `base`), the paper's numbers and delta,
whether the signs agree and whether our delta exceeds the seed noise (a paired t-test over seeds, with
the delta's 95% confidence interval). Failed,
diverged and missing runs stay in the table with their status. Every output is a pure function of
the records, so regenerating it from the same results gives the same bytes.
"""
from __future__ import annotations

import io
import math
import os
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from scipy import stats

from .config import ConfigError, Step, load_roadmap
from .results import atomic_write_bytes, atomic_write_text, check_writable, data_slug, load_records

CONFIDENCE = 0.95
SIGNIFICANCE_TEST = (f"paired t-test over seeds (Student's t on the per-seed differences, two-sided): the delta's "
                     f"{CONFIDENCE:.0%} confidence interval excludes 0")
COLUMNS = ["id", "change", "adopted", "base", "reference", "n", "n_failed", "n_missing", "top1_mean", "top1_std",
           "top5_mean", "status", "delta", "ci_low", "ci_high", "n_pairs", "paper_top1", "paper_delta",
           "sign_agrees", "p_value", "significant",
           "gflops", "paper_gflops", "params", "images_per_s", "failures", "note"]


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


# ---------------------------------------------------------------------------- statistics
def paired_delta(reference: dict[int, float], step: dict[int, float], confidence: float = CONFIDENCE) -> dict:
    """The delta step - reference paired by seed (every step of a seed shares that seed's data order).

    Student's t on the per-seed differences (scipy's ttest_rel): mean, confidence interval, p. Fewer
    than two pairs, or differences without any spread (nothing to tell noise by), give no test."""
    seeds = sorted(set(reference) & set(step))
    diffs = [step[s] - reference[s] for s in seeds]
    out = {"n_pairs": len(diffs), "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "significant": None}
    if len(diffs) < 2 or statistics.pstdev(diffs) == 0.0:
        return out
    mean, sem = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1)) * sem
    p_value = float(stats.ttest_rel([step[s] for s in seeds], [reference[s] for s in seeds]).pvalue)
    out.update(ci_low=mean - half, ci_high=mean + half, p_value=p_value, significant=bool(mean - half > 0 or mean + half < 0))
    return out


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


# ---------------------------------------------------------------------------- the table
def reference_steps(steps: list[Step]) -> dict[str, str | None]:
    """{step id: the step its delta is taken against}: the previous adopted step, or a side branch's base.

    So every kernel size is compared with move_up_dwconv, and gelu (after kernel7) with kernel7."""
    references, previous_adopted = {}, None
    for step in steps:
        references[step.id] = previous_adopted if step.adopted else step.base
        if step.adopted:
            previous_adopted = step.id
    return references


def _run_ok(record: dict) -> bool:
    return record.get("status") == "complete" and record.get("top1") is not None


def describe_failure(record: dict) -> str:
    """One line for a run that gave no top-1: 'failed: <reason>' or 'diverged at epoch E'."""
    if record.get("status") == "diverged":
        epoch = (record.get("divergence") or {}).get("epoch")
        return "diverged" if epoch is None else f"diverged at epoch {epoch}"
    if record.get("status") == "complete":
        return "failed: no top-1 recorded"
    reason = " ".join(str(record.get("reason") or "").split())  # tracebacks become one line
    reason = reason if len(reason) <= 80 else reason[:77] + "..."
    return f"failed: {reason}" if reason else "failed"


def step_status(n_ok: int, failures: list[str], n_missing: int) -> str:
    """'ok' | 'missing' | the failure itself | 'partial: k ok, j failed[, m missing]'."""
    if n_ok == 0 and not failures:
        return "missing"
    if n_ok == 0:
        return "; ".join(dict.fromkeys(failures))  # distinct, in seed order
    if not failures and not n_missing:
        return "ok"
    parts = [f"{n_ok} ok"] + [f"{count} {what}" for count, what in ((len(failures), "failed"), (n_missing, "missing"))
                              if count]
    return "partial: " + ", ".join(parts)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _sample_std(values: list[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _first(records: list[dict], key: str):
    """A per-step constant (params, GFLOPs) from any record that has it: failed runs measure it too."""
    return next((r[key] for r in records if r.get(key) is not None), None)


def _step_row(step: Step, records: list[dict], expected_seeds: set[int]) -> dict:
    records = sorted(records, key=lambda r: r["seed"])
    ok = [r for r in records if _run_ok(r)]
    failed = [r for r in records if not _run_ok(r)]
    top1 = [float(r["top1"]) for r in ok]
    n_missing = len(expected_seeds - {r["seed"] for r in records})
    return {
        "id": step.id, "change": step.title, "adopted": step.adopted, "base": step.base,
        "n": len(ok), "n_failed": len(failed), "n_missing": n_missing,
        "top1_mean": _mean(top1), "top1_std": _sample_std(top1),
        "top5_mean": _mean([float(r["top5"]) for r in ok if r.get("top5") is not None]),
        "status": step_status(len(ok), [describe_failure(r) for r in failed], n_missing),
        "paper_top1": step.paper.top1 if step.paper.top1 is not None else math.nan,
        "gflops": _first(records, "gflops"), "paper_gflops": step.paper.gflops, "params": _first(records, "params"),
        "images_per_s": _mean([float(r["images_per_s"]) for r in ok if r.get("images_per_s") is not None]),
        "failures": "; ".join(f"seed {r['seed']}: {describe_failure(r)}" for r in failed),
        "note": step.paper.note or "",
        "_top1": top1, "_by_seed": {r["seed"]: float(r["top1"]) for r in ok},
    }


def _add_comparison(row: dict, reference: dict | None) -> None:
    """Delta, paper delta, sign agreement and the paired test of `row` against its reference row."""
    row.update(reference=None, delta=math.nan, paper_delta=math.nan, sign_agrees=None, ci_low=math.nan,
               ci_high=math.nan, n_pairs=0, p_value=math.nan, significant=None)
    if reference is None:
        return
    row["reference"] = reference["id"]
    row["delta"] = row["top1_mean"] - reference["top1_mean"]
    row["paper_delta"] = row["paper_top1"] - reference["paper_top1"]
    if not (math.isnan(row["delta"]) or math.isnan(row["paper_delta"])):
        row["sign_agrees"] = _sign(row["delta"]) == _sign(row["paper_delta"])
    row.update(paired_delta(reference["_by_seed"], row["_by_seed"]))


def build_table(steps: list[Step], records: list[dict]) -> pd.DataFrame:
    """One row per step in roadmap order from the records of one roadmap/scale/data (see COLUMNS).

    Seeds expected of every step are the seeds seen anywhere in `records`; a step that lacks some
    counts them as missing. Records of steps not in `steps` are ignored here (the context lists them)."""
    expected_seeds = {r["seed"] for r in records}
    by_step: dict[str, list[dict]] = {}
    for record in records:
        by_step.setdefault(record["step"], []).append(record)
    rows = {step.id: _step_row(step, by_step.get(step.id, []), expected_seeds) for step in steps}
    references = reference_steps(steps)
    for step in steps:
        _add_comparison(rows[step.id], rows.get(references[step.id]))
    frame = pd.DataFrame([{c: row[c] for c in COLUMNS} for row in rows.values()], columns=COLUMNS)
    frame.attrs["significance_test"] = SIGNIFICANCE_TEST
    return frame


# ---------------------------------------------------------------------------- context
def build_context(records: list[dict], steps: list[Step]) -> dict:
    """What the table's header says about the runs behind it, from the records alone."""
    known = {step.id for step in steps}
    return {
        "roadmap": ", ".join(sorted({r["roadmap"] for r in records})),
        "scale": ", ".join(sorted({r["scale"] for r in records})),
        "data": ", ".join(sorted({r["data"] for r in records})),
        "seeds": sorted({r["seed"] for r in records}),
        "devices": sorted({_device(r) for r in records}),
        "image_sizes": sorted({r["image_size"] for r in records if r.get("image_size")}),
        "num_classes": sorted({r["num_classes"] for r in records if r.get("num_classes")}),
        "runs": len(records),
        "wall_s": sum(float(r.get("wall_s") or 0.0) for r in records),
        "git_commits": sorted({str(r["git_commit"]) for r in records if r.get("git_commit")}),
        "unknown_steps": sorted({r["step"] for r in records if r["step"] not in known}),
    }


def _device(record: dict) -> str:
    world = record.get("world_size") or 1
    device = str(record.get("device") or "unknown device")
    return f"{world} x {device}" if world > 1 else device


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def context_line(context: dict) -> str:
    """'Roadmap `resnet50`, scale `demo`, data `fashion-mnist` (28 px, 10 classes): seeds 0, 1; ...'."""
    size = ", ".join([f"{s} px" for s in context.get("image_sizes", [])] +
                     [f"{c} classes" for c in context.get("num_classes", [])])
    parts = [f"seeds {', '.join(map(str, context['seeds']))}", "; ".join(context["devices"]),
             f"{context['runs']} runs, total wall time {_duration(context['wall_s'])}"]
    if context.get("git_commits"):
        parts.append("git " + ", ".join(c[:10] for c in context["git_commits"]))
    return (f"Roadmap `{context['roadmap']}`, scale `{context['scale']}`, data `{context['data']}`"
            f"{f' ({size})' if size else ''}: " + "; ".join(parts) + ".")


# ---------------------------------------------------------------------------- markdown + csv
def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _signed(x) -> str:
    if _isnan(x):
        return "–"
    text = f"{x:+.2f}"
    return "+0.00" if text == "-0.00" else text


def _top1(mean, std, n) -> str:
    if n == 0:
        return "–"
    return f"{mean:.2f} ± {std:.2f} (n={n})" if n >= 2 else f"{mean:.2f} (n=1)"


def _yes_no(flag) -> str:
    return "–" if flag is None or _isnan(flag) else ("yes" if flag else "no")


def _count(n) -> str:
    if _isnan(n):
        return "–"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    return str(int(n))


def _gflops(x) -> str:
    return "–" if _isnan(x) else f"{x:.3g}"


def _change(row) -> str:
    return row["change"] if row["adopted"] else f"{row['change']} (branch)"


def table_markdown(df: pd.DataFrame) -> str:
    header = ["step", "change", "top-1 (%)", "Δ", f"Δ {CONFIDENCE:.0%} CI", "paper top-1", "paper Δ", "sign agrees",
              "> noise", "GMACs", "params", "img/s", "status"]
    rows = [[row["id"], _change(row), _top1(row["top1_mean"], row["top1_std"], row["n"]), _signed(row["delta"]),
             _interval(row), "–" if _isnan(row["paper_top1"]) else f"{row['paper_top1']:.2f}",
             _signed(row["paper_delta"]), _yes_no(row["sign_agrees"]), _noise(row), _gflops(row["gflops"]),
             _count(row["params"]), "–" if _isnan(row["images_per_s"]) else f"{row['images_per_s']:,.0f}",
             row["status"]]
            for row in df.to_dict("records")]
    if "forward_delta" in df:  # a reverse roadmap: each change's worth at the end beside its forward gain
        header[5:8] = ["reverts", "forward Δ", "fwd > noise"]
        for row, record in zip(rows, df.to_dict("records")):
            row[5:8] = [record["reverts"] or "–", _signed(record["forward_delta"]), _yes_no(record["forward_significant"])]
    return markdown_table(header, rows, align="llrrrrrllrrrl")


def _interval(row) -> str:
    return "–" if _isnan(row["ci_low"]) else f"[{_signed(row['ci_low'])}, {_signed(row['ci_high'])}]"


def _noise(row) -> str:
    """yes / no from the paired test; otherwise why there is no test."""
    if _isnan(row["delta"]):
        return "–"
    if row["n_pairs"] < 2:
        return f"n={int(row['n_pairs'])}: no test"
    if row["significant"] is None or _isnan(row["significant"]):
        return "no spread: no test"
    return "yes" if row["significant"] else "no"


def reproduction_notes(df: pd.DataFrame) -> list[str]:
    """What reproduces, from the table alone: per step, sign agreement with the paper and the noise test."""
    rows = [row for row in df.to_dict("records") if not _isnan(row["delta"]) and not _isnan(row["paper_delta"])]
    tested = [row for row in rows if row["significant"] in (True, False)]
    if not rows:
        return []  # no paper numbers to compare with (a roadmap of one's own, the reverse roadmap)
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
    notes += [f"{label}: " + ", ".join(f"{r['id']} ({_signed(r['delta'])})" for r in members)
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
    rows = [row for row in df.to_dict("records") if not _isnan(row["top1_mean"])]
    if not rows:
        return []
    lowest = min(rows, key=lambda row: row["top1_mean"])
    stds = [row["top1_std"] for row in rows if not _isnan(row["top1_std"])]
    spread = f"; median seed std {statistics.median(stds):.2f} points" if stds else ""
    return [f"Over the {len(rows)} steps with results: median top-1 {statistics.median(r['top1_mean'] for r in rows):.2f}%, "
            f"lowest {lowest['top1_mean']:.2f}% ({lowest['id']}){spread}."]


def table_notes(df: pd.DataFrame, context: dict) -> str:
    """The bullet list under the table: how to read it, step notes, every run that gave no top-1."""
    sizes = ", ".join(f"{s} px" for s in context.get("image_sizes", [])) or "the run's image size"
    reverse = "forward_delta" in df
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
    return "".join(f"- {note}\n" for note in notes)


def table_body(df: pd.DataFrame, context: dict) -> str:
    """Table and notes: what goes into README between the markers."""
    return table_markdown(df) + "\n" + table_notes(df, context)


def render_markdown(df: pd.DataFrame, context: dict) -> str:
    return context_line(context) + "\n\n" + table_body(df, context)


def render_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_table(df: pd.DataFrame, out_dir: Path, stem: str, context: dict) -> list[Path]:
    """<out_dir>/<stem>.md and .csv, written atomically; the same records give the same bytes."""
    md_path, csv_path = Path(out_dir) / f"{stem}.md", Path(out_dir) / f"{stem}.csv"
    atomic_write_text(md_path, render_markdown(df, context))
    atomic_write_text(csv_path, render_csv(df))
    return [md_path, csv_path]


# ---------------------------------------------------------------------------- README
def update_readme(readme: Path, roadmap: str, table_md: str, figure_rel_path: str, context_line: str) -> bool:
    """Replace what lies between the roadmap's results markers of README; True if the file changed.

    `figure_rel_path` '' leaves the figure out."""
    block = context_line + "\n\n" + table_md.rstrip("\n") + "\n"
    if figure_rel_path:
        block += f"\n![roadmap results]({figure_rel_path})\n"
    return replace_between_markers(readme, *results_markers(roadmap), block)


def steps_markers(roadmap: str) -> tuple[str, str]:
    """The README markers of `list --readme`'s steps table."""
    return f"<!-- steps-{roadmap}:begin -->", f"<!-- steps-{roadmap}:end -->"


def results_markers(roadmap: str) -> tuple[str, str]:
    """The README markers of `table --readme`'s results: one pair per roadmap, so that one never overwrites another's."""
    return f"<!-- results-{roadmap}:begin -->", f"<!-- results-{roadmap}:end -->"


def marked_text(readme: Path, begin_marker: str, end_marker: str) -> tuple[str, int, int]:
    """README's text and where its markers are; a README that cannot take a generated block is a ConfigError."""
    readme = Path(readme)
    try:
        text = readme.read_bytes().decode()
    except OSError as err:
        raise ConfigError(f"{readme} cannot be read ({err.strerror or type(err).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{readme} is not UTF-8 text") from None
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < 0 or end < begin:
        raise ConfigError(f"{readme} needs the markers '{begin_marker}' and then '{end_marker}' on their own lines "
                          "where the generated text goes; add them and rerun")
    check_writable(readme.parent, "--readme")   # it is replaced by a rename in its folder
    return text, begin, end


def replace_between_markers(readme: Path, begin_marker: str, end_marker: str, block: str) -> bool:
    """Put `block` between two marker lines of a README (generated, never hand-edited, content)."""
    text, begin, end = marked_text(readme, begin_marker, end_marker)
    new_text = text[:begin + len(begin_marker)] + "\n" + block + text[end:]
    if new_text == text:
        return False
    atomic_write_text(readme, new_text)
    return True


# ---------------------------------------------------------------------------- entry points
def select_records(roadmap: str, scale: str, data: str | None, results_dir: Path) -> tuple[list[dict], str]:
    """The records of one roadmap/scale/data and the data spec; `data` None means the only one there."""
    records = load_records(results_dir, roadmap, scale, data)
    where = f"roadmap {roadmap}, scale {scale}" + (f", data {data}" if data else "")
    if not records:
        raise ConfigError(f"no results for {where} under {results_dir}; run 'runner.py run' first")
    slugs = sorted({data_slug(r["data"]) for r in records})
    if len(slugs) > 1:
        raise ConfigError(f"results for {where} hold several datasets ({', '.join(slugs)}); pick one with --data")
    return records, data or records[0]["data"]


def _selection(roadmap: str, scale: str, data: str | None, results_dir: Path):
    """(table, context, file stem) of one roadmap/scale/data; a reverse roadmap gets its forward deltas."""
    steps = load_roadmap(roadmap)
    records, data = select_records(roadmap, scale, data, results_dir)
    df = build_table(steps, records)
    if any(step.reverts for step in steps):
        add_forward_deltas(df, steps, scale, data, results_dir)
    return df, build_context(records, steps), f"{roadmap}-{scale}-{data_slug(data)}"


def add_forward_deltas(df: pd.DataFrame, steps: list[Step], scale: str, data: str, results_dir: Path) -> None:
    """Beside each reverted change: its delta on the way forward (same scale and data), and what it is
    still worth at the end (minus the delta of taking it away, with the interval flipped)."""
    forward: dict[str, dict] = {}
    for roadmap in sorted({step.reverts.split("/")[0] for step in steps if step.reverts}):
        records = load_records(results_dir, roadmap, scale, data)
        table = build_table(load_roadmap(roadmap), records) if records else pd.DataFrame(columns=COLUMNS)
        forward.update({f"{roadmap}/{row['id']}": row for row in table.to_dict("records")})
    reverts = {step.id: step.reverts for step in steps}
    df["reverts"] = [reverts[i] or "" for i in df["id"]]
    df["forward_delta"] = [forward.get(reverts[i], {}).get("delta", math.nan) for i in df["id"]]
    df["forward_significant"] = [forward.get(reverts[i], {}).get("significant") for i in df["id"]]
    df["worth_at_end"], df["worth_ci_low"], df["worth_ci_high"] = -df["delta"], -df["ci_high"], -df["ci_low"]


def make_table(roadmap: str, scale: str, data: str | None, results_dir: Path, out_dir: Path,
               readme: Path | None = None) -> list[Path]:
    """Write <out_dir>/<roadmap>-<scale>-<data>.md/.csv; refresh README's results if given. Returns files written."""
    df, context, stem = _selection(roadmap, scale, data, results_dir)
    if readme is not None:
        marked_text(readme, *results_markers(roadmap))   # refused before anything is written
    check_writable(out_dir, "--out")
    written = write_table(df, out_dir, stem, context)
    if readme is not None:
        figure = Path(out_dir) / f"{stem}.png"
        figure_rel = Path(os.path.relpath(figure, Path(readme).parent)).as_posix() if figure.exists() else ""
        if update_readme(readme, roadmap, table_body(df, context), figure_rel, context_line(context)):
            written.append(Path(readme))
    return written


def make_plot(roadmap: str, scale: str, data: str | None, results_dir: Path, out_dir: Path) -> list[Path]:
    """Write <out_dir>/<roadmap>-<scale>-<data>.png/.svg and -cost.png/.svg."""
    df, context, stem = _selection(roadmap, scale, data, results_dir)
    check_writable(out_dir, "--out")
    return plot(df, out_dir, stem, context)


# ---------------------------------------------------------------------------- the figure
OURS_COLOR, BRANCH_COLOR, PAPER_COLOR = "#3b6ea8", "#b7cde6", "#d1495b"
PAPER_DELTA_COLOR = "#f0a6ad"


def _empty_slot_label(status: str) -> str:
    return "missing" if status == "missing" else ("diverged" if status.startswith("diverged") else "failed")


def _macs_label(gmacs: float) -> str:
    """'4.46 GMACs', or '2.02 MMACs' for small networks: multiply-accumulates, the paper's 'GFLOPs'."""
    return "–" if _isnan(gmacs) else f"{gmacs:.3g} GMACs" if gmacs >= 0.1 else f"{gmacs * 1e3:.3g} MMACs"


def _step_axis(ax, df: pd.DataFrame, labels: bool) -> None:
    """One row per step; the y axis is shared, so only the first panel names the steps."""
    if labels:
        ax.set_ylim(len(df) - 0.5, -0.5)
        ax.set_yticks(range(len(df)), [textwrap.fill(_change(row), 34) for row in df.to_dict("records")], fontsize=9)
    else:
        ax.tick_params(axis="y", left=False, labelleft=False)
    ax.grid(axis="x", color="#eeeeee")
    ax.set_axisbelow(True)


def _plot_ours(ax, df: pd.DataFrame) -> None:
    """Our mean top-1 ± std per step as points (no bars: no baseline to hide), MACs beside each."""
    for i, row in enumerate(df.to_dict("records")):
        if row["n"] == 0:
            ax.text(0.02, i, _empty_slot_label(row["status"]), transform=ax.get_yaxis_transform(), va="center",
                    color="#666666", style="italic", fontsize=9)
            continue
        branch = not row["adopted"]
        ax.errorbar(row["top1_mean"], i, xerr=row["top1_std"] if row["n"] >= 2 else None, fmt="o",
                    color=BRANCH_COLOR if branch else OURS_COLOR, mec=OURS_COLOR, ecolor="#222222", capsize=3)
        ax.annotate(f"{row['top1_mean']:.2f}  ({_macs_label(row['gflops'])})", (row["top1_mean"], i),
                    xytext=(0, 7), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xlabel("our top-1 (%), mean ± std over seeds\n(MACs per image at the run's size)")
    ax.margins(x=0.15)


def _plot_paper(ax, df: pd.DataFrame) -> None:
    """The paper's top-1 (ImageNet-1k) on an axis of its own."""
    ax.scatter(df["paper_top1"], range(len(df)), marker="D", s=30, color=PAPER_COLOR, zorder=3)
    for i, value in enumerate(df["paper_top1"].tolist()):
        if not _isnan(value):
            ax.annotate(f"{value:.2f}", (value, i), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xlabel("paper top-1 (%), ImageNet-1k, 224 px")
    ax.margins(x=0.15)


def _plot_deltas(ax, df: pd.DataFrame, series: list[tuple], xlabel: str) -> None:
    """Bars from 0, two per step: `series` holds (column, (ci low, ci high) columns or None, significance
    column or None, face, edge, label); * marks a delta beyond seed noise."""
    from matplotlib.patches import Patch

    rows = df.to_dict("records")
    values = [r[col] for r in rows for col, *_ in series if not _isnan(r[col])] or [0.0]
    span = (max(max(values), 0.0) - min(min(values), 0.0)) or 1.0
    for i, row in enumerate(rows):
        for offset, (col, ci, sig, face, edge, _) in zip((-0.2, 0.2), series):
            value = row[col]
            if _isnan(value):
                continue
            err = None if ci is None or _isnan(row[ci[0]]) else [[value - row[ci[0]]], [row[ci[1]] - value]]
            ax.barh(i + offset, value, height=0.38, color=face, edgecolor=edge, linewidth=0.6, xerr=err,
                    error_kw={"ecolor": "#222222", "capsize": 2, "elinewidth": 0.8})
            mark = "*" if sig and row[sig] is True else ""
            end = value if err is None else (row[ci[1]] if value >= 0 else row[ci[0]])   # the label clears the CI
            ax.text(end + (0.01 if value >= 0 else -0.01) * span, i + offset, _signed(value) + mark,
                    ha="left" if value >= 0 else "right", va="center", fontsize=7)
        if _isnan(row[series[0][0]]):
            why = "baseline" if pd.isna(row["reference"]) else "missing" if row["n"] == 0 else "reference missing"
            ax.text(0.01 * span, i - 0.2, f"no Δ ({why})", va="center", fontsize=7, color="#666666", style="italic")
    ax.axvline(0.0, color="#222222", linewidth=0.8)
    ax.margins(x=0.2)
    ax.set_xlabel(xlabel)
    ax.legend(handles=[Patch(facecolor=face, edgecolor=edge, label=label) for *_, face, edge, label in series],
              loc="best", fontsize=7, frameon=False)


DELTA_XLABEL = f"Δ top-1 vs reference step (points), bars from 0; ours ± its {CONFIDENCE:.0%} CI, * beyond noise"


def plot(df: pd.DataFrame, out_dir: Path, stem: str, context: dict) -> list[Path]:
    """<out_dir>/<stem>.png/.svg (steps: our top-1, the paper's, the deltas; a reverse roadmap adds the
    forward gain beside each change's cost) and <stem>-cost.png/.svg (top-1 against cost)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reverse = "forward_delta" in df
    with plt.rc_context({"svg.hashsalt": "roadmap", "font.size": 9}):
        fig, axes = plt.subplots(1, 3, sharey=True, figsize=(17, 2.4 + 0.5 * len(df)),
                                 gridspec_kw={"width_ratios": [3, 2, 3]}, layout="constrained")
        _step_axis(axes[0], df, labels=True)
        for ax in axes[1:]:
            _step_axis(ax, df, labels=False)
        _plot_ours(axes[0], df)
        _plot_paper(axes[1], df)
        if reverse:
            _plot_deltas(axes[2], df, [
                ("worth_at_end", ("worth_ci_low", "worth_ci_high"), "significant", OURS_COLOR, OURS_COLOR,
                 "what the change is still worth at the end: ConvNeXt-T minus the step that undoes it"),
                ("forward_delta", None, "forward_significant", PAPER_DELTA_COLOR, PAPER_COLOR,
                 "what it gave on the way forward (its Δ in the forward roadmap)")],
                "points of top-1; ours with its 95% CI, * beyond seed noise")
        else:
            _plot_deltas(axes[2], df, [("delta", ("ci_low", "ci_high"), "significant", OURS_COLOR, OURS_COLOR, "ours"),
                                       ("paper_delta", None, None, PAPER_DELTA_COLOR, PAPER_COLOR, "paper")],
                         DELTA_XLABEL)
        fig.suptitle(textwrap.fill(context_line(context).replace("`", ""), 150), fontsize=10)
        paths = _save(fig, out_dir, stem)
        plt.close(fig)
        fig = plot_cost(df, context)
        paths += _save(fig, out_dir, f"{stem}-cost")
        plt.close(fig)
    return paths


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = [Path(out_dir) / f"{stem}.png", Path(out_dir) / f"{stem}.svg"]
    for path in paths:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], dpi=120, metadata={"Date": None} if path.suffix == ".svg" else None)
        atomic_write_bytes(path, buffer.getvalue())
    return paths


def pareto_front(cost: list[float], gain: list[float], lower_cost_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both axes (cost and top-1), by increasing cost."""
    points = [(c if lower_cost_is_better else -c, g, i) for i, (c, g) in enumerate(zip(cost, gain))
              if not (_isnan(c) or _isnan(g))]
    front, best = [], -math.inf
    for c, g, i in sorted(points, key=lambda p: (p[0], -p[1])):
        if g > best:
            front.append(i)
            best = g
    return front


def _scatter_front(ax, df: pd.DataFrame, cost_key: str, top1_key: str, lower_cost_is_better: bool, color: str) -> None:
    cost, top1 = df[cost_key].astype(float).tolist(), df[top1_key].astype(float).tolist()
    ax.scatter(cost, top1, color=color, zorder=3, s=22)
    for c, t, step in zip(cost, top1, df["id"]):
        if not (_isnan(c) or _isnan(t)):
            ax.annotate(step, (c, t), xytext=(3, 3), textcoords="offset points", fontsize=6)
    front = pareto_front(cost, top1, lower_cost_is_better)
    ax.plot([cost[i] for i in front], [top1[i] for i in front], color=color, linestyle="--", linewidth=1,
            label="Pareto front")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(color="#eeeeee")


def plot_cost(df: pd.DataFrame, context: dict):
    """Top-1 against MACs and against measured training images/s (ours), and the paper's against its MACs."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), layout="constrained")
    _scatter_front(axes[0], df, "gflops", "top1_mean", True, OURS_COLOR)
    axes[0].set(xlabel="MACs per image at the run's size (G)", ylabel="our top-1 (%)",
                title="ours: accuracy against MACs")
    _scatter_front(axes[1], df, "images_per_s", "top1_mean", False, OURS_COLOR)
    axes[1].set(xlabel="measured training images/s (higher is cheaper)", ylabel="our top-1 (%)",
                title="ours: accuracy against training speed")
    _scatter_front(axes[2], df, "paper_gflops", "paper_top1", True, PAPER_COLOR)
    axes[2].set(xlabel="paper GMACs per image (224 px; the paper's 'GFLOPs')", ylabel="paper top-1 (%)",
                title="paper: accuracy against MACs")
    fig.suptitle(textwrap.fill(context_line(context).replace("`", ""), 150) +
                 "\nDashed: the Pareto front (no other step is both cheaper and more accurate).", fontsize=10)
    return fig
