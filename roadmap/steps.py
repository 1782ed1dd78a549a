"""Build the network of a step and measure it the paper's way (224 px, 1000 classes)."""
from __future__ import annotations

import torch

from .config import Step
from .model import ModelConfig, RoadmapNet, count_gflops, count_params


def build_model(model: ModelConfig, num_classes: int = 1000) -> RoadmapNet:
    return RoadmapNet(model, num_classes=num_classes)


def describe(step: Step) -> dict:
    """One row of `runner.py list`: the step, its size at the paper's setting, the paper's numbers.

    Built and counted on the meta device: shapes only, so ConvNeXt-XL or the isotropic L cost no memory and
    no arithmetic (the counts are the same as on the CPU)."""
    with torch.device("meta"):
        net = build_model(step.model)
        gflops = count_gflops(net, 224)
    return {
        "id": step.id,
        "order": step.order,
        "title": step.title,
        "adopted": step.adopted,
        "base": step.base,
        "params": round(count_params(net) / 1e6, 3),
        "params_exact": count_params(net),
        "gflops": round(gflops, 3),
        "paper_gflops": step.paper.gflops,
        "paper_top1": step.paper.top1,
        "paper_top1_std": step.paper.top1_std,
        "recipe": step.recipe.name,
    }
