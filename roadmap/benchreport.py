"""The bench's file and table: the JSON record of one `runner.py bench` (its settings, environment, rows and
ratios) and the markdown table it prints.

One JSON file per run goes to `<out_dir>/<device-slug>-<date>.json`, never overwriting an older one.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import timm
import torch

from .config import ConfigError
from .markdown import markdown_table
from .results import atomic_write_text


def write_report(report: dict, out_dir: Path, stem: str) -> Path:
    """The report as a new JSON file under `out_dir`, its table printed; returns the file's path."""
    path = unique_json_path(out_dir, stem)
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")
    print(render(report), end="")
    return path


def unique_json_path(out_dir: Path, stem: str) -> Path:
    """<stem>.json, or <stem>-2.json, -3, ... if taken; the name is claimed by creating it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = out_dir / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
        try:
            path.open("x").close()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"{out_dir} holds too many bench files named {stem}-N.json")


def environment() -> dict:
    from .runtime import command_line, git_commit

    return {"torch": torch.__version__, "timm": timm.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "python": platform.python_version(), "git_commit": git_commit(), "command": command_line()}


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def table_row(row: dict) -> list[str]:
    spread = "–" if row["images_per_s_min"] is None else f"{row['images_per_s_min']:,.1f}–{row['images_per_s_max']:,.1f}"
    return [row["id"], row["kind"], _num(None if row["params"] is None else row["params"] / 1e6, ".2f"),
            _num(row["gflops"], ".3g"), _num(row["images_per_s_median"], ",.1f"), spread,
            _num(row["step_ms_median"], ".2f"), _num(row["peak_mem_mb"], ",.0f"), _num(row["mfu"], ".1%"),
            row["error"] or ""]


def render(report: dict) -> str:
    """The markdown table of the rows, the ratio lines and how to read MFU."""
    header = ["model", "kind", "params (M)", "GMACs", "img/s (median)", "img/s min–max", "step ms", "peak MB",
              "MFU", "error"]
    s = report["settings"]
    lines = [f"Bench on {report['device']}: batch {s['batch']}, {s['image_size']} px, {s['dtype']}, "
             f"channels_last {s['channels_last']}, compile {s['compile']}, "
             f"{'denormals flushed, ' if s.get('flush_denormal') else ''}{s['repeat']} x {s['iters']} steps "
             f"after {s['warmup']} warm-up.", "",
             markdown_table(header, [table_row(r) for r in report["rows"]], align="llrrrrrrrl").rstrip("\n"), ""]
    for key, (ours, ref) in report["ratio_pairs"].items():
        value, in_turn = report["ratios"].get(key), report.get("ratios_interleaved", {}).get(key)
        orders = report.get("ratios_interleaved_orders", {}).get(key)
        lines.append(f"- {key}: {ours} / {ref} = " + (f"{value:.3f}x images/s (median)" if value is not None
                                                         else "– (not benched, or failed)")
                     + (f"; {in_turn:.3f}x with their windows taken in turn" if in_turn is not None else "")
                     + (f" ({orders[0]:.3f}x ours first, {orders[1]:.3f}x theirs first)" if orders else ""))
    peak = report["peak_flops"]
    lines.append("- MFU: 6 x forward MACs per image (2 FLOPs per MAC, backward twice the forward) over NVIDIA's "
                 "dense datasheet peak for the dtype (TF32 for fp32); "
                 + ("– here: no peak is known for this device." if peak is None else f"peak {peak / 1e12:g} TFLOP/s."))
    return "\n".join(lines) + "\n"


def progress_line(row: dict) -> str:
    result = row["error"] or f"{row['images_per_s_median']:,.1f} img/s"
    return f"bench {row['id']}: {result}"
