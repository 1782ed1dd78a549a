"""`runner.py table` and `runner.py plot`: a roadmap's results at one scale and data as a table and figures.

The work is done by one module per concern: table.py (which records, and the statistics of each step's row),
markdown.py (the table as markdown and csv, with its notes), readme.py (README's generated blocks) and figures.py.
Every output is a pure function of the records, so regenerating it from the same results gives the same bytes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import ConfigError, load_roadmap
from .figures import plot
from .markdown import context_line, table_body, write_table
from .readme import marked_text, results_markers, update_readme
from .results import check_writable, data_slug
from .table import add_forward_deltas, build_context, build_table, select_records


@dataclass(frozen=True)
class Selection:
    """One roadmap's results at one scale and data: its table, what the header says about the runs, the stem of its
    files, and whether it is a reverse roadmap (each change taken away from the end, beside its forward gain)."""
    df: pd.DataFrame
    context: dict
    stem: str
    reverse: bool


def select(roadmap: str, scale: str, data: str | None, results_dir: Path) -> Selection:
    """The table of one roadmap/scale/data; a roadmap whose steps revert another's gets its forward deltas."""
    steps = load_roadmap(roadmap)
    records, data = select_records(roadmap, scale, data, results_dir)
    df = build_table(steps, records)
    reverse = any(step.reverts for step in steps)
    if reverse:
        add_forward_deltas(df, steps, scale, data, results_dir)
    return Selection(df, build_context(records, steps), f"{roadmap}-{scale}-{data_slug(data)}", reverse)


def make_table(roadmap: str, scale: str, data: str | None, results_dir: Path, out_dir: Path,
               readme: Path | None = None, figure: bool = True) -> list[Path]:
    """Write <out_dir>/<roadmap>-<scale>-<data>.md/.csv; refresh README's results if given. Returns files written.

    With `readme`, `figure` says whether its block links the figure <out_dir>/<stem>.png, which `make_plot` writes:
    linked, it must be there (run `plot` first), so that README never points at a missing file."""
    selection = select(roadmap, scale, data, results_dir)
    figure_path = Path(out_dir) / f"{selection.stem}.png"
    if readme is not None:   # refused before anything is written
        marked_text(readme, *results_markers(roadmap))
        if figure and not figure_path.is_file():
            raise ConfigError(f"--readme links the figure {figure_path}, which is not there: run 'runner.py plot' with "
                              "the same options first, or pass --no-figure")
    check_writable(out_dir, "--out")
    written = write_table(selection.df, out_dir, selection.stem, selection.context, selection.reverse)
    if readme is not None:
        figure_rel = Path(os.path.relpath(figure_path, Path(readme).parent)).as_posix() if figure else ""
        body = table_body(selection.df, selection.context, selection.reverse)
        if update_readme(readme, roadmap, body, figure_rel, context_line(selection.context)):
            written.append(Path(readme))
    return written


def make_plot(roadmap: str, scale: str, data: str | None, results_dir: Path, out_dir: Path) -> list[Path]:
    """Write <out_dir>/<roadmap>-<scale>-<data>.png/.svg and -cost.png/.svg."""
    selection = select(roadmap, scale, data, results_dir)
    check_writable(out_dir, "--out")
    return plot(selection.df, out_dir, selection.stem, selection.context, selection.reverse)
