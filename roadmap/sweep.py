"""Sweeps: `runner.py sweep NAME` trains the cells of `steps/sweeps/NAME.yaml` (Hydra's multirun, timm's bulk_runner).

A sweep file names a base scale and data, the steps, the seeds, and factors with their levels: any `scale.*` or
`recipe.*` key, as a full grid (`grid:`, every combination) and/or a list of cells (`cells:`, each a mapping of
factor to level; `untrained: why` marks a cell kept in the file but not trained). A cell is a set of runs like any
other: its records go to `<results>/sweeps/<sweep>/<cell>/`, a folder named by its levels, so `runner.py study
cpu/fashion-mnist@results/sweeps/NAME/CELL` reads it as a result set. A cell whose levels change nothing of the base
scale (its runs' identity equals the base's) is the base itself: its records are the results folder's own (the
committed reference), reused, never trained twice. Everything is planned and checked before anything is written;
the runs of every cell go out in file order (cell, seed, step) to `--jobs` processes, as `run --jobs` hands them out.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .compute import handed_out_wall, hours, plan_costs
from .config import ConfigError, load_roadmap, read_yaml, steps_root
from .data import open_source
from .eta import total_eta
from .fields import closest
from .markdown import markdown_table
from .plan import RunPlan, check_models_fit, plain_config, plan_run, ready, run_identity
from .results import COMPLETE, check_apart, check_writable, default_checkpoints, default_weights, data_slug, \
    path_part, read_record, record_status
from .runs import OUTCOMES, check_init_from, check_jobs, check_run_paths, check_same_config, check_same_data, \
    run_ended, run_one, say, skip_finished, train_in_turn
from .runtime import Dist, git_commit, init_distributed
from .workers import end_with_parent, hand_out, serve

SWEEP_KEYS = {"title", "roadmap", "scale", "data", "steps", "seeds", "set", "grid", "cells"}
FACTOR_SECTIONS = ("scale", "recipe")   # what a factor may vary; `set:` fixes train.* keys (speed settings) too
UNTRAINED = "untrained"                 # a cell's key: why it stays untrained
CELL_NAME = re.compile(r"[A-Za-z0-9._=,+-]+")


@dataclass(frozen=True)
class Cell:
    index: int            # its place in the file's order: `--cell K`, a Slurm array's index
    levels: dict          # factor ('scale.epochs') -> level, in the sweep's factor order
    untrained: str = ""   # why the file leaves it untrained ('' : trained)

    @property
    def name(self) -> str:
        """The cell's folder, named by its levels: 'epochs=10,depth_mult=1.0' (scale keys without 'scale.')."""
        return ",".join(f"{factor.removeprefix('scale.')}={level_text(factor, level)}"
                        for factor, level in self.levels.items()) or "base"


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    title: str
    roadmap: str
    scale: str
    data: str | None
    steps: tuple
    seeds: tuple
    fixed: dict           # overrides every run takes (`set:`), as parse_overrides gives them
    factors: tuple        # every factor any cell varies, in the order first met
    cells: tuple

    def data_of(self, cell: Cell) -> str | None:
        """A cell may vary the data itself (`scale.data`); otherwise the sweep's."""
        return cell.levels.get("scale.data", self.data)

    def folder(self, cell: Cell, results: Path) -> Path:
        return Path(results) / "sweeps" / self.name / cell.name


def level_text(factor: str, level) -> str:
    return data_slug(level) if factor == "scale.data" else str(level)


# ---------------------------------------------------------------------------- the file
def sweep_path(name: str, steps_dir: Path | None = None) -> Path:
    folder = steps_root(steps_dir) / "sweeps"
    path = folder / f"{path_part(name, 'sweep', '; a sweep is a file NAME.yaml in steps/sweeps/, passed as NAME')}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown sweep '{name}'; choose from {', '.join(names) or '(none)'}{closest(name, names)}")
    return path


