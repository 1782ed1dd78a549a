"""Training throughput of roadmap steps beside timm's reference models, under identical settings.

`bench_command` times full training steps (forward, cross-entropy, backward, AdamW step,
zero_grad) on one fixed synthetic batch that already lives on the device, so it measures the
network and not the data pipeline. Every model gets `warmup` untimed steps, then `repeat` timed
windows of `iters` steps; images/s is reported as the median window with min and max beside it.
timm's `resnet50` / `convnext_tiny` (resnet200 roadmap: `resnet200` / `convnext_base`) run in
the same process under the same settings, and the ratios ours/timm for the roadmap's two
endpoints say whether our one-class network costs speed against timm's dedicated classes.
One JSON file per run goes to `<out_dir>/<device-slug>-<date>.json` (benchreport.py).
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import math
import re
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn.functional as F

from . import recipe as recipes
from .config import ConfigError, RecipeConfig, ScaleConfig, Step, TrainConfig, load_roadmap, load_scale, load_step, \
    scaled_model
from .model import count_gflops, count_params
from .plan import check_image_size
from .data.checks import refuse_beyond_memory
from .benchreport import environment, progress_line, write_report
from .results import check_writable
from .steps import build_model
from .runtime import Dist, device_name, pick_device

NUM_CLASSES = 1000
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
# Peak tensor-core FLOP/s from NVIDIA's datasheets, DENSE figures (the datasheets' headline numbers
# assume 2:4 sparsity and are twice these). fp32 runs with TF32 matmuls/convs here, so its peak is
# the TF32 one. The first substring of torch.cuda.get_device_name() that matches wins, so the more
# specific names come first ("NVIDIA H100 80GB HBM3" is the SXM part; GH200 matches "H200", same peak).
PEAK_FLOPS = (
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "fp32": 378e12}),
    ("H100 NVL", {"bf16": 835e12, "fp16": 835e12, "fp32": 417e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "fp32": 494e12}),
    ("H200 NVL", {"bf16": 835e12, "fp16": 835e12, "fp32": 417e12}),
    ("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 494e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12}),
)
TRAIN_FLOPS_PER_FORWARD_MAC = 6  # 2 FLOPs per MAC, and backward costs twice the forward


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    device: torch.device
    batch: int
    image_size: int
    dtype: str
    channels_last: bool
    compile: bool
    repeat: int
    warmup: int
    iters: int
    flush_denormal: bool = False

    @property
    def amp(self) -> torch.dtype | None:
        return DTYPES[self.dtype]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One model to bench: a row id, its kind ('step' | 'timm') and how to build it on the CPU."""
    id: str
    kind: str
    build: Callable[[], torch.nn.Module]


# ---------------------------------------------------------------------------- arguments
def check_numbers(batch: int, image_size: int, repeat: int, warmup: int, iters: int, dtype: str,
                  stem_stride: int = 4) -> None:
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, not {batch}")
    if image_size < 1:   # refused as zero, not taken for the default nor called a bad multiple of the stride
        raise ConfigError(f"--image-size must be at least 1 pixel, not {image_size}")
    check_image_size(image_size, stem_stride)
    # The input batch alone, float32 (--batch 10**12 would otherwise fail in every step's row, exit 0).
    refuse_beyond_memory(batch * 3 * image_size ** 2 * 4, f"a batch of {batch}", image_size,
                         "lower --batch or --image-size")
    if repeat < 1:
        raise ConfigError(f"--repeat must be at least 1 timed window, not {repeat}")
    if iters < 1:
        raise ConfigError(f"--iters must be at least 1 step per window, not {iters}")
    if warmup < 0:
        raise ConfigError(f"--warmup must be 0 or more, not {warmup}")
    check_dtype(dtype)


def check_dtype(dtype: str) -> None:
    """bench and plan take the same --dtype values: DTYPES'."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot work here, or None. Internal torch helpers that have moved are
    given the benefit of the doubt: a compile failure at run time is recorded in the model's row."""
    import torch._dynamo

    try:
        torch._dynamo.eval_frame.check_if_dynamo_supported()
    except RuntimeError as err:
        return str(err)
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return None
        return None if has_triton() else "torch.compile on CUDA needs Triton (pip install triton) and a GPU it supports"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:
        return None
    try:
        get_cpp_compiler()
    except Exception:  # noqa: BLE001 - any failure means inductor finds no C++ compiler
        return "torch.compile on the CPU needs a C++ compiler (install g++ or set CXX)"
    return None


