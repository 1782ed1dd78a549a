"""`make gpu-check`: everything that needs a GPU, in one command that fits a few minutes of a lent GPU.

Each part is a `runner.py` command (or torchrun of it) with a time limit of its own; its output goes to
a log beside the summary, and a part that fails or runs out of time does not stop the others. What it
writes: bench records under results/bench/ (as `bench --out results/bench` writes them), and under
results/gpu/<device>-<date>/ the records of the short roadmap runs, one log per part and the summary
(summary.json, summary.md: device, torch and CUDA versions, the command, each part's status and time,
the in-memory data path's share of training time). Exits 1 if any part failed, 2 without CUDA.

    python -m roadmap.gpucheck [--dry-run] [--cifar10 DIR | --cifar10-tar FILE] [--out results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .results import FAILED, REPO_ROOT

RUNNER = str(REPO_ROOT / "runner.py")
CIFAR10_TARS = (REPO_ROOT / "data" / "cifar10-jpg.tar.gz", REPO_ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz")
# The roadmap's short runs: every step at the `small` scale (full width, 32 px, batch 512) for one epoch
# on 5,120 CIFAR-10 images (10 updates), enough to exercise each network, the GPU data path and records.
SHORT_RUN = ["--scale", "small", "--set", "scale.epochs=1", "--set", "scale.classic_epochs=1",
             "--set", "scale.train_subset=5120", "--no-progress"]
# Fewer timed steps than bench's CUDA defaults, so 20 models (eager) and 3 (compiled) fit their limits.
BENCH_WINDOWS = ["--repeat", "3", "--iters", "10", "--warmup", "5"]
# One rank raises in its second epoch: every rank must end, and rank 0 alone records the run failed.
FAILING_RANK = """
import sys
sys.path.insert(0, {root!r})
from roadmap import cli, train

original = train.Run.train_epoch


def train_epoch(self, epoch):
    if epoch == 1 and self.info.rank == 1:
        raise RuntimeError("planted failure on rank 1 (gpu-check)")
    return original(self, epoch)


