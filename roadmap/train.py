"""One training run: loop, eval, AMP, channels_last, compile, DDP, checkpoint and resume.

`train_run` trains one planned run (plan.py: device, dtype, batching and updates are decided there, not
here) and writes its `Record`: complete, diverged or failed. Only rank 0 logs and writes. The loop keeps the loss on the device and looks at it every `SYNC_EVERY`
updates, so the GPU is never stalled by a host sync per step, yet a NaN/inf loss stops the run
within a few updates with the exact update recorded.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import pickle
import platform
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from . import recipe as recipes
from .config import to_dict
from .data import build_data, derive_seed
from .errors import UserError
from .model import count_gflops, count_params
from .perclass import confusion_counts, record_confusion
from .plan import RunPlan
from .results import COMPLETE, DIVERGED, FAILED, SCHEMA_VERSION, Record, atomic_write_bytes, atomic_write_text, default_tensorboard
from .runtime import Dist, command_line, device_name, git_commit, peak_memory_mb, rng_state, seed_global_rngs, \
    set_rng_state, utc_now
from .steps import build_model
from .tblog import Board
from .weights import fit_state, keep_weights

SYNC_EVERY = 10  # updates between looks at the loss on the host


class Diverged(RuntimeError):
    def __init__(self, epoch: int, update: int, last_finite_loss: float | None):
        super().__init__(f"loss became NaN/inf at epoch {epoch}, update {update}")
        self.info = {"epoch": epoch, "step": update, "last_finite_loss": last_finite_loss}


MODEL_STREAM, TRAIN_STREAM = 1, 2   # derive_seed(seed, stream): the random streams of one run


# ---------------------------------------------------------------------------- the run
@dataclass
class RunState:
    """What a checkpoint holds besides the weights: enough to continue bit-for-bit."""
    epoch: int = 0                 # epochs completed
    update: int = 0                # optimizer updates completed
    history: list = dataclasses.field(default_factory=list)
    train_s: float = 0.0           # seconds spent training (for images/s)
    images: int = 0                # training images seen (all ranks)
    wall_s: float = 0.0            # wall time of earlier sessions of this run
    started: str = ""              # when the run's first session began (UTC, ISO 8601)


class Run:
    """One run's moving parts, wired from its plan (made `ready` for this process: plan.py)."""

    def __init__(self, plan: RunPlan, info: Dist, progress: bool):
        cfg = plan.cfg
        self.cfg, self.step, self.info = cfg, plan.step, info
        self.progress = bars_shown(progress, info)
        self.device, self.amp = plan.device, plan.amp
        self.recipe, self.micro, self.accum = plan.recipe, plan.micro, plan.accum
        self.updates_per_epoch, self.fingerprint = plan.updates_per_epoch, plan.fingerprint
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        self.flush_denormal = cfg.train.flush_denormal and self.device.type == "cpu"
        torch.set_flush_denormal(self.flush_denormal)   # this run's, either way: never a run before it's
        self.data = build_data(cfg.data, cfg.scale, batch_size=self.micro, recipe=self.recipe, device=self.device,
                               rank=info.rank, world_size=info.world_size, seed=cfg.train.seed, source=plan.source)
        # Each random stream has a seed of its own, so that nothing built before it (or a refactor of
        # that) can move it: the weights are the same on every rank, the training draws (Mixup,
        # drop path) differ by rank, the data order and augmentation are seeded per batch (data/augment.py).
        torch.manual_seed(derive_seed(cfg.train.seed, MODEL_STREAM))
        self.model = build_model(cfg.model, self.data.num_classes)
        self.init_from = None           # where the starting weights came from (fine-tuning), for the record
        if cfg.train.init_from:
            state, self.init_from = fit_state(Path(cfg.train.init_from), self.model, plan.step, cfg.model)
            self.model.load_state_dict(state, strict=False)   # strict but for a re-initialised head
        self.params = count_params(self.model)
        self.gflops = count_gflops(self.model, cfg.scale.image_size)
        self.model = self.model.to(self.device)
        seed_global_rngs(derive_seed(cfg.train.seed, TRAIN_STREAM, info.rank))
        self.channels_last = cfg.train.channels_last
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = recipes.make_optimizer(self.model, self.recipe, fused=self.device.type == "cuda")
        self.scheduler = recipes.make_scheduler(self.optimizer, self.recipe, self.updates_per_epoch)
        self.mixup = recipes.make_mixup(self.recipe, self.data.num_classes)
        self.loss_fn = recipes.make_loss(self.recipe, self.mixup)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        # Compile the bare model, then wrap it in DDP (nanoGPT's order): DDP's no_sync stays reachable.
        self.net = torch.compile(self.model) if cfg.train.compile else self.model
        self.ddp = None
        if info.world_size > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.net = self.ddp
        self.state = RunState()
        self.last_top1 = "-"
        self.confusion: torch.Tensor | None = None   # the last evaluation's, for the record
        self.board: Board | None = None   # TensorBoard (train.log=tensorboard, rank 0), opened by train_run

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: Path) -> None:
        """One plain dict of tensors, lists and numbers (rng_state's too): read_checkpoint unpickles no object."""
        if not self.info.is_main:
            return
        buffer = io.BytesIO()
        torch.save({"fingerprint": self.fingerprint,
                    "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                    "state": dataclasses.asdict(self.state), "rng": rng_state()}, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path: Path) -> bool:
        """Continue from this run's checkpoint at `path`; False, with one warning naming the file, for anything
        else there (another config's, an older runner's, a damaged or a planted file): the run starts over.

        Raises DamagedCheckpoint for a file of this config that does not restore it: it may have changed the
        run half-way, so the caller starts over from a new Run (train_run does)."""
        ckpt = read_checkpoint(path, self.device, self.step.id)
        if ckpt is None:
            return False
        if ckpt.get("fingerprint") != self.fingerprint:
            # Saved under another config (or by a runner without fingerprints): resuming it would mix two runs.
            warn_checkpoint(path, f"was saved under another config; starting {self.step.id} over")
            return False
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.state = RunState(**ckpt["state"])
            set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as err:
            raise DamagedCheckpoint(f"does not restore this run ({type(err).__name__}); starting {self.step.id} "
                                    "over") from None
        return True

    # -------------------------------------------------------------- one epoch
    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        # The batch in the model's layout: one copy of the float batch, 0.3% of a CPU step at the cpu scale
        # (normalising NHWC uint8 in place of it costs more than this copy).
        return images.contiguous(memory_format=self.memory_format)

    def train_epoch(self, epoch: int) -> dict:
        self.net.train()
        losses = torch.zeros(self.updates_per_epoch, device=self.device)
        batches = iter(self.data.train_batches(epoch))
        bar = tqdm(total=self.updates_per_epoch, desc=f"{self.step.id} {epoch + 1}/{self.recipe.epochs}",
                   disable=not self.progress, leave=False, unit="upd", dynamic_ncols=True)
        start, data_s, last_finite, checked = time.perf_counter(), 0.0, None, 0
        lrs = []   # the lr of each update, a host float: reading it costs no device sync
        for i in range(self.updates_per_epoch):
            loss_sum = torch.zeros((), device=self.device)
            for micro_step in range(self.accum):
                t0 = time.perf_counter()
                images, targets = next(batches)
                data_s += time.perf_counter() - t0
                if self.mixup is not None:
                    images, targets = self.mixup(images, targets)
                sync = micro_step == self.accum - 1 or self.ddp is None
                with (nullcontext() if sync else self.ddp.no_sync()), self.autocast():
                    loss = self.loss_fn(self.net(self.prepare(images)), targets) / self.accum
                self.scaler.scale(loss).backward()
                loss_sum += loss.detach()
            lrs.append(self.optimizer.param_groups[-1]["lr"])   # the lr this update steps with
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.update += 1
            self.scheduler.step_update(self.state.update)
            losses[i] = loss_sum
            if (i + 1) % SYNC_EVERY == 0 or i + 1 == self.updates_per_epoch:
                values = self._read_losses(losses[checked: i + 1])
                if self.board:  # per-update scalars where the losses are read anyway: no device sync of their own
                    self.board.updates(self.state.update - len(values) + 1, values, lrs[checked: i + 1])
                last_finite = self._check_finite(values, epoch, last_finite)
                checked = i + 1
                elapsed = time.perf_counter() - start
                bar.update((i + 1) - bar.n)
                # Accuracy: the last eval's top-1 (train accuracy means little under Mixup/CutMix).
                bar.set_postfix(loss=f"{last_finite:.3f}", top1=self.last_top1,
                                img_s=f"{(i + 1) * self.images_per_update / elapsed:.0f}")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        epoch_s = time.perf_counter() - start
        images = self.updates_per_epoch * self.images_per_update
        self.state.train_s += epoch_s
        self.state.images += images
        return {"train_loss": float(losses.mean()), "lr": self.optimizer.param_groups[-1]["lr"],
                "images_per_s": images / epoch_s, "epoch_s": epoch_s, "data_s": data_s}

    @property
    def images_per_update(self) -> int:
        return self.micro * self.accum * self.info.world_size

    def _read_losses(self, losses: torch.Tensor) -> list[float]:
        """The last updates' losses on the host, averaged over the ranks."""
        if self.info.world_size > 1:
            # Every rank must see a NaN on any rank, or the others would wait for it forever.
            losses = losses.clone()
            dist.all_reduce(losses)
            losses /= self.info.world_size
        return losses.tolist()                                      # the one host sync per SYNC_EVERY updates

    def _check_finite(self, values: list[float], epoch: int, last_finite: float | None) -> float | None:
        for i, value in enumerate(values):
            if not math.isfinite(value):
                first_bad_update = self.state.update - len(values) + i + 1
                raise Diverged(epoch + 1, first_bad_update, values[i - 1] if i else last_finite)
        return values[-1] if values else last_finite

    def evaluate(self) -> dict:
        # The bare model, not the DDP wrapper: ranks may hold different numbers of eval batches,
        # and DDP's per-forward buffer broadcast would then wait on a rank that has finished.
        totals, confusion = eval_totals(self.model, self.data.eval_batches(), self.device, self.data.num_classes,
                                        self.autocast, self.prepare)
        if self.info.world_size > 1:
            dist.all_reduce(totals)
            dist.all_reduce(confusion)
        stats = eval_stats(totals)
        self.confusion = confusion
        self.last_top1 = f"{stats['eval_top1']:.1f}"
        return stats


@torch.no_grad()
def eval_totals(model: torch.nn.Module, batches, device: torch.device, num_classes: int, autocast=nullcontext,
                prepare=lambda images: images) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (loss, top-1 hits, top-5 hits, count) of `model` in eval mode over `batches` (this rank's), and
    their confusion matrix (perclass.py)."""
    model.eval()
    totals = torch.zeros(4, device=device, dtype=torch.float64)
    confusion = torch.zeros(num_classes, num_classes, device=device, dtype=torch.int64)
    for images, targets in batches:
        with autocast():
            logits = model(prepare(images)).float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5 == targets[:, None]
        totals += torch.stack([F.cross_entropy(logits, targets, reduction="sum").double(),
                               hits[:, 0].sum().double(), hits.any(1).sum().double(),
                               torch.tensor(float(len(targets)), device=device, dtype=torch.float64)])
        confusion += confusion_counts(targets, top5[:, 0], num_classes)
    return totals, confusion


def eval_stats(totals: torch.Tensor) -> dict:
    loss, top1, top5, count = totals.tolist()
    return {"eval_loss": loss / count, "eval_top1": 100 * top1 / count, "eval_top5": 100 * top5 / count}


# ---------------------------------------------------------------------------- reading checkpoints
class DamagedCheckpoint(Exception):
    """A checkpoint of this run's config whose contents do not restore it; the message ends its warning."""


def read_checkpoint(path: Path, device: torch.device, step_id: str) -> dict | None:
    """The dict at `path`, read as tensors and plain data only: torch.load(weights_only=True) unpickles no
    object, so a file planted in a shared checkpoints folder runs no code. None when there is none, or (with
    one warning that names the file) when it holds anything else: the run starts over."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        return warn_checkpoint(path, f"holds pickled objects, which are never loaded (they could run code: an "
                                     f"older runner's checkpoint, or a planted file); starting {step_id} over")
    except Exception as err:  # noqa: BLE001 - a broken disk, a cut file: whatever it is, start over
        return warn_checkpoint(path, f"cannot be read ({type(err).__name__}); starting {step_id} over")
    if not isinstance(ckpt, dict):
        return warn_checkpoint(path, f"is not a checkpoint (a {type(ckpt).__name__}); starting {step_id} over")
    return ckpt


def warn_checkpoint(path: Path, why: str) -> None:
    print(f"warning: checkpoint {path} {why}", file=sys.stderr)


def bars_shown(progress: bool, info: Dist) -> bool:
    """Progress bars on a terminal, from rank 0; elsewhere (nohup, Slurm) a line per epoch instead."""
    return progress and info.is_main and sys.stderr.isatty()


# ---------------------------------------------------------------------------- records
def new_record(plan: RunPlan, status: str, **outcome) -> Record:
    """The record of `plan`'s run: which run, its step and resolved config, the code and command that ran it,
    and `outcome`."""
    step, key = plan.step, plan.key
    return Record(
        schema=SCHEMA_VERSION, status=status, roadmap=key.roadmap, scale=key.scale, data=key.data, step=step.id,
        seed=key.seed, order=step.order, title=step.title, adopted=step.adopted, base=step.base,
        paper=dataclasses.asdict(step.paper), config=to_dict(plan.cfg), recipe=dataclasses.asdict(plan.recipe),
        command=command_line(), torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
        git_commit=git_commit(), **outcome)


def epoch_line(step_id: str, seed: int, stats: dict, epochs: int, wall_s: float) -> str:
    """'gelu seed 0 epoch 2/3: loss 0.812, top-1 88.10%, lr 1.2e-03, 1,402 img/s, ETA 1.1 min'."""
    top1 = f", top-1 {stats['eval_top1']:.2f}%" if "eval_top1" in stats else ""
    eta = wall_s / stats["epoch"] * (epochs - stats["epoch"])
    return (f"{step_id} seed {seed} epoch {stats['epoch']}/{epochs}: loss {stats['train_loss']:.3f}{top1}, "
            f"lr {stats['lr']:.1e}, {stats['images_per_s']:,.0f} img/s, ETA {eta / 60:.1f} min")


def write_epoch_log(path: Path, history: list[dict]) -> None:
    """timm-style summary.csv: one row per epoch, rewritten atomically."""
    out = io.StringIO()
    columns = list(dict.fromkeys(key for row in history for key in row))  # eval columns may start later
    writer = csv.DictWriter(out, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, out.getvalue())


def resumed_run(plan: RunPlan, info: Dist, progress: bool, ckpt_path: Path) -> Run:
    """The run, continued from its checkpoint when it has a usable one, else fresh."""
    run = Run(plan, info, progress)
    try:
        if run.load_checkpoint(ckpt_path) and info.is_main:
            print(f"resuming {plan.step.id} seed {plan.key.seed} after epoch {run.state.epoch}", file=sys.stderr)
        return run
    except DamagedCheckpoint as err:
        warn_checkpoint(ckpt_path, str(err))
        return Run(plan, info, progress)   # nothing half-restored: every stream seeded anew


def train_run(plan: RunPlan, results: Path, checkpoints: Path, weights: Path, info: Dist,
              progress: bool = True) -> Record:
    """Train one run to its end and write its record (rank 0): complete (its final weights kept), diverged, or
    failed for any crash, which must not stop the roadmap (timm's bulk_runner). User mistakes and interrupts
    go up, and leave no record."""
    start = time.perf_counter()
    try:
        record = train(plan, results, checkpoints, weights, info, progress)
    except Diverged as err:
        record = failure_record(plan, DIVERGED, str(err), err.info, time.perf_counter() - start)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - recorded as failed
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        traceback.print_exc(file=sys.stderr)
        if info.world_size > 1:
            # The other processes wait in a collective this one will never join: leaving the group ends
            # it for them at once (gloo; NCCL after the group's timeout), and rank 0 records the failure.
            dist.destroy_process_group()
        record = failure_record(plan, FAILED, reason, None, time.perf_counter() - start)
    if info.is_main:
        record.write(results)
    return record


def train(plan: RunPlan, results: Path, checkpoints: Path, weights: Path, info: Dist, progress: bool) -> Record:
    """Train one run to the end (resuming from its checkpoint), keep its final weights and return its
    complete record. Raises Diverged on a NaN/inf loss."""
    session_start = time.perf_counter()
    cfg, step, key = plan.cfg, plan.step, plan.key
    ckpt_path = key.checkpoint_path(checkpoints)
    run = resumed_run(plan, info, progress, ckpt_path)
    run.state.started = run.state.started or utc_now()
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    if cfg.train.log == "tensorboard" and info.is_main:
        run.board = Board(key.tensorboard_dir(default_tensorboard(results)), first_update=run.state.update + 1)
    try:
        for epoch in range(run.state.epoch, run.recipe.epochs):
            stats = {"epoch": epoch + 1, **run.train_epoch(epoch)}
            if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == run.recipe.epochs:
                stats.update(run.evaluate())
            run.state.history.append(stats)
            run.state.epoch = epoch + 1
            run.state.wall_s += time.perf_counter() - session_start
            session_start = time.perf_counter()
            if info.is_main:
                if run.board:
                    run.board.epoch(run.state.update, stats)
                # The config beside the first epoch's log, not before: a run refused while it is being set up
                # leaves nothing behind.
                atomic_write_text(key.config_path(results), yaml.safe_dump(to_dict(cfg), sort_keys=False))
                write_epoch_log(key.log_path(results), run.state.history)
                run.save_checkpoint(ckpt_path)
                if not run.progress:  # batch jobs (nohup, Slurm): one line per epoch instead of a bar
                    print(epoch_line(step.id, key.seed, stats, run.recipe.epochs, run.state.wall_s), file=sys.stderr,
                          flush=True)
    finally:
        if run.board:
            run.board.close()
    last = run.state.history[-1]
    kept = keep_weights(weights, key, run.model) if info.is_main else {}   # before the record that names them
    data_share = sum(h["data_s"] for h in run.state.history) / max(run.state.train_s, 1e-9)
    return new_record(
        plan, COMPLETE, reason=None, divergence=None, top1=last["eval_top1"], top5=last["eval_top5"],
        epochs=run.state.history, params=run.params, gflops=run.gflops, image_size=cfg.scale.image_size,
        **run.data.identity, images_per_s=run.state.images / max(run.state.train_s, 1e-9),
        data_time_share=data_share, input_bound=data_share > 0.5,
        wall_s=run.state.wall_s + time.perf_counter() - session_start,
        peak_mem_mb=peak_memory_mb(plan.device), device=device_name(plan.device), world_size=info.world_size,
        micro_batch=plan.micro, accum_steps=plan.accum, amp=str(plan.amp).replace("torch.", "") if plan.amp else "off",
        channels_last=cfg.train.channels_last, threads=torch.get_num_threads(), compile=cfg.train.compile,
        flush_denormal=run.flush_denormal,
        started=run.state.started, finished=utc_now(), classes=list(run.data.classes),
        confusion=record_confusion(run.confusion), init_from=run.init_from, **kept)


def failure_record(plan: RunPlan, status: str, reason: str, divergence: dict | None = None,
                   wall_s: float | None = None) -> Record:
    return new_record(plan, status, reason=reason, divergence=divergence, top1=None, top5=None, epochs=[],
                      wall_s=wall_s)
