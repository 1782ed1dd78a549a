"""How long the rest of a `run` command should take, said as each of its runs ends.

Each run's time is `plan`'s estimate (compute.plan_costs: a bench record of this device taken as the runs
train, else its datasheet peak), corrected by the ratio of measured to planned time over the runs complete so
far: on this project's CPU, runs at 64 px took 1.32x `plan`'s estimate (docs/scales.md), which the first runs
teach. The runs left go, in order, to whichever of the `jobs` processes is free first
(compute.handed_out_wall), a run in progress with what it should still take.
"""
from __future__ import annotations

import time

import torch

from .bench import DTYPES
from .compute import DEFAULT_UTILIZATION, handed_out_wall, hours, plan_costs
from .config import ConfigError
from .plan import RunPlan
from .runtime import Dist


class TotalEta:
    """The runs of one command still to train, by plan index, and what each should take."""

    def __init__(self, planned_s: dict[int, float], jobs: int, clock=time.monotonic):
        self.planned_s, self.jobs, self.clock = dict(planned_s), jobs, clock
        self.started: dict[int, float] = {}
        self.measured: dict[int, float | None] = {}   # runs ended: a complete run's wall time, else None

    def start(self, index: int) -> None:
        self.started[index] = self.clock()

    def end(self, index: int, wall_s: float | None) -> None:
        """A run ended; `wall_s` is its record's wall time when it is complete (a crash teaches nothing)."""
        self.measured[index] = wall_s

    def complete(self) -> list[tuple[float, float]]:
        """(measured, planned) seconds of each run complete so far."""
        return [(wall_s, self.planned_s[i]) for i, wall_s in self.measured.items() if wall_s and i in self.planned_s]

    @property
    def ratio(self) -> float:
        """Measured over planned time, summed over the complete runs; 1 before the first."""
        done = self.complete()
        return sum(w for w, _ in done) / sum(p for _, p in done) if done else 1.0

    def left(self) -> list[int]:
        return [i for i in self.planned_s if i not in self.measured]

    def rest_s(self) -> float:
        """Wall time until the last run left ends."""
        ratio, now = self.ratio, self.clock()
        busy = [max(ratio * self.planned_s[i] - (now - self.started[i]), 0.0) for i in self.left() if i in self.started]
        queued = [ratio * self.planned_s[i] for i in self.left() if i not in self.started]
        return handed_out_wall(queued, self.jobs, busy)

    def short(self) -> str:
        """'2 run(s) left, about 7.5 min': the progress line's."""
        return f"{len(self.left())} run(s) left, about {hours(self.rest_s())}"

    def line(self) -> str:
        """The log's line once a run ends: runs left, the time they should take and where that comes from."""
        complete = len(self.complete())
        basis = (f"plan's estimate x{self.ratio:.2f}, the ratio measured on {complete} complete run(s)" if complete
                 else "plan's estimate")
        return f"{self.short()} ({basis})"


def total_eta(planned: list[RunPlan], todo: list[int], jobs: int, info: Dist) -> TotalEta:
    """A TotalEta of the runs at these plan indices, each as long as `plan` says on this device; on rank 0 alone. One
    that knows no run, and says nothing, for a single run (which has its own ETA) or where `plan` has no speed for
    the device."""
    if len(todo) < 2 or not info.is_main:
        return TotalEta({}, jobs)
    device, amp = planned[todo[0]].device, planned[todo[0]].amp
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    dtype = next(key for key, value in DTYPES.items() if value == amp)
    try:
        costs = plan_costs([planned[i] for i in todo], name, info.world_size, dtype, DEFAULT_UTILIZATION, jobs=jobs)
    except ConfigError:   # no bench record and no datasheet peak of this device
        return TotalEta({}, jobs)
    return TotalEta({i: run["seconds"] for i, run in zip(todo, costs["runs"])}, jobs)