def load_sweep(name: str, steps_dir: Path | None = None) -> Sweep:
    """The sweep file, read and checked as far as it can be without planning its runs (plan_sweep does the rest)."""
    path = sweep_path(name, steps_dir)
    raw = read_yaml(path)
    where = f"{path}: "
    if unknown := sorted(set(raw) - SWEEP_KEYS):
        raise ConfigError(f"{where}unknown key '{unknown[0]}'; a sweep has {', '.join(sorted(SWEEP_KEYS))}"
                          f"{closest(unknown[0], SWEEP_KEYS)}")
    for key in ("roadmap", "scale", "steps", "seeds"):
        if key not in raw:
            raise ConfigError(f"{where}'{key}' is missing")
    steps, seeds = raw["steps"], raw["seeds"]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise ConfigError(f"{where}steps must be a list of step ids, not {steps!r}")
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
        raise ConfigError(f"{where}seeds must be a list of seeds (0, 1, ...), not {seeds!r}")
    cells = grid_cells(raw.get("grid"), where) + listed_cells(raw.get("cells"), where)
    if not cells:
        raise ConfigError(f"{where}no cells: give 'grid' (factor: [levels]) or 'cells' (a list of factor: level)")
    cells = unique(cells)
    factors = tuple(dict.fromkeys(f for levels, _ in cells for f in levels))
    ordered = tuple(Cell(i, {f: levels[f] for f in factors if f in levels}, why)
                    for i, (levels, why) in enumerate(cells))
    for cell in ordered:
        if not CELL_NAME.fullmatch(cell.name):
            raise ConfigError(f"{where}cell {cell.levels} gives the folder name '{cell.name}'; levels must be "
                              "plain names or numbers")
    return Sweep(name, path, str(raw.get("title") or name), str(raw["roadmap"]), str(raw["scale"]),
                 raw.get("data"), tuple(steps), tuple(dict.fromkeys(seeds)), fixed_overrides(raw.get("set"), where),
                 factors, ordered)


def check_factor(factor, where: str) -> str:
    section, _, key = str(factor).partition(".")
    if section not in FACTOR_SECTIONS or not key or not isinstance(factor, str):
        raise ConfigError(f"{where}factor '{factor}' must be scale.KEY or recipe.KEY")
    return factor


def check_level(factor: str, level, where: str):
    if level is None or isinstance(level, (dict, list)):
        raise ConfigError(f"{where}{factor} level {level!r} must be one value (a number, a name, true/false)")
    return level


def grid_cells(grid, where: str) -> list[tuple[dict, str]]:
    """Every combination of the grid's levels, in the file's order (the last factor varying fastest)."""
    if grid is None:
        return []
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{where}grid must be a mapping of factor to a list of levels, not {grid!r}")
    for factor, levels in grid.items():
        check_factor(factor, where)
        if not isinstance(levels, list) or not levels:
            raise ConfigError(f"{where}grid factor {factor} needs a non-empty list of levels, not {levels!r}")
        for level in levels:
            check_level(factor, level, where)
    return [(dict(zip(grid, combo)), "") for combo in itertools.product(*grid.values())]


def listed_cells(cells, where: str) -> list[tuple[dict, str]]:
    if cells is None:
        return []
    if not isinstance(cells, list):
        raise ConfigError(f"{where}cells must be a list of mappings (factor: level), not {cells!r}")
    out = []
    for cell in cells:
        if not isinstance(cell, dict):
            raise ConfigError(f"{where}a cell must be a mapping of factor to level, not {cell!r}")
        why = cell.get(UNTRAINED, "")
        if not isinstance(why, str) or (UNTRAINED in cell and not why.strip()):
            raise ConfigError(f"{where}'{UNTRAINED}:' says why a cell is left untrained, in words; got {why!r}")
        out.append(({check_factor(f, where): check_level(f, level, where) for f, level in cell.items()
                     if f != UNTRAINED}, why))
    return out


def unique(cells: list[tuple[dict, str]]) -> list[tuple[dict, str]]:
    """A cell named twice (in the grid and the list, say) is one cell; marked untrained only if every mention is."""
    seen: dict[str, tuple[dict, str]] = {}
    for levels, why in cells:
        key = json.dumps(levels, sort_keys=True)
        trained_before = key in seen and not seen[key][1]
        seen[key] = (seen.get(key, (levels,))[0], "" if trained_before else why)
    return list(seen.values())


