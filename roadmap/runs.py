"""Run one step or a whole roadmap: validate everything first, then train each run in isolation.

A run already complete (or diverged, which would diverge again) is skipped; an interrupted one
resumes from its checkpoint; one that crashes is recorded as failed and the roadmap goes on
(timm's bulk_runner). A complete run keeps its final weights (weights.py). Nothing is written
before every config, the data, the results folder and any weights to start from have been checked.
"""
from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

import torch.distributed as dist
import yaml
from tqdm import tqdm

from .config import SECTIONS, ConfigError
from .data import Source, open_source
from .eta import TotalEta, total_eta
from .plan import RunPlan, check_models_fit, identity_changes, plain_config, plan_runs, ready, run_identity
from .results import COMPLETE, DIVERGED, FAILED, Record, ResultsError, RunLock, blocking_file, check_apart, check_writable, \
    check_can_write, default_tensorboard, finished_status, leads_out, lock_is_held, read_record, warn_damaged
from .steps import build_model
from .runtime import Dist, git_commit, init_distributed
from .train import bars_shown, train_run
from .weights import drop_checkpoint, fit_state, missing_weights
from .workers import HELD, end_with_parent, hand_out, serve, worker_threads


def check_data(planned: list[RunPlan], info: Dist, listed: bool = False) -> list[RunPlan]:
    """Open the dataset before anything is written: missing or malformed data fails here. Every run is then
    made ready to train on it (plan.ready: device, batch against the data, updates, fingerprint).

    Opened as the runs serve it (decoded in memory for small sets), so that strict mode meets every
    unreadable file now rather than in the middle of a roadmap. Opened once: every run trains on it. A dry
    run's is `listed`: nothing decoded or made."""
    first = planned[0]
    source = open_source(first.cfg.data, first.cfg.scale, rank=info.rank, listed=listed)
    return [ready(run, source, info) for run in planned]


def check_init_from(planned: list[RunPlan], num_classes: int) -> None:
    """Fine-tuning (train.init_from): a file that does not fit a step stops here, naming the first tensor."""
    checked = set()
    for run in planned:
        if run.cfg.train.init_from and run.step.id not in checked:
            fit_state(Path(run.cfg.train.init_from), build_model(run.cfg.model, num_classes), run.step, run.cfg.model)
            checked.add(run.step.id)


def check_same_data(planned: list[RunPlan], results: Path, source: Source) -> None:
    """Complete runs on other data than `source` are refused (plan.run_identity): skipped, they would stand for
    this data; moved data finds its results."""
    now = source.identity()
    for run in planned:
        record = read_record(run.key.record_path(results)) or {}
        if record.get("status") != COMPLETE:
            continue
        if changed := identity_changes(record, now):
            raise ConfigError(f"{run.key.data} in {results} was other data when {run.step.id} seed {run.key.seed} "
                              f"ran ({'; '.join(f'{key} was {old}, now {new}' for key, old, new in changed)}); "
                              f"use another --results folder for it")


def check_same_config(planned: list[RunPlan], results: Path) -> None:
    """A finished or interrupted run under another config (plan.run_identity) must not be skipped or resumed as
    if it were this one."""
    for run in planned:
        saved = saved_config(run.key.config_path(results))
        if saved is None:
            continue
        if changed := identity_changes(run_identity(saved, None), run_identity(plain_config(run.cfg), None)):
            name, old, value = changed[0]
            raise ConfigError(f"{run.step.id} seed {run.key.seed} in {results} was run with {name}={old!r}, not "
                              f"{value!r}; use another --results folder for this variant, or delete "
                              f"{run.key.folder(results)}")


def saved_config(path: Path) -> dict | None:
    """The config a run was saved with (seed<k>.yaml); None when absent or damaged (with a warning)."""
    try:
        saved = yaml.safe_load(path.read_bytes().decode())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        problem = err.strerror or type(err).__name__
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except yaml.YAMLError as err:
        problem = f"not YAML: {type(err).__name__}"
    except RecursionError:   # '[[[[...' deep enough to exhaust the parser's stack
        problem = "nested too deeply to read"
    else:
        if isinstance(saved, dict) and all(isinstance(saved.get(section), dict) for section in SECTIONS):
            return saved
        problem = "not a mapping of config sections"
    warn_damaged(path, problem, "it cannot be compared with this run's config, and is rewritten if the run trains")
    return None


