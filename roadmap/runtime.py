"""What one process needs besides the model and data: where it stands among torchrun's processes,
its device and autocast dtype, its random generators, and the provenance a record keeps (git
commit, device name, peak memory, UTC time). Used by the trainer, the runner and the benchmark."""
from __future__ import annotations

import datetime
import functools
import os
import platform
import random
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .config import Device
from .errors import ConfigError
from .fields import coerce


# ---------------------------------------------------------------------------- processes and devices
@dataclass(frozen=True)
class Dist:
    """Where this process stands among torchrun's processes (world 1 without torchrun)."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))


# A collective that waits longer than this ends the run as failed: a process that hangs or dies
# cannot keep the others waiting for ever. Checkpoint writes and evaluation fit well inside it.
DIST_TIMEOUT = datetime.timedelta(minutes=10)


BACKENDS = ("nccl", "gloo")


def init_distributed(device_kind: str) -> Dist:
    """Join torchrun's process group when launched by it: NCCL on GPUs, gloo on CPUs, or the backend
    ROADMAP_DIST_BACKEND names (gloo lets several processes share one GPU, which NCCL may refuse)."""
    info = Dist.from_env()
    if info.world_size > 1 and not dist.is_initialized():
        backend = os.environ.get("ROADMAP_DIST_BACKEND") or ("nccl" if device_kind == "cuda" else "gloo")
        if backend not in BACKENDS:
            raise ConfigError(f"ROADMAP_DIST_BACKEND={backend} is not one of {', '.join(BACKENDS)}")
        if device_kind == "cuda":
            torch.cuda.set_device(gpu_index(info))
        dist.init_process_group(backend, timeout=DIST_TIMEOUT)
    return info


def gpu_index(info: Dist) -> int:
    """This process's GPU: its local rank, wrapped round the GPUs there are (more processes than GPUs share)."""
    return info.local_rank % max(1, torch.cuda.device_count())


def pick_device(setting: str, info: Dist) -> torch.device:
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for, but no CUDA device is visible; use --device cpu")
        return torch.device("cuda", gpu_index(info))
    return torch.device(coerce(setting, Device, "--device"))   # 'cpu', or a mistake said in one line


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[setting]   # a checked choice (TrainConfig)



# ---------------------------------------------------------------------------- random generators
def seed_global_rngs(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)   # timm's Mixup draws from numpy
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global generator's state as tensors, lists and numbers only: a checkpoint that holds it is read
    back with torch.load(weights_only=True), which unpickles no object (and so runs no code)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
             "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    python, numpy = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    np.random.set_state((numpy["kind"], np.array(numpy["keys"], dtype=np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())   # a generator takes its state from the CPU, wherever it was loaded to
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ---------------------------------------------------------------------------- provenance
@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """The commit (and whether the tree was dirty) when first asked: the runner asks at start-up, so a
    long roadmap records the code it runs, not what the tree holds when each run ends."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: process peak RSS


COMMAND_ENV = "ROADMAP_COMMAND"   # run --jobs passes the command the user typed to its workers here


def command_line() -> str:
    """The command the user typed, as records keep it: a worker's own argv is the hidden worker command."""
    return os.environ.get(COMMAND_ENV) or " ".join(sys.argv)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