def fixed_overrides(pairs, where: str) -> dict:
    """`set:` {section.key: value} -> {section: {key: value}}, as --set gives them (checked when runs are planned)."""
    if pairs is None:
        return {}
    if not isinstance(pairs, dict):
        raise ConfigError(f"{where}set must be a mapping of section.key to value, not {pairs!r}")
    out: dict[str, dict] = {}
    for key, value in pairs.items():
        section, _, name = str(key).partition(".")
        if section not in ("scale", "recipe", "train", "data") or not name:
            raise ConfigError(f"{where}set key '{key}' must be scale.KEY, recipe.KEY, train.KEY or data.KEY")
        out.setdefault(section, {})[name] = value
    return out


def cell_overrides(sweep: Sweep, cell: Cell) -> dict:
    """The `set:` overrides and the cell's levels; its data goes as the runs' data spec (Sweep.data_of), as --data
    would, so that a cell on the base scale's other data is the run `run --data` trains."""
    out = {section: dict(values) for section, values in sweep.fixed.items()}
    for factor, level in cell.levels.items():
        if factor == "scale.data":
            continue
        section, _, key = factor.partition(".")
        out.setdefault(section, {})[key] = level
    return out


# ---------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class SweepRun:
    cell: Cell
    plan: RunPlan
    results: Path       # the cell's results folder (the base's own for a cell equal to it)
    is_base: bool

    @property
    def checkpoints(self) -> Path:
        return default_checkpoints(self.results)

    @property
    def weights(self) -> Path:
        return default_weights(self.results)


def is_base_cell(sweep: Sweep, cell: Cell, plans: list[RunPlan]) -> bool:
    """Whether every run of the cell is the same run (run_identity) as the base scale's, without the cell's levels."""
    for plan in plans:
        base = plan_run(plan.step, sweep.scale, sweep.data_of(cell), plan.key.seed, sweep.fixed, 1)
        if run_identity(plain_config(base.cfg), None) != run_identity(plain_config(plan.cfg), None):
            return False
    return True


def plan_sweep(sweep: Sweep, results: Path, chosen: list[int] | None = None) -> list[SweepRun]:
    """Every run of the cells to train (`chosen` indices, else every cell not marked untrained), cell-major, then
    seed, then roadmap order; any mistake in the file (a key, a level's type, a step) is a ConfigError here."""
    steps = load_roadmap(sweep.roadmap)
    known = {s.id: s for s in steps}
    for step_id in sweep.steps:
        if step_id not in known:
            raise ConfigError(f"{sweep.path}: unknown step '{step_id}' in roadmap {sweep.roadmap}"
                              f"{closest(step_id, known)}")
    wanted = [s for s in steps if s.id in sweep.steps]
    cells = cells_to_train(sweep, chosen)
    out = []
    for cell in cells:
        overrides = cell_overrides(sweep, cell)
        try:
            plans = [plan_run(step, sweep.scale, sweep.data_of(cell), seed, overrides, 1)
                     for seed in sweep.seeds for step in wanted]
        except ConfigError as err:
            raise ConfigError(f"{sweep.path}: cell {cell.index} ({cell.name}): {err}") from None
        base = is_base_cell(sweep, cell, plans)
        folder = Path(results) if base else sweep.folder(cell, results)
        out += [SweepRun(cell, plan, folder, base) for plan in plans]
    return out


def cells_to_train(sweep: Sweep, chosen: list[int] | None) -> list[Cell]:
    if chosen is None:
        return [c for c in sweep.cells if not c.untrained]
    for index in chosen:
        if not 0 <= index < len(sweep.cells):
            raise ConfigError(f"--cell {index}: {sweep.name} has cells 0 to {len(sweep.cells) - 1} "
                              f"('runner.py sweep {sweep.name} --dry-run' lists them)")
    return [sweep.cells[i] for i in sorted(set(chosen))]


# ---------------------------------------------------------------------------- training
class Sources:
    """Each dataset a sweep trains on, opened once (a cell that varies only epochs or widths shares its data)."""

    def __init__(self, info: Dist):
        self.info, self.opened = info, {}

    def ready(self, run: SweepRun) -> SweepRun:
        cfg = run.plan.cfg
        key = json.dumps([plain_config(cfg)["data"], cfg.scale.image_size, cfg.scale.crop, cfg.scale.train_subset,
                          cfg.scale.eval_subset])
        if key not in self.opened:
            self.opened[key] = open_source(cfg.data, cfg.scale, rank=self.info.rank)
        return dataclasses.replace(run, plan=ready(run.plan, self.opened[key], self.info))