def check_run_paths(planned: list[RunPlan], results: Path, checkpoints: Path, weights: Path) -> None:
    """Every run can write where it writes, checked before anything is trained: its folders (its TensorBoard
    folder included) stay inside the folder each belongs to (no link inside it leads out) and no file stands
    where one of them goes; no link or folder stands where its lock file goes; and every file a run still to train
    writes can be written (a read-only or immutable folder, a record that cannot be replaced)."""
    roots = {"--results": results, "--checkpoints": checkpoints, "--weights": weights}
    for run in planned:
        folders = {option: (root, run.key.folder(root)) for option, root in roots.items()}
        if run.cfg.train.log == "tensorboard":
            board = default_tensorboard(results)
            folders["--results (its tensorboard/ folder)"] = (board, run.key.tensorboard_dir(board))
        for option, (root, folder) in folders.items():
            if leads_out(folder, root):
                raise ResultsError(f"{folder} leads out of {root} (a link inside it points elsewhere); remove the "
                                   f"link or pass another {option}")
            if blocker := blocking_file(folder):
                raise ResultsError(f"{blocker} is a file where {run.step.id} seed {run.key.seed} needs the folder "
                                   f"{folder}; move it away or pass another {option}")
        RunLock(results, run.key).check()
    check_can_write([path for run in planned if not finished_status(results, run.key)
                     for path in run.key.files(results, checkpoints, weights)])


OUTCOMES = (COMPLETE, "skipped", FAILED, DIVERGED)   # what `run` counts


