"""The numbers of a roadmap's table: one row per step, from the records alone.

One row per step, in roadmap order: our mean top-1 over seeds, the delta against the step's reference
(the previous adopted step; a side branch's own `base`), the paper's numbers and delta, whether the
signs agree and whether our delta exceeds the seed noise (a paired t-test over seeds, with the delta's
95% confidence interval). Failed, diverged and missing runs stay in the table with their status. A
reverse roadmap's rows also carry each undone change's delta on the way forward. markdown.py writes
the table as text, figures.py draws it.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
from scipy import stats

from .config import ConfigError, Step, load_roadmap
from .results import COMPLETE, DIVERGED, FAILED, REPO_ROOT, data_slug, load_records, record_scale

CONFIDENCE = 0.95
SIGNIFICANCE_TEST = (f"paired t-test over seeds (Student's t on the per-seed differences, two-sided): the delta's "
                     f"{CONFIDENCE:.0%} confidence interval excludes 0")
COLUMNS = ["id", "change", "adopted", "base", "reference", "n", "n_failed", "n_missing", "top1_mean", "top1_std",
           "top5_mean", "status", "delta", "ci_low", "ci_high", "n_pairs", "paper_top1", "paper_delta",
           "sign_agrees", "p_value", "significant",
           "gflops", "paper_gflops", "params", "images_per_s", "failures", "note"]


def missing(x) -> bool:
    """None or NaN: a cell the table has no value for."""
    return x is None or (isinstance(x, float) and math.isnan(x))


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


# The step's mean and std in plain float arithmetic, not statistics.fmean/stdev: those round exactly and differ in
# the last bit for about one step in seven of the committed records, which is enough to break a tie on the cost
# figure's Pareto front (checked: report/resnet50-cpu-fashion-mnist-cost.svg loses a point).
def _mean(values: list[float]) -> float:
    """The mean; NaN for no values (a step without complete runs)."""
    return sum(values) / len(values) if values else math.nan


def _std(values: list[float]) -> float:
    """The sample std (n - 1); NaN for fewer than two values."""
    if len(values) < 2:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# ---------------------------------------------------------------------------- rows
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
    """A run that gave a top-1: results.record_problem refuses a complete record without one."""
    return record["status"] == COMPLETE


def describe_failure(record: dict) -> str:
    """One line for a run that gave no top-1: 'failed: <reason>' or 'diverged at epoch E'."""
    if record["status"] == DIVERGED:
        epoch = (record.get("divergence") or {}).get("epoch")
        return DIVERGED if epoch is None else f"{DIVERGED} at epoch {epoch}"
    reason = " ".join(str(record.get("reason") or "").split())  # tracebacks become one line
    reason = reason if len(reason) <= 80 else reason[:77] + "..."
    return f"{FAILED}: {reason}" if reason else FAILED


def step_status(n_ok: int, failures: list[str], n_missing: int) -> str:
    """'ok' | 'missing' | the failure itself | 'partial: k ok, j failed[, m missing]'."""
    if n_ok == 0 and not failures:
        return "missing"
    if n_ok == 0:
        return "; ".join(dict.fromkeys(failures))  # distinct, in seed order
    if not failures and not n_missing:
        return "ok"
    parts = [f"{n_ok} ok"] + [f"{count} {what}" for count, what in ((len(failures), FAILED), (n_missing, "missing"))
                              if count]
    return "partial: " + ", ".join(parts)


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
        "top1_mean": _mean(top1), "top1_std": _std(top1),
        "top5_mean": _mean([float(r["top5"]) for r in ok if r.get("top5") is not None]),
        "status": step_status(len(ok), [describe_failure(r) for r in failed], n_missing),
        "paper_top1": step.paper.top1 if step.paper.top1 is not None else math.nan,
        "gflops": _first(records, "gflops"), "paper_gflops": step.paper.gflops, "params": _first(records, "params"),
        "images_per_s": _mean([float(r["images_per_s"]) for r in ok if r.get("images_per_s") is not None]),
        "failures": "; ".join(f"seed {r['seed']}: {describe_failure(r)}" for r in failed),
        "note": step.paper.note or "",
        "_by_seed": {r["seed"]: float(r["top1"]) for r in ok},
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


def add_forward_deltas(df: pd.DataFrame, steps: list[Step], scale: str, data: str, results_dir: Path) -> None:
    """A reverse roadmap: beside each reverted change, its delta on the way forward (same scale and data),
    and what it is still worth at the end (minus the delta of taking it away, with the interval flipped)."""
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


# ---------------------------------------------------------------------------- which records, and about them
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


def shown_data(spec: str) -> str:
    """A data spec as a report shows it: an image folder inside this repo relative to its root
    ('imagefolder:/home/me/roadmap/data/x' -> 'imagefolder:data/x'), so reports do not name one machine's paths."""
    kind, sep, path = spec.partition(":")
    if kind != "imagefolder" or not Path(path).is_absolute():
        return spec
    try:
        return f"{kind}{sep}{Path(path).relative_to(REPO_ROOT).as_posix()}"
    except ValueError:
        return spec


def build_context(records: list[dict], steps: list[Step]) -> dict:
    """What the table's header says about the runs behind it, from the records alone."""
    known = {step.id for step in steps}
    return {
        "roadmap": ", ".join(sorted({r["roadmap"] for r in records})),
        "scale": ", ".join(sorted({r["scale"] for r in records})),
        "data": ", ".join(sorted({shown_data(r["data"]) for r in records})),
        "seeds": sorted({r["seed"] for r in records}),
        "devices": sorted({_device(r) for r in records}),
        "image_sizes": sorted({r["image_size"] for r in records if r.get("image_size")}),
        "num_classes": sorted({r["num_classes"] for r in records if r.get("num_classes")}),
        "training": training_budget(records),
        "runs": len(records),
        "wall_s": sum(float(r.get("wall_s") or 0.0) for r in records),
        "git_commits": sorted({str(r["git_commit"]) for r in records if r.get("git_commit")}),
        "unknown_steps": sorted({r["step"] for r in records if r["step"] not in known}),
    }


def training_budget(records: list[dict]) -> list[str]:
    """How long and how regularised the runs trained, from their records: ['classic 2 epochs', 'modern 5 epochs',
    'regularization 0.0'] (a sweep cell's table says its own)."""
    recipes = {(r["recipe"]["name"], r["recipe"]["epochs"]) for r in records if (r.get("recipe") or {}).get("epochs")}
    strengths = {record_scale(r).get("regularization") for r in records}
    return ([f"{name} {epochs} epochs" for name, epochs in sorted(recipes)]
            + [f"regularization {strength}" for strength in sorted(strengths - {None})])


def _device(record: dict) -> str:
    world = record.get("world_size") or 1
    device = str(record.get("device") or "unknown device")
    return f"{world} x {device}" if world > 1 else device