def check_runs(runs: list[SweepRun]) -> None:
    """runs.py's checks, per results folder and data: nothing is written before every cell passes them."""
    for index in dict.fromkeys(run.cell.index for run in runs):   # a cell's networks are its own widths and depths
        check_models_fit([run.plan for run in runs if run.cell.index == index])
    groups: dict[tuple, list[SweepRun]] = {}
    for run in runs:
        groups.setdefault((run.results, id(run.plan.source)), []).append(run)
    for (results, _), group in groups.items():
        planned = [run.plan for run in group]
        check_same_data(planned, results, planned[0].source)
        check_init_from(planned, planned[0].source.num_classes)
        check_same_config(planned, results)
    for results in dict.fromkeys(run.results for run in runs):
        first = next(run for run in runs if run.results == results)
        check_apart(first.checkpoints, first.weights)
        for folder, option in ((results, "the cell's results folder"), (first.checkpoints, "its checkpoints"),
                               (first.weights, "its weights")):
            check_writable(folder, option)
        check_run_paths([run.plan for run in runs if run.results == results], results, first.checkpoints,
                        first.weights)


def label(runs: list[SweepRun], i: int) -> str:
    run = runs[i]
    return f"[{i + 1}/{len(runs)}] cell {run.cell.index} ({run.cell.name}) {run.plan.step.id} seed {run.plan.key.seed}"


