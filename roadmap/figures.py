"""Figures of a roadmap's table: per step our top-1, the paper's and the deltas (<stem>.png/.svg), and top-1
against cost with the Pareto front (<stem>-cost.png/.svg). Byte-stable: the same table gives the same files."""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import pandas as pd

from .markdown import change_label, context_line, signed
from .results import DIVERGED, FAILED, atomic_write_bytes
from .table import CONFIDENCE, missing

OURS_COLOR, BRANCH_COLOR, PAPER_COLOR = "#3b6ea8", "#b7cde6", "#d1495b"
PAPER_DELTA_COLOR = "#f0a6ad"


def _empty_slot_label(status: str) -> str:
    return "missing" if status == "missing" else (DIVERGED if status.startswith(DIVERGED) else FAILED)


def _macs_label(gmacs: float) -> str:
    """'4.46 GMACs', or '2.02 MMACs' for small networks: multiply-accumulates, the paper's 'GFLOPs'."""
    return "–" if missing(gmacs) else f"{gmacs:.3g} GMACs" if gmacs >= 0.1 else f"{gmacs * 1e3:.3g} MMACs"


def _step_axis(ax, df: pd.DataFrame, labels: bool) -> None:
    """One row per step; the y axis is shared, so only the first panel names the steps."""
    if labels:
        ax.set_ylim(len(df) - 0.5, -0.5)
        ax.set_yticks(range(len(df)), [textwrap.fill(change_label(row), 34) for row in df.to_dict("records")], fontsize=9)
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
        if not missing(value):
            ax.annotate(f"{value:.2f}", (value, i), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xlabel("paper top-1 (%), ImageNet-1k, 224 px")
    ax.margins(x=0.15)


def _plot_deltas(ax, df: pd.DataFrame, series: list[tuple], xlabel: str) -> None:
    """Bars from 0, two per step: `series` holds (column, (ci low, ci high) columns or None, significance
    column or None, face, edge, label); * marks a delta beyond seed noise."""
    from matplotlib.patches import Patch

    rows = df.to_dict("records")
    values = [r[col] for r in rows for col, *_ in series if not missing(r[col])] or [0.0]
    span = (max(max(values), 0.0) - min(min(values), 0.0)) or 1.0
    for i, row in enumerate(rows):
        for offset, (col, ci, sig, face, edge, _) in zip((-0.2, 0.2), series):
            value = row[col]
            if missing(value):
                continue
            err = None if ci is None or missing(row[ci[0]]) else [[value - row[ci[0]]], [row[ci[1]] - value]]
            ax.barh(i + offset, value, height=0.38, color=face, edgecolor=edge, linewidth=0.6, xerr=err,
                    error_kw={"ecolor": "#222222", "capsize": 2, "elinewidth": 0.8})
            mark = "*" if sig and row[sig] is True else ""
            end = value if err is None else (row[ci[1]] if value >= 0 else row[ci[0]])   # the label clears the CI
            ax.text(end + (0.01 if value >= 0 else -0.01) * span, i + offset, signed(value) + mark,
                    ha="left" if value >= 0 else "right", va="center", fontsize=7)
        if missing(row[series[0][0]]):
            why = "baseline" if pd.isna(row["reference"]) else "missing" if row["n"] == 0 else "reference missing"
            ax.text(0.01 * span, i - 0.2, f"no Δ ({why})", va="center", fontsize=7, color="#666666", style="italic")
    ax.axvline(0.0, color="#222222", linewidth=0.8)
    ax.margins(x=0.2)
    ax.set_xlabel(xlabel)
    ax.legend(handles=[Patch(facecolor=face, edgecolor=edge, label=label) for *_, face, edge, label in series],
              loc="best", fontsize=7, frameon=False)


DELTA_XLABEL = f"Δ top-1 vs reference step (points), bars from 0; ours ± its {CONFIDENCE:.0%} CI, * beyond noise"


def plot(df: pd.DataFrame, out_dir: Path, stem: str, context: dict, reverse: bool) -> list[Path]:
    """<out_dir>/<stem>.png/.svg (steps: our top-1, the paper's, the deltas; `reverse`, a reverse roadmap, shows
    each change's worth at the end beside its forward gain) and <stem>-cost.png/.svg (top-1 against cost)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        paths = save_figure(fig, out_dir, stem)
        plt.close(fig)
        fig = plot_cost(df, context)
        paths += save_figure(fig, out_dir, f"{stem}-cost")
        plt.close(fig)
    return paths


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    """<out_dir>/<stem>.png and .svg, without a date in the svg: the same figure gives the same bytes."""
    import matplotlib.pyplot as plt

    paths = [Path(out_dir) / f"{stem}.png", Path(out_dir) / f"{stem}.svg"]
    for path in paths:
        buffer = io.BytesIO()
        with plt.rc_context({"svg.hashsalt": "roadmap"}):   # the svg's ids from a fixed salt, not a random one
            fig.savefig(buffer, format=path.suffix[1:], dpi=120, metadata={"Date": None} if path.suffix == ".svg" else None)
        atomic_write_bytes(path, buffer.getvalue())
    return paths


def pareto_front(cost: list[float], gain: list[float], lower_cost_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both axes (cost and top-1), by increasing cost."""
    points = [(c if lower_cost_is_better else -c, g, i) for i, (c, g) in enumerate(zip(cost, gain))
              if not (missing(c) or missing(g))]
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
        if not (missing(c) or missing(t)):
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