def select_steps(roadmap: str, step_ids: list[str] | None) -> list[Step]:
    steps = load_roadmap(roadmap)
    if not step_ids:
        return steps
    by_id = {step.id: step for step in steps}
    for step_id in step_ids:
        if step_id not in by_id:
            load_step(roadmap, step_id)  # raises the standard "unknown step" ConfigError
    return [by_id[step_id] for step_id in dict.fromkeys(step_ids)]


# ---------------------------------------------------------------------------- device facts
def device_slug(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'; every CPU is 'cpu'."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def peak_flops(device_name: str, dtype: str) -> float | None:
    """Dense datasheet peak for this GPU and dtype; None for CPUs and GPUs not in PEAK_FLOPS."""
    for key, peaks in PEAK_FLOPS:
        if key in device_name:
            return peaks[dtype]
    return None


def configure_backends(settings: BenchSettings) -> None:
    """The fast CUDA path: cuDNN autotuning, TF32 for fp32 matmuls and convs; on a CPU, denormals as runs train."""
    if settings.device.type != "cuda":
        torch.set_flush_denormal(settings.flush_denormal)
        return
    torch.backends.cudnn.benchmark = True
    if settings.dtype == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# ---------------------------------------------------------------------------- one model
def make_train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: BenchSettings,
                    images: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    """One full training step; nothing in it waits for the device (no .item(), no sync)."""
    scaler = torch.amp.GradScaler(settings.device.type, enabled=settings.amp == torch.float16)
    autocast = (lambda: torch.autocast(settings.device.type, dtype=settings.amp)) if settings.amp else nullcontext

    def step() -> None:
        with autocast():
            loss = F.cross_entropy(net(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return step


def time_windows(step: Callable[[], None], settings: BenchSettings) -> list[float]:
    """Seconds of each of `repeat` windows of `iters` steps, after `warmup` untimed steps."""
    for _ in range(settings.warmup):
        step()
    if settings.device.type != "cuda":
        seconds = []
        for _ in range(settings.repeat):
            start = time.perf_counter()
            for _ in range(settings.iters):
                step()
            seconds.append(time.perf_counter() - start)
        return seconds
    torch.cuda.synchronize(settings.device)
    events = []
    for _ in range(settings.repeat):
        # Windows are recorded back to back and read after one sync at the last window's end, so
        # the host never drains the queue; each window is stream time between its two events.
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(settings.iters):
            step()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize(settings.device)
    return [start.elapsed_time(end) / 1000 for start, end in events]


def training_step(model: torch.nn.Module, settings: BenchSettings) -> Callable[[], None]:
    """`model` on the device in the settings' memory format, with AdamW, a fixed synthetic batch and (if
    asked) torch.compile: one call is one full training step."""
    device = settings.device
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = recipes.make_optimizer(model, recipes.resolve(RecipeConfig("modern"), load_scale("paper")),
                                       fused=device.type == "cuda")
    net = torch.compile(model) if settings.compile else model
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(settings.batch, 3, settings.image_size, settings.image_size, generator=generator)
    images = images.to(device).contiguous(memory_format=memory_format)
    targets = torch.randint(0, NUM_CLASSES, (settings.batch,), generator=generator).to(device)
    return make_train_step(net, optimizer, settings, images, targets)


def measure(model: torch.nn.Module, settings: BenchSettings) -> tuple[list[float], float | None]:
    """(window seconds, peak device memory in MB) of training `model` on the device."""
    if settings.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(settings.device)
    seconds = time_windows(training_step(model, settings), settings)
    peak_mb = torch.cuda.max_memory_allocated(settings.device) / 2**20 if settings.device.type == "cuda" else None
    return seconds, peak_mb


def interleaved_ratio(ours: Candidate, reference: Candidate, settings: BenchSettings) -> tuple[float, float]:
    """Median images/s of ours over the reference's, their windows taken in turn (ours, reference, ours, ...):
    a machine that speeds up or slows down while the bench runs moves both alike, which timing one model
    after the other (the rows) does not. Measured in both orders, (ours built and timed first, the
    reference first): on a CPU the model that goes first can run some percent slower, two builds of one
    model too, so one order alone would tilt the ratio."""
    ours_first = _in_turn(ours, reference, settings)
    free_memory(settings)   # the first order's models go before the second order builds its own
    return ours_first, 1 / _in_turn(reference, ours, settings)


def _in_turn(first: Candidate, second: Candidate, settings: BenchSettings) -> float:
    """Median images/s of `first` over `second`, built in that order, their windows taken in turn."""
    torch.manual_seed(0)
    steps = [training_step(candidate.build(), settings) for candidate in (first, second)]
    one_window = dataclasses.replace(settings, repeat=1, warmup=0)
    for step in steps:
        time_windows(step, dataclasses.replace(settings, repeat=1, iters=max(1, settings.warmup)))
    seconds: tuple[list, list] = ([], [])
    for _ in range(settings.repeat):
        for times, step in zip(seconds, steps):
            times.extend(time_windows(step, one_window))
    return statistics.median(seconds[1]) / statistics.median(seconds[0])


def interleaved_ratios(cands: list[Candidate], rows: list[dict], roadmap: str, settings: BenchSettings) -> dict:
    """{"ratios_interleaved": {ratio key: ours/timm in turn, the geometric mean of both orders},
    "ratios_interleaved_orders": {ratio key: [ours first, timm first]}} for each endpoint pair whose two rows
    both have a number."""
    by_id, measured = {c.id: c for c in cands}, {row["id"] for row in rows if row["images_per_s_median"]}
    out: dict[str, dict] = {"ratios_interleaved": {}, "ratios_interleaved_orders": {}}
    for key, (ours, reference) in ratio_pairs(roadmap).items():
        if ours in measured and reference in measured:
            try:
                orders = interleaved_ratio(by_id[ours], by_id[reference], settings)
            except Exception as err:  # noqa: BLE001 - the rows stand; this ratio is left out, said why
                print(f"bench: {key} in turn: {error_text(err)}", file=sys.stderr)
            else:
                out["ratios_interleaved"][key] = round(math.sqrt(orders[0] * orders[1]), 4)
                out["ratios_interleaved_orders"][key] = [round(value, 4) for value in orders]
            free_memory(settings)
    return out


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(err).lower()


def free_memory(settings: BenchSettings) -> None:
    gc.collect()
    if settings.compile:
        import torch._dynamo

        torch._dynamo.reset()  # every step shares RoadmapNet.forward: stale graphs would hit the recompile limit
    if settings.device.type == "cuda":
        torch.cuda.empty_cache()


def bench_one(candidate: Candidate, settings: BenchSettings, peak: float | None) -> dict:
    """One row: size at the bench image size, then throughput, or the error that stopped it."""
    row = {"id": candidate.id, "kind": candidate.kind, "params": None, "gflops": None,
           "images_per_s_median": None, "images_per_s_min": None, "images_per_s_max": None,
           "step_ms_median": None, "peak_mem_mb": None, "mfu": None, "error": None}
    try:
        fill_row(row, candidate, settings, peak)
    except Exception as err:  # noqa: BLE001 - one failing model must not lose the others' numbers
        row["error"] = error_text(err)
    free_memory(settings)  # after the except block, so no traceback holds the model any more
    return row


def fill_row(row: dict, candidate: Candidate, settings: BenchSettings, peak: float | None) -> None:
    """Build, count and time one model; everything it allocates dies with this frame."""
    torch.manual_seed(0)
    model = candidate.build()
    row["params"] = count_params(model)
    row["gflops"] = round(count_gflops(model, settings.image_size), 4)
    seconds, peak_mb = measure(model, settings)
    row.update(throughput(seconds, row["gflops"], settings, peak))
    row["peak_mem_mb"] = None if peak_mb is None else round(peak_mb, 1)


def error_text(err: BaseException) -> str:
    if is_out_of_memory(err):
        return "out of memory"
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first_line}".rstrip(": ")


def throughput(seconds: list[float], gmacs: float, settings: BenchSettings, peak: float | None) -> dict:
    rates = [settings.batch * settings.iters / s for s in seconds]
    median = statistics.median(rates)
    train_flops_per_image = TRAIN_FLOPS_PER_FORWARD_MAC * gmacs * 1e9
    return {
        "images_per_s_median": round(median, 2),
        "images_per_s_min": round(min(rates), 2),
        "images_per_s_max": round(max(rates), 2),
        "step_ms_median": round(1000 * statistics.median(seconds) / settings.iters, 3),
        "mfu": None if peak is None else round(median * train_flops_per_image / peak, 4),
    }


# ---------------------------------------------------------------------------- the run
def candidates(roadmap: str, steps: list[Step], reference: bool, scale: ScaleConfig | None = None) -> list[Candidate]:
    """Our selected steps (at a scale's widths, depths and stem, if given), then timm's models equal to
    the roadmap's endpoints (with their stochastic depth; at the paper's size only)."""
    def model(step):
        return scaled_model(step.model, scale) if scale else step.model
    out = [Candidate(step.id, "step", lambda step=step: build_model(model(step), NUM_CLASSES)) for step in steps]
    if reference and scale is None:
        for endpoint, name in endpoints(roadmap):
            out.append(Candidate(f"timm/{name}", "timm", lambda name=name, dp=endpoint.model.drop_path:
                                 timm.create_model(name, num_classes=NUM_CLASSES, drop_path_rate=dp)))
    return out


def endpoints(roadmap: str) -> list[tuple[Step, str]]:
    """(step, timm model name) for every step whose file says which library model it equals
    (torchvision's ResNets have timm twins of the same name)."""
    return [(step, step.equals.split("/", 1)[1]) for step in load_roadmap(roadmap) if step.equals]


def ratio_pairs(roadmap: str) -> dict[str, tuple[str, str]]:
    """{ratio key: (our step id, timm row id)} for the roadmap's endpoints."""
    return {("convnext_vs_timm" if name.startswith("convnext") else f"{step.id}_vs_timm"): (step.id, f"timm/{name}")
            for step, name in endpoints(roadmap)}


def ratios(rows: list[dict], pairs: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Median images/s, ours / timm, for each endpoint whose two rows both have a number."""
    rate = {row["id"]: row["images_per_s_median"] for row in rows if row["images_per_s_median"]}
    return {key: round(rate[ours] / rate[ref], 4) for key, (ours, ref) in pairs.items() if ours in rate and ref in rate}


def settings_record(settings: BenchSettings, roadmap: str, steps: list[Step], reference: bool) -> dict:
    fields = ("batch", "image_size", "dtype", "channels_last", "compile", "repeat", "warmup", "iters", "flush_denormal")
    return {**{name: getattr(settings, name) for name in fields}, "roadmap": roadmap,
            "device": settings.device.type, "threads": torch.get_num_threads(), "steps": [step.id for step in steps],
            "reference": reference}


def ratio_record(rows: list[dict], roadmap: str) -> dict:
    pairs = ratio_pairs(roadmap)
    return {"ratios": ratios(rows, pairs), "ratio_pairs": {key: list(pair) for key, pair in pairs.items()}}


def bench_command(roadmap: str, step_ids: list[str] | None, batch: int, image_size: int, dtype: str,
                  channels_last: bool | None, compile: bool, repeat: int, warmup: int, iters: int, out_dir: Path,
                  device: str = "auto", reference: bool = True, scale_name: str | None = None,
                  flush_denormal: bool | None = None) -> Path:
    """Bench the selected steps (default: all) and timm's references; write the JSON, print the table.

    With a scale, the steps are built at that scale (what `runner.py plan` needs to time its runs).
    Returns the JSON path. Bad arguments raise ConfigError before any model is built."""
    scale = load_scale(scale_name) if scale_name else None
    check_numbers(batch, image_size, repeat, warmup, iters, dtype, scale.stem_stride if scale and scale.stem_stride else 4)
    target = pick_device(device, Dist())
    if compile and (problem := compile_problem(target)):
        raise ConfigError(f"--compile cannot be used here: {problem}")
    steps = select_steps(roadmap, step_ids)
    check_writable(Path(out_dir), "--out")   # last of the checks, and before minutes of benchmarking
    settings = BenchSettings(target, batch, image_size, dtype,
                             TrainConfig().channels_last if channels_last is None else channels_last,
                             compile, repeat, warmup, iters,
                             TrainConfig().flush_denormal if flush_denormal is None else flush_denormal)
    configure_backends(settings)
    name = device_name(target)
    peak = peak_flops(name, dtype) if target.type == "cuda" else None
    rows, cands = [], candidates(roadmap, steps, reference, scale)
    for candidate in cands:
        rows.append(bench_one(candidate, settings, peak))
        print(progress_line(rows[-1]), file=sys.stderr, flush=True)
    report = {"device": name, **environment(),
              "settings": {**settings_record(settings, roadmap, steps, reference), "scale": scale_name},
              "peak_flops": peak, "rows": rows, **ratio_record(rows, roadmap),
              **interleaved_ratios(cands, rows, roadmap, settings),
              "date": datetime.date.today().isoformat()}
    return write_report(report, Path(out_dir), f"{device_slug(target)}-{report['date']}")
