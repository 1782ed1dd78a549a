"""Plan once: resolve and check every run completely before anything is trained or written.

A `RunPlan` holds everything a run needs: its config, the recipe with its final lr and batch, micro-batch and
accumulation (`plan_runs`); then, once the runner has opened the dataset (`ready`), the dataset itself, the
device and autocast dtype, the updates per epoch and the fingerprint a checkpoint must match. Training reads
them and re-checks nothing. `describe` is what `--dry-run` prints.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

import torch

from . import recipe as recipes
from . import tblog
from .config import ConfigError, ModelConfig, RunConfig, Step, check_config, find_step, load_roadmap, resolve_run_config, to_dict
from .data import Source, check_fits
from .data.checks import physical_memory
from .model import TENSOR_LAYOUT, check_model, count_params, total_stride
from .steps import build_model
from .results import RunKey, data_slug
from .runtime import Dist, amp_dtype, pick_device


# Keys that may change between a run and its resumption without changing what it computes (compile and
# flush_denormal move floats at most in their last bits, or below fp32's normal range).
RESUMABLE_CHANGES = {("train", "compile"), ("train", "channels_last"), ("train", "device"), ("data", "workers"),
                     ("data", "root"), ("train", "log"), ("train", "flush_denormal")}
# What records written before it existed lack: compared only where a saved run has it.
LATER_IDENTITY_KEYS = {"data_fingerprint"}


def run_identity(config: dict, data_identity: dict | None) -> dict:
    """What makes a run this run: its resolved config (`config`, as saved: plain values) less RESUMABLE_CHANGES and
    the scale keys its recipe never reads, its data known by name and by what it holds (`data_identity`:
    Source.identity: class and image counts, an image folder's fingerprint), not by its path, and the network's
    tensor layout. A moved folder is the same data; other images under the same path are not. A checkpoint
    resumes only a run of the same identity (config_fingerprint); a saved run is held against it with
    identity_changes."""
    values = {part: dict(value) if isinstance(value, dict) else value for part, value in config.items()}
    for section, key in RESUMABLE_CHANGES:
        values[section].pop(key, None)
    for key in recipes.unread_scale_keys(values["recipe"].get("name")):   # a modern run's classic epochs
        values["scale"].pop(key, None)
    spec = values["data"].get("spec")
    values["data"]["spec"] = data_slug(spec) if isinstance(spec, str) else spec   # a damaged saved config's too
    values["data_identity"] = data_identity
    values["tensor_layout"] = TENSOR_LAYOUT   # a checkpoint's tensor names must be this network's
    return values


def plain_config(cfg: RunConfig) -> dict:
    """The config as its saved YAML reads back: tuples are lists."""
    return json.loads(json.dumps(to_dict(cfg)))


def config_fingerprint(cfg: RunConfig, data_identity: dict | None = None) -> str:
    """sha256 of the run's identity (run_identity): a checkpoint resumes only the run it was saved by."""
    identity = run_identity(plain_config(cfg), data_identity)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def identity_changes(then: dict, now: dict) -> list[tuple[str, object, object]]:
    """Where a saved run's identity (`then`) differs from this run's (`now`), both run_identity's or the same
    part of it: (name, then's value, now's) for each key of `now`, in its order; a mapping in both is compared
    key by key, as `part.key`. A key `then` lacks counts as None, but for LATER_IDENTITY_KEYS: a run saved
    before they were kept is judged without them."""
    changes = []
    for name, value in now.items():
        old = then.get(name)
        if isinstance(value, dict) and isinstance(old, dict):
            changes += [(f"{name}.{key}", was, new) for key, was, new in identity_changes(old, value)]
        elif old != value and (name in then or name not in LATER_IDENTITY_KEYS):
            changes.append((name, old, value))
    return changes


@dataclass(frozen=True)
class RunPlan:
    cfg: RunConfig
    step: Step
    key: RunKey
    recipe: recipes.Recipe
    micro: int          # images per device and forward pass
    accum: int          # forward passes per optimizer update
    # Set by `ready`, for the process that trains the run. The dataset as the runner opened and checked it is
    # served to every run of the invocation: step files change only model and recipe, never data or scale.
    source: Source | None = field(default=None, compare=False, repr=False)
    device: torch.device | None = None
    amp: torch.dtype | None = None     # autocast dtype; None: full precision
    updates_per_epoch: int = 0
    fingerprint: str = ""              # what a checkpoint must match to resume this run (config_fingerprint)

    def describe(self, world_size: int = 1) -> dict:
        """The fully resolved run; once `ready`, its training set's size and updates too."""
        out = {"roadmap": self.key.roadmap, "step": self.step.id, "seed": self.key.seed, **to_dict(self.cfg),
               "recipe": dataclasses.asdict(self.recipe),
               "batching": {"global_batch": self.recipe.batch_size, "micro_batch": self.micro,
                            "accum_steps": self.accum, "world_size": world_size}}
        if self.source is not None:
            updates = self.updates_per_epoch
            out["batching"].update(train_images=len(self.source.train), updates_per_epoch=updates,
                                   updates=updates * self.recipe.epochs,
                                   warmup_updates=round(self.recipe.warmup_epochs * updates))
        return out


def ready(plan: RunPlan, source: Source, info: Dist) -> RunPlan:
    """The plan completed for this process to train it on `source`: its device (one that is not there fails
    here) and autocast dtype, its batch checked against the data, its updates per epoch and its fingerprint."""
    device = pick_device(plan.cfg.train.device, info)
    check_fits(source, plan.cfg.scale, plan.micro, info.rank, info.world_size)
    updates = updates_per_epoch(len(source.train), info.world_size, plan.micro, plan.accum)
    if updates < 1:
        raise ConfigError(f"{len(source.train)} training images give no full update of batch "
                          f"{plan.recipe.batch_size}; lower scale.batch_size")
    return dataclasses.replace(plan, source=source, device=device, amp=amp_dtype(plan.cfg.train.amp, device),
                               updates_per_epoch=updates, fingerprint=config_fingerprint(plan.cfg, source.identity()))


def updates_per_epoch(train_images: int, world_size: int, micro: int, accum: int) -> int:
    """Optimizer updates in an epoch: each rank's share of the images in whole micro-batches (the last, partial
    one dropped, as the data serves them), `accum` of them to an update."""
    return train_images // world_size // micro // accum


def micro_batching(global_batch: int, micro_batch: int, world_size: int) -> tuple[int, int]:
    """(per-device batch, accumulation steps) that make up the global batch exactly."""
    per_rank, rest = divmod(global_batch, world_size)
    if rest:
        raise ConfigError(f"the global batch {global_batch} does not split over {world_size} processes")
    accum = max(1, math.ceil(per_rank / micro_batch))
    if per_rank % accum:
        raise ConfigError(f"the global batch {global_batch} over {world_size} processes does not split into "
                          f"micro-batches of at most {micro_batch}; pick sizes that divide")
    return per_rank // accum, accum


def check_image_size(image_size: int, stem_stride: int, stages: int = 4) -> None:
    """Every stage must see whole pixels: a size the total stride does not divide loses rows and
    columns at each downsampling, and differently for steps that downsample differently."""
    need = total_stride(stem_stride, stages)
    if image_size < need or image_size % need:
        raise ConfigError(f"image size {image_size} px is not a multiple of the network's total stride {need} "
                          f"(stem stride {stem_stride} x {need // stem_stride}); pick scale.image_size from "
                          f"{need}, {2 * need}, ... or change scale.stem_stride")


def plan_run(step: Step, scale: str, data: str | None, seed: int, overrides: dict, world_size: int) -> RunPlan:
    cfg = resolve_run_config(step, scale, data, seed, overrides)
    check_config(cfg)
    if cfg.train.log == "tensorboard":
        tblog.check_available()
    check_model(cfg.model)
    check_image_size(cfg.scale.image_size, cfg.model.stem_stride, len(cfg.model.depths))
    recipe = recipes.resolve(cfg.recipe, cfg.scale)
    micro, accum = micro_batching(recipe.batch_size, cfg.scale.micro_batch, world_size)
    return RunPlan(cfg, step, RunKey(step.roadmap, cfg.scale.name, cfg.data.spec, step.id, seed), recipe, micro, accum)


MAX_SEEDS = 1000   # per command: a study takes a few; more is a typo (--seeds 10**12 would not fit in memory)


def seed_list(count: int, chosen: list[int] | None) -> list[int]:
    """The seeds `--seeds N` (0..N-1) or `--seed K ...` name: at least one, each once (a seed given twice is one
    run, which with --jobs would race itself), at most MAX_SEEDS; each seed's range is train.seed's."""
    if chosen is None and count < 1:
        raise ConfigError(f"--seeds must be 1 or more, not {count}")
    asked = count if chosen is None else len(set(chosen))
    if asked > MAX_SEEDS:
        raise ConfigError(f"{asked} seeds in one command; at most {MAX_SEEDS}")
    return list(range(count)) if chosen is None else list(dict.fromkeys(chosen))


def plan_runs(roadmap: str, step_ids: list[str] | None, scale: str, data: str | None, seeds: list[int],
              overrides: dict, world_size: int = 1) -> list[RunPlan]:
    """Every run, seed-major then roadmap order; raises ConfigError on the first mistake. The roadmap's files
    are read once."""
    if "seed" in overrides.get("train", {}):
        raise ConfigError("train.seed is not set through --set: use --seed K ... (or --seeds N for 0..N-1)")
    steps = load_roadmap(roadmap)
    if step_ids:
        wanted = {find_step(steps, roadmap, s).id for s in step_ids}  # unknown ids fail here, with a suggestion
        steps = [s for s in steps if s.id in wanted]
    return [plan_run(step, scale, data, seed, overrides, world_size) for seed in seeds for step in steps]


# Host bytes a parameter takes in training: on the CPU fp32 weights, their gradients and AdamW's two moments; on a
# GPU the network is built on the host first.
HOST_BYTES_PER_PARAM = {"cpu": 16, "cuda": 4}


def check_models_fit(planned: list[RunPlan]) -> None:
    """A network whose training state would not fit in this machine's memory is refused before it is built, as
    data that would not fit is (data.checks): counted on the meta device (shapes only), once a step."""
    for run in {run.step.id: run for run in planned}.values():   # one network a step: its seeds share it
        with torch.device("meta"):
            params = count_params(build_model(run.cfg.model))
        have, need = physical_memory(), HOST_BYTES_PER_PARAM[run.device.type] * params
        if have is not None and need > have:
            raise ConfigError(f"step {run.step.id} has {params / 1e6:,.0f}M parameters, {need / 2**30:,.0f} GiB to "
                              f"train here, more than this machine's {have / 2**30:,.0f} GiB; lower "
                              f"scale.width_mult or model.widths")
