"""What a roadmap costs before one launches it: `runner.py plan`.

Per run and in total: training FLOPs (6 x the counted forward MACs per image: 2 FLOPs per MAC and a
backward pass twice the forward, plus 2 x MACs per evaluated image), the images to process, and the
time and device-hours on a device. The device's speed comes from a committed `runner.py bench`
record of it (its achieved FLOP/s, step by step, taken as the runs train: same scale, memory format
and threads per process where such a record exists), else from its datasheet peak at a stated
utilisation; the output says which. With `--jobs N` on a CPU the runs go to N processes as
`run --jobs N` hands them out (in order, to whichever is free first), and the wall time is when the
last one ends.
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from .bench import PEAK_FLOPS, TRAIN_FLOPS_PER_FORWARD_MAC, check_dtype
from .config import ConfigError
from .data import IMAGE_EXTENSIONS
from .model import ModelConfig, count_gflops
from .plan import RunPlan
from .results import REPO_ROOT
from .markdown import markdown_table
from .steps import build_model
from .workers import worker_threads

BENCH_DIR = REPO_ROOT / "results" / "bench"
# (train images, eval images, classes) of the datasets the runner knows by name.
DATA_SIZES = {"fashion-mnist": (60_000, 10_000, 10), "cifar10": (50_000, 10_000, 10),
              "cifar100": (50_000, 10_000, 100)}
IMAGENET_1K = (1_281_167, 50_000, 1000)
DEFAULT_UTILIZATION = 0.4   # share of a datasheet peak assumed where no bench record of the device exists


@dataclass(frozen=True)
class Speed:
    """FLOP/s a device achieves: per step id where a bench record has the step, else `default`."""
    per_step: dict
    default: float
    source: str

    def of(self, step_id: str) -> float:
        return self.per_step.get(step_id, self.default)


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def data_sizes(plan: RunPlan) -> tuple[int, int, int, str]:
    """(train images, eval images, classes, note) of a run's data, after the scale's subsets."""
    spec, note = plan.cfg.data.spec, ""
    if spec in DATA_SIZES:
        train, evals, classes = DATA_SIZES[spec]
    elif spec == "synthetic":
        train, classes = plan.cfg.data.synthetic_size, plan.cfg.data.synthetic_classes
        evals = max(1, train // 4)
    elif spec.startswith("imagefolder:") and (root := Path(spec.split(":", 1)[1])).joinpath("train").is_dir():
        split = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
        train, evals = count_images(root / "train"), count_images(split) if split else 0
        classes = sum(1 for p in (root / "train").iterdir() if p.is_dir())
    else:
        train, evals, classes = IMAGENET_1K
        note = f"{spec} is not on this machine: ImageNet-1k's sizes assumed"
    scale = plan.cfg.scale
    return min(train, scale.train_subset or train), min(evals, scale.eval_subset or evals), classes, note


_GMACS: dict[tuple, float] = {}


def forward_gmacs(model: ModelConfig, classes: int, image_size: int) -> float:
    """A network's forward MACs, counted on the meta device (shapes only: the counts are the CPU's, at no cost),
    once per network however many seeds and sweep cells share it."""
    key = (json.dumps(dataclasses.asdict(model)), classes, image_size)
    if key not in _GMACS:
        with torch.device("meta"):
            _GMACS[key] = count_gflops(build_model(model, classes), image_size)
    return _GMACS[key]


def run_cost(plan: RunPlan, sizes: tuple[int, int, int, str]) -> dict:
    train, evals, classes, _ = sizes
    gmacs = forward_gmacs(plan.cfg.model, classes, plan.cfg.scale.image_size)
    epochs = plan.recipe.epochs
    train_images = train // plan.recipe.batch_size * plan.recipe.batch_size * epochs  # full updates only
    evaluations = len({e for e in range(1, epochs + 1) if e % plan.cfg.train.eval_every == 0 or e == epochs})
    flops = gmacs * 1e9 * (TRAIN_FLOPS_PER_FORWARD_MAC * train_images + 2 * evals * evaluations)
    return {"step": plan.step.id, "seed": plan.key.seed, "gmacs": gmacs, "train_images": train_images,
            "eval_images": evals * evaluations, "flops": flops}


def bench_records(device: str, bench_dir: Path) -> list[dict]:
    records = []
    for path in sorted(bench_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):   # unreadable, not JSON, or nested too deeply: not evidence
            continue
        if isinstance(record, dict) and device.lower() in str(record.get("device", "")).lower():
            records.append({**record, "_path": path})
    return records


def record_threads(record: dict) -> int | None:
    """Threads per process a CPU bench record ran with (older records say it only in the device name)."""
    if record["settings"].get("threads"):
        return record["settings"]["threads"]
    match = re.search(r"(\d+) threads", str(record.get("device", "")))
    return int(match[1]) if match else None


def pick_record(records: list[dict], scale: str, image_size: int, channels_last: bool | None = None,
                threads: int | None = None) -> dict | None:
    """The record taken most like the runs: at their scale (else their image size), in their memory format
    and with their threads per process; the newest among equals."""
    def likeness(r: dict) -> tuple:
        settings = r["settings"]
        return (settings.get("scale") == scale, settings.get("image_size") == image_size,
                (channels_last is None or settings.get("channels_last") == channels_last)
                + (threads is None or record_threads(r) == threads), r.get("date") or "", str(r["_path"]))
    return max(records, key=likeness, default=None)


def device_speed(device: str, scale: str, image_size: int, dtype: str, utilization: float,
                 bench_dir: Path = BENCH_DIR, channels_last: bool | None = None, threads: int | None = None) -> Speed:
    record = pick_record(bench_records(device, bench_dir), scale, image_size, channels_last, threads)
    if record:
        achieved = {row["id"]: row["images_per_s_median"] * TRAIN_FLOPS_PER_FORWARD_MAC * row["gflops"] * 1e9
                    for row in record["rows"] if row["kind"] == "step" and row.get("images_per_s_median")}
        if achieved:
            median = statistics.median(achieved.values())
            settings = record["settings"]
            return Speed(achieved, median, f"bench record {record['_path'].name} ({record['device']}, "
                         f"scale {settings.get('scale') or 'paper-size networks'}, batch {settings['batch']}, "
                         f"{settings['image_size']} px, {settings['dtype']}, channels_last "
                         f"{settings.get('channels_last')}): achieved FLOP/s step by step, "
                         f"median {median / 1e12:.3g} TFLOP/s")
    for key, peaks in PEAK_FLOPS:
        if key.lower() in device.lower():
            return Speed({}, peaks[dtype] * utilization,
                         f"no bench record of {device}: its datasheet peak ({peaks[dtype] / 1e12:g} TFLOP/s {dtype}, "
                         f"dense) at an assumed {utilization:.0%} utilisation")
    raise ConfigError(f"no bench record of '{device}' under {bench_dir} and no datasheet peak for it; run "
                      f"'runner.py bench --out results/bench' on it (devices with a known peak: "
                      f"{', '.join(k for k, _ in PEAK_FLOPS)})")


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.2f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def plan_costs(plans: list[RunPlan], device: str, devices: int, dtype: str, utilization: float,
               bench_dir: Path = BENCH_DIR, jobs: int = 1) -> dict:
    """Every run's cost and time on `devices` of `device` (ideal scaling across them), and the total; with
    `jobs` > 1 (a CPU), each run's time in one of `jobs` processes and the wall time of handing them out."""
    if devices < 1:
        raise ConfigError(f"--devices must be 1 or more, not {devices}")
    if not 0 < utilization <= 1:
        raise ConfigError(f"--utilization must be in (0, 1], not {utilization}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be 1 or more, not {jobs}")
    if jobs > 1 and device.lower() != "cpu":
        raise ConfigError("--jobs plans runs in processes that share a CPU (--device cpu); on GPUs use --devices")
    check_dtype(dtype)
    scale = plans[0].cfg.scale
    threads = worker_threads(jobs) if device.lower() == "cpu" else None
    speed = device_speed(device, scale.name, scale.image_size, dtype, utilization, bench_dir,
                         plans[0].cfg.train.channels_last, threads)
    sizes = data_sizes(plans[0])
    runs = []
    for plan in plans:
        cost = run_cost(plan, sizes)
        cost["seconds"] = cost["flops"] / (speed.of(plan.step.id) * devices)
        cost["device_hours"] = cost["seconds"] * devices / 3600
        runs.append(cost)
    total = {key: sum(r[key] for r in runs) for key in ("train_images", "eval_images", "flops", "seconds",
                                                         "device_hours")}
    total["wall_seconds"] = handed_out_wall([r["seconds"] for r in runs], jobs)
    return {"device": device, "devices": devices, "jobs": jobs, "threads": threads, "source": speed.source,
            "data_note": sizes[3], "runs": runs, "total": total}


