import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
