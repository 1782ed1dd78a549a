"""Does a run trained again land within the committed spread? `runner.py check-rerun SET --fresh RESULTS`.

A fresh seed (from a clean clone, on another machine, after a change to the code) is one more draw from
the distribution the committed seeds sample. It lands within the spread when it lies inside the 95%
prediction interval of one more seed: the committed seeds' mean +- t(n-1) * std * sqrt(1 + 1/n). About
one fresh run in twenty lands outside by chance, so the command reports and does not fail.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

from scipy import stats

from .config import ConfigError, load_roadmap
from .markdown import markdown_table
from .study import parse_set
from .table import CONFIDENCE, missing

PREDICTION = (f"{CONFIDENCE:.0%} prediction interval of one more seed: the committed seeds' mean ± "
              f"t(n-1) · std · √(1 + 1/n); about one fresh run in {round(1 / (1 - CONFIDENCE))} lands outside by chance")


def prediction_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Where one more draw lands with probability `confidence` (NaNs below 2 values or without spread)."""
    if len(values) < 2 or statistics.stdev(values) == 0:
        return math.nan, math.nan
    mean, n = statistics.fmean(values), len(values)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(values) * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def rerun_rows(committed: dict[str, dict[int, float]], fresh: dict[str, dict[int, float]], order: list[str]) -> list[dict]:
    """One row per fresh (step, seed): its top-1 against the committed seeds other than its own."""
    rows = []
    for step in sorted(fresh, key=lambda s: (order.index(s) if s in order else len(order), s)):
        for seed, top1 in sorted(fresh[step].items()):
            others = [v for s, v in sorted(committed.get(step, {}).items()) if s != seed]
            low, high = prediction_interval(others)
            rows.append({"step": step, "seed": seed, "top1": top1, "n": len(others),
                         "mean": statistics.fmean(others) if others else math.nan,
                         "std": statistics.stdev(others) if len(others) > 1 else math.nan,
                         "low": low, "high": high, "same_seed": committed.get(step, {}).get(seed),
                         "within": None if math.isnan(low) else low <= top1 <= high})
    return rows


def _num(x, fmt: str = ".2f") -> str:
    return "–" if missing(x) else format(x, fmt)


def rerun_report(rows: list[dict], what: str) -> str:
    verdict = {True: "yes", False: "**no**", None: "no spread: no test"}
    table = markdown_table(
        ["step", "seed", "top-1", "committed seeds", "committed top-1", "95% prediction interval", "within",
         "committed run of this seed"],
        [[r["step"], r["seed"], _num(r["top1"]), r["n"], f"{_num(r['mean'])} ± {_num(r['std'])}",
          f"{_num(r['low'])} – {_num(r['high'])}", verdict[r["within"]], _num(r["same_seed"])] for r in rows],
        align="lrrrrrll")
    tested = [r for r in rows if r["within"] is not None]
    inside = sum(r["within"] for r in tested)
    return (f"Fresh runs of {what} against the committed seeds\n\n{table}\n"
            f"{inside} of {len(tested)} fresh run(s) with a test land within the committed spread "
            f"({PREDICTION}).\n")


def check_rerun(roadmap: str, set_text: str, fresh_results: Path, results: Path) -> str:
    """The report of every complete run of `set_text` under `fresh_results` against those under `results`."""
    committed = parse_set(set_text, roadmap, results)
    fresh = parse_set(set_text.partition("@")[0] + f"@{fresh_results}", roadmap, results)
    # A clean clone's results/ holds the committed records too: those are not runs trained again.
    copies = {(r["step"], r["seed"]): r for r in committed.records}
    trained = tuple(r for r in fresh.records if copies.get((r["step"], r["seed"])) != r)
    if not trained:
        raise ConfigError(f"every run of {set_text} under {fresh_results} is a copy of one under {results}; "
                          f"train a seed they do not hold first (runner.py run --seed ...)")
    order = [s.id for s in load_roadmap(roadmap)]
    rows = rerun_rows(committed.by_step_seed, dataclasses.replace(fresh, records=trained).by_step_seed, order)
    left_out = len(fresh.records) - len(trained)
    return rerun_report(rows, f"{roadmap} at {committed.scale} on {committed.data} ({fresh_results})") + (
        f"{left_out} run(s) under {fresh_results} are copies of committed ones and are left out.\n" if left_out else "")
