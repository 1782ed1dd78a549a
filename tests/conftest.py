import json
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