def handed_out_wall(seconds: list[float], jobs: int, busy: list[float] = ()) -> float:
    """When the last run ends if each goes, in order, to whichever of `jobs` processes is free first; `busy`: how
    long the runs some of them train now should still take."""
    idle = min(jobs, len(busy) + len(seconds)) - len(busy)   # as run --jobs, a process a run at most (--jobs 10**12)
    free_at = sorted([*busy, *[0.0] * idle])   # a sorted list is a heap
    for run_s in seconds:
        heapq.heappush(free_at, heapq.heappop(free_at) + run_s)
    return max(free_at, default=0.0)


def render(costs: dict) -> str:
    rows = [[r["step"], r["seed"], f"{r['gmacs']:.3g}", f"{r['train_images']:,}", f"{r['flops'] / 1e15:,.3g}",
             hours(r["seconds"]), f"{r['device_hours']:,.2f}"] for r in costs["runs"]]
    t = costs["total"]
    rows.append(["total", "", "", f"{t['train_images']:,}", f"{t['flops'] / 1e15:,.3g}", hours(t["seconds"]),
                 f"{t['device_hours']:,.2f}"])
    table = markdown_table(["step", "seed", "GMACs/image", "training images", "PFLOPs", "time",
                            "device-hours"], rows, align="lrrrrrr")
    if costs["jobs"] > 1:
        notes = [f"On {costs['device']}, {costs['jobs']} runs at a time (run --jobs {costs['jobs']}), "
                 f"{costs['threads']} thread(s) each: {hours(t['wall_seconds'])} of wall time."]
    else:
        notes = [f"On {costs['devices']} x {costs['device']}, runs one after another, ideal scaling across devices."]
    notes.append(f"Speed: {costs['source']}.")
    if costs["data_note"]:
        notes.append(costs["data_note"] + ".")
    return table + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