train.Run.train_epoch = train_epoch
sys.exit(cli.main())
"""


@dataclass
class Part:
    name: str
    what: str
    command: list[str]
    timeout_s: int
    env: dict = field(default_factory=dict)
    expect_failure: bool = False   # the planted failure: a non-zero exit is the pass
    status: str = "not run"
    seconds: float = 0.0
    note: str = ""


def parts(work: Path, out: Path, cifar10: str, backend: str, device: str) -> list[Part]:
    python = sys.executable
    torchrun = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp_run = ["run", "--step", "separate_downsampling", "--device", "cuda", "--data", "synthetic",
               "--scale", "small", "--set", "scale.epochs=2", "--set", "data.synthetic_size=4096", "--no-progress",
               "--checkpoints", str(work / "checkpoints")]
    backend_env = {"ROADMAP_DIST_BACKEND": backend}
    return [
        Part("bench-eager", "every step and timm's resnet50/convnext_tiny, 224 px, bf16, channels_last, eager",
             [python, RUNNER, "bench", "--device", "cuda", *BENCH_WINDOWS, "--out", str(out / "bench")], 150),
        Part("bench-compile", "ConvNeXt-T and timm's twins under torch.compile, 224 px, bf16, channels_last",
             [python, RUNNER, "bench", "--device", "cuda", "--compile", "--steps", "separate_downsampling",
              *BENCH_WINDOWS, "--out", str(out / "bench")], 150),
        Part("roadmap-small", "every step, a short run on CIFAR-10 at the small scale, a record each",
             [python, RUNNER, "run", "--all", "--device", "cuda", "--data", f"imagefolder:{cifar10}", *SHORT_RUN,
              "--results", str(gpu_folder(out, device) / "records"), "--checkpoints", str(work / "checkpoints")], 120),
        Part("ddp-2proc", f"2 processes on one GPU ({backend}), one run",
             [*torchrun, RUNNER, *ddp_run, "--results", str(work / "ddp")], 60, backend_env),
        Part("ddp-failing-rank", f"2 processes on one GPU ({backend}), rank 1 raises: both end, one failed record",
             [*torchrun, str(work / "failing_rank.py"), *ddp_run, "--results", str(work / "ddp-fail")], 60,
             backend_env, expect_failure=True),
    ]


def gpu_folder(out: Path, device: str) -> Path:
    """results/gpu/<device slug>-<date>: 'NVIDIA H200' -> nvidia-h200-2026-12-02."""
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    return out / "gpu" / f"{slug}-{datetime.date.today().isoformat()}"


def find_cifar10(folder: str | None, tar: str | None, work: Path) -> str:
    """An unpacked CIFAR-10 image folder (train/, test/): the one given, else the tarball unpacked under `work`
    into a folder named cifar10-jpg (its results slug)."""
    if folder:
        return folder
    candidates = [Path(tar)] if tar else list(CIFAR10_TARS)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise SystemExit(f"gpu-check: no CIFAR-10 tarball at {', '.join(map(str, candidates))}; "
                         f"give --cifar10 DIR or --cifar10-tar FILE")
    target = work / "cifar10-jpg"
    with tarfile.open(found) as archive:
        archive.extractall(target, filter="data")
    return str(target)


def run_part(part: Part, log_dir: Path) -> None:
    start = time.perf_counter()
    log = log_dir / f"{part.name}.log"
    with log.open("w") as out:
        out.write("$ " + " ".join(part.command) + "\n")
        out.flush()
        try:
            proc = subprocess.run(part.command, stdout=out, stderr=subprocess.STDOUT, timeout=part.timeout_s,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", **part.env}, cwd=REPO_ROOT)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    part.seconds = time.perf_counter() - start
    if code is None:
        part.status, part.note = "FAILED", f"ran past its {part.timeout_s} s"
    elif part.expect_failure:
        part.status = "ok" if code != 0 else "FAILED"
        part.note = f"exit {code}" + ("" if code else ": the planted failure did not stop the command")
    else:
        part.status = "ok" if code == 0 else "FAILED"
        part.note = f"exit {code}"


def data_share(records: Path) -> dict:
    """The in-memory GPU data path's share of training time over the short runs' records."""
    shares = [json.loads(p.read_text()).get("data_time_share") for p in sorted(records.rglob("seed*.json"))]
    shares = [s for s in shares if s is not None]
    if not shares:
        return {}
    return {"runs": len(shares), "median": round(statistics.median(shares), 4), "max": round(max(shares), 4)}


def check_failed_record(part: Part, results: Path) -> None:
    statuses = [json.loads(p.read_text())["status"] for p in results.rglob("seed*.json")]
    if part.status == "ok" and statuses != [FAILED]:
        part.status, part.note = "FAILED", f"records {statuses}, not one failed record"


def summary_markdown(summary: dict) -> str:
    lines = [f"GPU check on {summary['device']} (torch {summary['torch']}, CUDA {summary['cuda']}), "
             f"{summary['date']}: `{summary['command']}`", "",
             "| part | what | status | seconds | note |", "|---|---|---|---:|---|"]
    lines += [f"| {p['name']} | {p['what']} | {p['status']} | {p['seconds']:.0f} | {p['note']} |"
              for p in summary["parts"]]
    share = summary.get("data_time_share") or {}
    if share:
        lines += ["", f"In-memory data path on the GPU: median {share['median']:.1%} of training time waiting for "
                      f"data (max {share['max']:.1%}) over {share['runs']} runs."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpucheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the parts and their commands; run nothing")
    parser.add_argument("--cifar10", help="an unpacked CIFAR-10 image folder (train/, test/)")
    parser.add_argument("--cifar10-tar", help="the CIFAR-10 JPEG tarball (default: data/ or ../shared/data/)")
    parser.add_argument("--out", default=str(REPO_ROOT / "results"), help="results folder (default results/)")
    parser.add_argument("--backend", choices=("nccl", "gloo"), help="for the 2-process parts (default: nccl if "
                        "it takes two processes on one GPU, else gloo)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.dry_run:
        for part in parts(Path("<tmp>"), out, args.cifar10 or "<cifar10-jpg>", args.backend or "nccl|gloo", "<device>"):
            print(f"{part.name} (at most {part.timeout_s} s): {part.what}\n  $ {' '.join(part.command)}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device is visible; it runs on a GPU machine (make gpu-check-dry lists its parts)",
              file=sys.stderr)
        return 2
    command = " ".join(["python -m roadmap.gpucheck", *(argv if argv is not None else sys.argv[1:])])
    device = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        (work / "failing_rank.py").write_text(FAILING_RANK.format(root=str(REPO_ROOT)))
        cifar10 = find_cifar10(args.cifar10, args.cifar10_tar, work)
        folder = gpu_folder(out, device)
        folder.mkdir(parents=True, exist_ok=True)
        planned = parts(work, out, cifar10, args.backend or "nccl", device)
        for part in planned:
            print(f"gpu-check: {part.name}: {part.what} ...", file=sys.stderr, flush=True)
            run_part(part, folder)
            if part.name == "ddp-2proc" and part.status != "ok" and not args.backend:
                # NCCL refuses two processes on one GPU on some versions: gloo then, for both 2-process parts.
                for later in planned[planned.index(part):]:
                    later.env = {"ROADMAP_DIST_BACKEND": "gloo"}
                    later.what = later.what.replace("(nccl)", "(gloo: nccl failed, see ddp-2proc-nccl.log)")
                shutil.move(folder / f"{part.name}.log", folder / f"{part.name}-nccl.log")
                run_part(part, folder)
            if part.expect_failure:
                check_failed_record(part, work / "ddp-fail")
            print(f"gpu-check: {part.name}: {part.status} in {part.seconds:.0f} s ({part.note})", file=sys.stderr)
    summary = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
               "date": datetime.date.today().isoformat(), "command": command,
               "parts": [{k: getattr(p, k) for k in ("name", "what", "status", "seconds", "note", "timeout_s")}
                         | {"command": " ".join(p.command)} for p in planned],
               "data_time_share": data_share(folder / "records")}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (folder / "summary.md").write_text(summary_markdown(summary))
    print(summary_markdown(summary), end="")
    return 0 if all(p.status == "ok" for p in planned) else 1


if __name__ == "__main__":
    sys.exit(main())
