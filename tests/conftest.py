"""Shared by every test file: the tiny test scale (`tiny`), runner.py in this process (`main`) or as a user types
it (`runner`), and folders of data or runs made without training (`photos`, `fake_run`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Sizes of a photo folder's images: other shapes than the run's square, as a user's own photos are.
PHOTO_SIZES = ((40, 30), (36, 36), (30, 44), (52, 40))


def make_photos(root: Path, classes=("cat", "dog", "fox"), train: int = 8, val: int | tuple = 4,
                seed: int = 0) -> Path:
    """An image folder (train/ and val/, a folder per class) of small RGB photos of several shapes; each class
    has a colour of its own under noise, so a tiny network learns something in one epoch. `val`: images per
    class, or a count for each class (an imbalanced set)."""
    rng = np.random.default_rng(seed)
    val = val if isinstance(val, tuple) else (val,) * len(classes)
    for split, counts in (("train", (train,) * len(classes)), ("val", val)):
        for c, (name, count) in enumerate(zip(classes, counts)):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            colour = np.array([255 * (c % 3 == k) for k in range(3)]) * 0.7 + 40
            for i in range(count):
                width, height = PHOTO_SIZES[i % len(PHOTO_SIZES)]
                pixels = np.clip(colour + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def photos():
    """make_photos(root, ...): a folder of one's own images."""
    return make_photos


def save_fake_run(root: Path, roadmap: str, step_id: str, classes: int = 10, model: dict | None = None,
                  **scale) -> torch.nn.Module:
    """A freshly built network (full size, unless `scale` says otherwise; `model` overrides its config) saved as a
    complete run's weights at the paper scale, with its record."""
    from roadmap.config import build_run_config, to_dict
    from roadmap.results import SCHEMA_VERSION, RunKey, write_record
    from roadmap.steps import build_model
    from roadmap.weights import keep_weights

    cfg = build_run_config(roadmap, step_id, "paper", "synthetic", 0,
                           {"scale": {"image_size": 64, **scale}, "model": model or {}})
    torch.manual_seed(0)
    net = build_model(cfg.model, classes).eval()
    for m in net.modules():  # not the init: make norms and layer scale matter in the comparison
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if getattr(m, "gamma", None) is not None:
            m.gamma.data.uniform_(0.5, 1.5)
    key = RunKey(roadmap, "paper", "synthetic", step_id, 0)
    write_record(root / "results", key, {
        "schema": SCHEMA_VERSION, "roadmap": roadmap, "step": step_id, "scale": "paper", "data": "synthetic",
        "seed": 0, "status": "complete", "top1": 50.0, "config": json.loads(json.dumps(to_dict(cfg))),
        "classes": [f"class{i}" for i in range(classes)], **keep_weights(root / "results" / "weights", key, net)})
    return net


@pytest.fixture(scope="session")
def fake_run():
    """save_fake_run(root, roadmap, step_id, ...): a complete run's record and weights without training."""
    return save_fake_run


# ---------------------------------------------------------------------------- the tiny test scale and the CLI
# One tiny scale for every test that trains: the demo scale's networks on synthetic images at 16 px (stem stride 2),
# 48 images in batches of 16 (3 updates an epoch), one epoch, deterministic kernels. A test that needs more says
# so with its own 'key=value' changes, which come after these (the last --set of a key wins).
TINY_SETTINGS = {"scale.epochs": "1", "scale.classic_epochs": "1", "scale.batch_size": "16", "scale.micro_batch": "16",
                 "data.synthetic_size": "48", "scale.image_size": "16", "scale.stem_stride": "2",
                 "train.deterministic": "true"}


def tiny(*changes: str) -> list[str]:
    """`run` options of the tiny scale: --data synthetic, no progress bar, TINY_SETTINGS, then `changes` ('key=value')."""
    sets = [f"{key}={value}" for key, value in TINY_SETTINGS.items()] + list(changes)
    return ["--data", "synthetic", "--no-progress", *[arg for pair in sets for arg in ("--set", pair)]]


def main(capsys, *args) -> tuple[int, str]:
    """runner.py's main in this process, as the console script runs it: (exit code, stderr)."""
    from roadmap import cli
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def runner_argv(*args) -> list[str]:
    """The command line of `python runner.py ARGS` (for subprocess.run / Popen)."""
    return [sys.executable, str(ROOT / "runner.py"), *map(str, args)]


def runner(*args, env: dict | None = None, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python runner.py ARGS` as a user types it, on one thread: the finished process, output as text."""
    return subprocess.run(runner_argv(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