def execute(planned: list[RunPlan], results: Path, checkpoints: Path, weights: Path, info: Dist,
            progress: bool = True) -> dict:
    """Train every planned run not yet finished; returns counts by outcome. A run another process holds comes
    last, waited for (run_one)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    unfinished = [i for i, run in enumerate(planned) if not finished_status(results, run.key)]
    eta = total_eta(planned, unfinished, 1, info)
    bar = tqdm(total=len(planned), desc="runs", position=0, disable=len(planned) < 2 or not bars_shown(progress, info),
               bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}")   # the ETA is eta.py's, not by count

    def train(i: int, wait: bool) -> str:
        run, label = planned[i], run_label(planned, i)
        if skip_finished(run, label, results, checkpoints, weights, info):
            return "skipped"
        eta.start(i)
        return run_one(run, results, checkpoints, weights, info, progress, label, wait)

    for i, outcome in train_in_turn(range(len(planned)), train):
        counts[outcome] += 1
        if outcome == "skipped":
            eta.end(i, None)   # finished by another process since the count, if it was one of the runs left
        else:
            run_ended(eta, i, planned[i], results, info)
            bar.set_postfix_str(eta.short() if eta.left() else "", refresh=False)
        bar.update()
        if outcome == FAILED and info.world_size > 1:
            say(info, "the processes cannot train together after a failure; stopping (run the command again)")
            break
    bar.close()
    return counts


def train_in_turn(todo, train: Callable[[int, bool], str]) -> Iterator[tuple[int, str]]:
    """(index, outcome) of each run of `todo` as `train(index, wait)` trains it, in turn; a run another process
    holds (HELD) comes again after the others, to wait for then (run_one)."""
    queue = deque((i, False) for i in todo)
    while queue:
        i, wait = queue.popleft()
        outcome = train(i, wait)
        if outcome == HELD:
            queue.append((i, True))
        else:
            yield i, outcome


def execute_in_workers(planned: list[RunPlan], results: Path, checkpoints: Path, weights: Path, info: Dist,
                       jobs: int, argv: list[str]) -> dict:
    """--jobs: the runs not yet finished go to `jobs` worker processes (workers.py); counts by outcome."""
    counts = dict.fromkeys(OUTCOMES, 0)
    todo = []
    for i, run in enumerate(planned):
        if skip_finished(run, run_label(planned, i), results, checkpoints, weights, info):
            counts["skipped"] += 1
        else:
            todo.append(i)
    if todo:
        say(info, f"{len(todo)} run(s) to train in {min(jobs, len(todo))} processes of "
                  f"{worker_threads(jobs)} thread(s) each")
    eta = total_eta(planned, todo, jobs, info)
    outcomes, stopped = hand_out(todo, argv, jobs, started=eta.start,
                                 ended=lambda i: run_ended(eta, i, planned[i], results, info))
    for outcome, n in outcomes.items():
        counts[outcome] += n
    if stopped:
        how = f"was killed by signal {-stopped}" if stopped < 0 else f"ended with exit code {stopped}"
        say(info, f"stopped: a worker process {how} (its message, if any, is above)")
        raise SystemExit(stopped if stopped > 0 else 1)
    return counts


def run_ended(eta: TotalEta, i: int, run: RunPlan, results: Path, info: Dist) -> None:
    """The total ETA learns a run's time from its record (a complete run's) and says what is left, if anything."""
    record = read_record(run.key.record_path(results)) or {}
    eta.end(i, record.get("wall_s") if record.get("status") == COMPLETE else None)
    if eta.left():
        say(info, eta.line())


def run_label(planned: list[RunPlan], i: int) -> str:
    run = planned[i]
    return f"[{i + 1}/{len(planned)}] {run.key.roadmap}/{run.step.id} seed {run.key.seed}"


def skip_finished(run: RunPlan, label: str, results: Path, checkpoints: Path, weights: Path, info: Dist,
                  reused: bool = False) -> bool:
    """A run complete or diverged already is skipped (said so); False when it is still to train. A `reused` record
    (a sweep's cell that is the committed reference) is not expected to have its weights here."""
    status = finished_status(results, run.key)
    if not status:
        return False
    say(info, f"{label}: already {status}" + (", the base scale's own record, reused" if reused else ", skipped"))
    record = read_record(run.key.record_path(results))
    missing = missing_weights(record, weights) if status == COMPLETE and record and not reused else None
    if missing:  # not retrained: the record stands; only deleting it trains the run again
        say(info, f"warning: {run.step.id} seed {run.key.seed} is complete but {missing}; "
                  f"delete {run.key.record_path(results)} to train it again")
    if info.is_main:  # left behind by a kill between writing the record and cleaning up
        drop_checkpoint(run.key.checkpoint_path(checkpoints), record)
    return True


def run_one(run: RunPlan, results: Path, checkpoints: Path, weights: Path, info: Dist, progress: bool,
            label: str, wait: bool = False) -> str:
    """Train one run under its lock; its outcome, or HELD where another process holds the run (take_lock)."""
    lock = RunLock(results, run.key)
    if info.is_main:
        if not take_lock(lock, info, label, wait):
            return HELD
        if finished_status(results, run.key):  # finished by another process meanwhile
            lock.release()
            say(info, f"{label}: finished by another process, skipped")
            return "skipped"
    try:
        record = train_run(run, results, checkpoints, weights, info, progress)   # writes its record
        say_outcome(info, label, record)
        if info.is_main and record.status == COMPLETE:
            # Only now: a kill before the record is written must still find the checkpoint.
            drop_checkpoint(run.key.checkpoint_path(checkpoints), record.to_json())
    finally:
        lock.release()  # after the record: whoever takes the lock next finds it
    if info.world_size > 1 and record.status == FAILED:
        wait_for_release(lock)
    elif info.world_size > 1:
        dist.barrier()
    return record.status


def take_lock(lock: RunLock, info: Dist, label: str, wait: bool) -> bool:
    """Take a run's lock; False where another process holds it, so that this one trains the other runs first and
    comes back to it (`wait`: it waits for it then). Two identical commands started together train each run
    once. Under torchrun the ranks cannot move on apart: the run is refused."""
    if info.world_size > 1:
        lock.acquire()
        return True
    if lock.try_acquire():
        return True
    if not wait:
        say(info, f"{label}: being trained by another process (it locks {lock.path}); coming back to it at the end")
        return False
    say(info, f"{label}: waiting for the other process that trains it (it locks {lock.path})")
    return lock.try_acquire(wait=True)


def say_outcome(info: Dist, label: str, record: Record) -> None:
    if record.status == COMPLETE:
        bound = f", input-bound: {100 * record.data_time_share:.0f}% waiting for data" if record.input_bound else ""
        say(info, f"{label}: top-1 {record.top1:.2f}%  ({record.wall_s:.0f} s, {record.images_per_s:.0f} img/s{bound})")
    elif record.status == DIVERGED:
        say(info, f"{label}: DIVERGED ({record.reason}); going on")
    else:
        say(info, f"{label}: FAILED ({record.reason})" + ("" if info.world_size > 1 else "; going on"))


def wait_for_release(lock: RunLock, timeout_s: float = 60.0) -> None:
    """After a failure under torchrun, a rank other than 0 waits (boundedly) until rank 0 has recorded it
    and released the run's lock: torchrun stops every process as soon as one of them ends."""
    deadline = time.monotonic() + timeout_s
    while lock_is_held(lock.path) and time.monotonic() < deadline:
        time.sleep(0.1)


def describe_plan(planned: list[RunPlan], results: Path) -> str:
    """One line that says what is about to be trained and where it goes."""
    first, scale = planned[0], planned[0].cfg.scale
    steps = len({run.step.id for run in planned})
    seeds = len({run.key.seed for run in planned})
    batches = sorted({run.recipe.batch_size for run in planned})   # the classic recipe may keep a batch of its own
    return (f"{first.key.roadmap}: {steps} step(s) x {seeds} seed(s), scale {scale.name} ({scale.image_size} px, "
            f"{scale.epochs} epochs, classic {scale.classic_epochs}, batch {' / '.join(map(str, batches))}), "
            f"data {first.cfg.data.spec} -> {results}")


def print_plan(planned: list[RunPlan], info: Dist, as_json: bool) -> None:
    """--dry-run: every run fully resolved, as YAML documents or one JSON list; nothing is written."""
    described = [run.describe(info.world_size) for run in planned]
    if not info.is_main:
        return
    if as_json:
        print(json.dumps(described, indent=1))
    else:
        print(yaml.safe_dump_all(json.loads(json.dumps(described)), sort_keys=False), end="")


def say(info: Dist, message: str) -> None:
    if info.is_main:   # through tqdm: above the progress bars of a terminal, intact
        tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()


def run_command(roadmap: str, step_ids: list[str] | None, scale: str, data: str | None, seeds: list[int],
                overrides: dict, results: Path, checkpoints: Path, weights: Path, progress: bool,
                dry_run: str | None = None, jobs: int = 1, argv: list[str] | None = None,
                worker: bool = False) -> dict:
    """The whole of `runner.py run`: plan, check, then train (or, with `dry_run`, print the plan).

    With `jobs` > 1 the runs train in that many worker processes, each started with `argv` (this
    command's arguments) and `worker` set: it trains the runs the parent hands it (workers.py)."""
    if worker:
        end_with_parent()   # first: a worker whose parent is killed, even while it starts up, ends too
    info = Dist.from_env()
    planned = check_data(plan_runs(roadmap, step_ids, scale, data, seeds, overrides, info.world_size), info,
                         listed=bool(dry_run))
    source = planned[0].source
    check_models_fit(planned)
    check_init_from(planned, source.num_classes)
    if dry_run:
        print_plan(planned, info, dry_run == "json")
        return {"planned": len(planned)}
    check_same_data(planned, results, source)   # by what the data holds: decoded, not listed as a dry run has it
    if jobs > 1:
        check_jobs(planned[0], info)
    git_commit()  # the code this roadmap runs, recorded as it is now
    check_same_config(planned, results)
    check_apart(checkpoints, weights)
    check_writable(results, "--results")
    check_writable(checkpoints, "--checkpoints")
    check_writable(weights, "--weights")
    check_run_paths(planned, results, checkpoints, weights)
    info = init_distributed(planned[0].device.type)
    if worker:
        serve(lambda i, wait: run_one(planned[i], results, checkpoints, weights, info, False, run_label(planned, i),
                                      wait))
        return {}
    say(info, describe_plan(planned, results))
    start = time.perf_counter()
    if jobs > 1:
        counts = execute_in_workers(planned, results, checkpoints, weights, info, jobs, argv)
    else:
        counts = execute(planned, results, checkpoints, weights, info, progress)
    say(info, f"done in {time.perf_counter() - start:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if dist.is_initialized():   # not after a failure: it has left the group already
        dist.destroy_process_group()
    return counts


def check_jobs(run: RunPlan, info: Dist) -> None:
    """--jobs splits one machine's CPU among processes; GPUs and torchrun have their own way to scale."""
    if info.world_size > 1:
        raise ConfigError("--jobs does not go with torchrun: each torchrun process is one job already")
    if run.device.type != "cpu":
        raise ConfigError("--jobs trains on the CPU (--device cpu); on GPUs use torchrun")