def train_sweep(sweep: Sweep, results: Path, chosen: list[int] | None, jobs: int, argv: list[str], progress: bool,
                worker: bool = False) -> dict:
    """Plan and check every run of the sweep's cells, then train what is not finished (`jobs` processes)."""
    if worker:
        end_with_parent()
    info = Dist.from_env()
    sources = Sources(info)
    runs = plan_sweep(sweep, results, chosen)
    if worker:   # the parent has checked everything; data is opened as the runs handed out need it
        serve(lambda i, wait: train_one(sources.ready(runs[i]), info, False, label(runs, i), wait))
        return {}
    runs = [sources.ready(run) for run in runs]
    if jobs > 1:
        check_jobs(runs[0].plan, info)
    git_commit()
    check_runs(runs)
    info = init_distributed(runs[0].plan.device.type)
    say(info, f"sweep {sweep.name}: {len({r.cell.index for r in runs})} cell(s), {len(runs)} run(s) "
              f"-> {Path(results) / 'sweeps' / sweep.name}")
    start, counts = time.perf_counter(), dict.fromkeys(OUTCOMES, 0)
    todo = []
    for i, run in enumerate(runs):
        if skip_finished(run.plan, label(runs, i), run.results, run.checkpoints, run.weights, info, run.is_base):
            counts["skipped"] += 1
        else:
            todo.append(i)
    eta = total_eta([run.plan for run in runs], todo, jobs, info)   # runs left and their time, as each ends

    def ended(i: int) -> None:
        run_ended(eta, i, runs[i].plan, runs[i].results, info)

    if jobs > 1:
        outcomes, stopped = hand_out(todo, argv, jobs, started=eta.start, ended=ended)
        for outcome, n in outcomes.items():
            counts[outcome] += n
        if stopped:
            say(info, f"stopped: a worker process ended with {stopped} (its message, if any, is above)")
            raise SystemExit(stopped if stopped > 0 else 1)
    else:
        def train(i: int, wait: bool) -> str:
            eta.start(i)
            return train_one(runs[i], info, progress, label(runs, i), wait)

        for i, outcome in train_in_turn(todo, train):
            counts[outcome] += 1
            ended(i)
    say(info, f"done in {time.perf_counter() - start:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return counts


def train_one(run: SweepRun, info: Dist, progress: bool, text: str, wait: bool = False) -> str:
    return run_one(run.plan, run.results, run.checkpoints, run.weights, info, progress, text, wait)


# ---------------------------------------------------------------------------- --dry-run
def dry_run(sweep: Sweep, results: Path, chosen: list[int] | None, jobs: int) -> str:
    """Every cell (trained or not), its runs, what is done, and plan's wall-time estimate; reads, writes nothing."""
    runs = plan_sweep(sweep, results, chosen)
    by_cell = {cell.index: [r for r in runs if r.cell.index == cell.index] for cell in sweep.cells}
    records = {id(r): read_record(r.plan.key.record_path(r.results)) for r in runs}   # each record read once
    status = {key: record_status(record) for key, record in records.items()}
    seconds: dict[int, list[float]] = {}   # plan's time of each run of the cell
    for index, cell_runs in by_cell.items():
        if cell_runs:
            costs = plan_costs([r.plan for r in cell_runs], "cpu", 1, "fp32", 0.4, jobs=jobs)
            seconds[index] = [c["seconds"] for c in costs["runs"]]
            speed = costs["source"]
    rows = [cell_row(sweep, cell, by_cell[cell.index], seconds.get(cell.index),
                     [records[id(r)] for r in by_cell[cell.index]], jobs) for cell in sweep.cells]
    header = ["index", "cell", *sweep.factors, "results", "runs", "done", "to train", f"plan left, --jobs {jobs}",
              f"plan, --jobs {jobs}", "measured"]
    todo = [s for index in sorted(seconds) for s, r in zip(seconds[index], by_cell[index]) if status[id(r)] is None]
    lines = [f"sweep {sweep.name} ({sweep.path}): {sweep.title}",
             f"roadmap {sweep.roadmap}, scale {sweep.scale}, data {sweep.data or 'the scale’s'}; steps "
             f"{', '.join(sweep.steps)}; seeds {', '.join(map(str, sweep.seeds))}"
             + (f"; every run sets {fixed_text(sweep.fixed)}" if sweep.fixed else ""),
             "", markdown_table(header, rows).rstrip(), "",
             f"- {len(todo)} run(s) to train: {hours(handed_out_wall(todo, jobs))} of wall time at --jobs {jobs} "
             f"by plan (cells one after another; the FLOP/s benched for each step at the base scale's networks).",
             "- measured: the wall time during which a complete run of the cell was training (runs side by side "
             "count once), from the start and end times in its records."]
    if seconds:
        lines.append(f"- Speed: {speed}.")
    trained = [c.index for c in sweep.cells if not c.untrained]
    lines.append(f"- Slurm: sbatch --array={array_spec(trained)} steps/sweeps/sweep.sbatch {sweep.name} "
                 "(each task trains the cell its index names: runner.py sweep NAME --cell $SLURM_ARRAY_TASK_ID)")
    return "\n".join(lines) + "\n"


def cell_row(sweep: Sweep, cell: Cell, runs: list[SweepRun], seconds: list[float] | None,
             records: list[dict | None], jobs: int) -> list:
    """The dry run's row of a cell; `records`: each run's record as read (None: none yet)."""
    levels = [level_text(f, cell.levels[f]) if f in cell.levels else "·" for f in sweep.factors]
    if not runs:
        why = f"untrained: {cell.untrained}" if cell.untrained else "not chosen (--cell)"
        return [cell.index, cell.name, *levels, why, "–", "–", "–", "–", "–", "–"]
    status = [record_status(record) for record in records]   # None: still to train
    done = status.count(COMPLETE)
    where = f"{runs[0].results} (the base scale's own)" if runs[0].is_base else str(runs[0].results)
    todo = [s for s, st in zip(seconds, status) if st is None]
    plan_left = hours(handed_out_wall(todo, jobs)) if todo else "–"
    spans = [span for st, record in zip(status, records) if st == COMPLETE and (span := run_span(record))]
    measured = f"{hours(union_seconds(spans))} ({len(spans)} runs)" if spans else "–"
    return [cell.index, cell.name, *levels, where, len(runs), done, len(todo), plan_left,
            hours(handed_out_wall(seconds, jobs)), measured]


def run_span(record: dict | None) -> tuple[float, float] | None:
    """When a run started and ended (its record's times, as seconds since the epoch); None without them."""
    try:
        return (datetime.fromisoformat(record["started"]).timestamp(),
                datetime.fromisoformat(record["finished"]).timestamp())
    except (TypeError, KeyError, ValueError):   # no record, or one without times (older schema)
        return None


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """How long at least one of the spans was going on: runs side by side count once."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def fixed_text(fixed: dict) -> str:
    return ", ".join(f"{section}.{key}={value}" for section, values in fixed.items() for key, value in values.items())


def array_spec(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8', as sbatch --array takes it."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
