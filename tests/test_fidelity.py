"""Every step changes what its paper step changes and nothing else (both regimes, every scale)."""
import dataclasses
import json
import math

import pytest
import torch

from roadmap.config import load_roadmap, load_scale, scaled_model
from roadmap.model import ModelConfig, RoadmapNet, count_params, total_stride
from roadmap.steps import build_model
from roadmap import cli

# What each step of the paper may change, as "section.key". The modern recipe brings the model
# arguments that belong to it (stochastic depth, layer scale) and the authors' init, kept to the end.
ALLOWED = {
    "modern_recipe": {"recipe.name", "model.drop_path", "model.layer_scale", "model.init"},
    "stage_ratio": {"model.depths"},
    "patchify_stem": {"model.stem"},
    "depthwise": {"model.depthwise"},
    "widen": {"model.widths"},
    "inverted_bottleneck": {"model.bottleneck"},
    "move_up_dwconv": {"model.spatial_first"},
    "kernel5": {"model.kernel_size"}, "kernel7": {"model.kernel_size"},
    "kernel9": {"model.kernel_size"}, "kernel11": {"model.kernel_size"},
    "gelu": {"model.act"},
    "fewer_activations": {"model.acts"},
    "fewer_norms": {"model.norms"},
    "layernorm": {"model.norm"},
    "separate_downsampling": {"model.downsample"},
    "official_init": {"model.init"},
}
# Table 11: the ResNet-200 regime's stage-ratio step also widens 64 -> 84.
ALLOWED_RESNET200 = {**ALLOWED, "stage_ratio": {"model.depths", "model.widths"}}
SCALES = ["paper", "small", "demo", "cpu", "cpu64"]


def changed_keys(step, base) -> set[str]:
    out = set()
    for section in ("model", "recipe"):
        ours, theirs = dataclasses.asdict(getattr(step, section)), dataclasses.asdict(getattr(base, section))
        out |= {f"{section}.{k}" for k in ours if ours[k] != theirs[k]}
    return out


@pytest.mark.parametrize("roadmap,allowed", [("resnet50", ALLOWED), ("resnet200", ALLOWED_RESNET200)])
def test_each_step_changes_only_its_own_keys(roadmap, allowed):
    steps = {s.id: s for s in load_roadmap(roadmap)}
    assert set(steps) == set(allowed) | {roadmap}
    for step in steps.values():
        if step.base is None:
            continue
        assert changed_keys(step, steps[step.base]) == allowed[step.id], step.id


@pytest.mark.parametrize("scale_name", SCALES)
def test_a_scale_keeps_each_step_to_its_own_keys(scale_name):
    """A scale rescales every step alike: no step gains a change from it."""
    scale = load_scale(scale_name)
    steps = {s.id: s for s in load_roadmap("resnet50")}
    for step in steps.values():
        if step.base is None:
            continue
        ours = scaled_model(step.model, scale)
        theirs = scaled_model(steps[step.base].model, scale)
        diff = {f"model.{k}" for k, v in dataclasses.asdict(ours).items() if v != getattr(theirs, k)}
        assert diff <= ALLOWED[step.id], (scale_name, step.id, diff)


@pytest.mark.parametrize("scale_name", SCALES)
def test_every_scale_image_size_is_a_multiple_of_its_total_stride(scale_name):
    scale = load_scale(scale_name)
    for step in load_roadmap("resnet50") + load_roadmap("isotropic"):
        model = scaled_model(step.model, scale)
        stride = total_stride(model.stem_stride, len(model.depths))
        assert scale.image_size % stride == 0, (scale_name, step.id)


def test_patchify_stem_is_a_plain_conv_and_its_norm_comes_with_separate_downsampling():
    steps = {s.id: s for s in load_roadmap("resnet50")}
    n = {i: count_params(build_model(steps[i].model)) for i in ("stage_ratio", "patchify_stem")}
    assert n["patchify_stem"] - n["stage_ratio"] == -6400   # 7x7 conv + BN (9,536) -> 4x4 conv + bias (3,136)
    stem = build_model(steps["patchify_stem"].model).stem
    assert [type(m).__name__ for m in stem] == ["Conv2d"] and stem[0].bias is not None
    for step_id in ("layernorm",):
        assert [type(m).__name__ for m in build_model(steps[step_id].model).stem] == ["Conv2d"]
    assert [type(m).__name__ for m in build_model(steps["separate_downsampling"].model).stem] == ["Conv2d", "LayerNorm2d"]


def small(**kwargs) -> RoadmapNet:
    torch.manual_seed(0)
    return RoadmapNet(ModelConfig(depths=(1, 1, 1, 1), widths=(8, 16, 32, 64), **kwargs), num_classes=10)


def test_authors_init_keeps_pytorch_defaults_except_the_classifier():
    net = small(init="authors", norm="ln", stem="patchify", bottleneck="inverted", spatial_first=True)
    for name, m in net.named_modules():
        if m is net.fc:
            assert m.bias.abs().max() == 0 and 0.012 < m.weight.std() < 0.028
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = m.weight[0].numel()
            # PyTorch's default, kaiming_uniform(a=sqrt(5)): |w| <= 1/sqrt(fan_in), and a non-zero bias.
            assert m.weight.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7, name
            assert m.bias is None or m.bias.abs().max() > 0, name


def test_the_init_is_the_same_before_and_after_bn_to_ln():
    """1x1 layers become Linear at BN -> LN; under the authors' init they are drawn as the 1x1 convs were."""
    conv = small(init="authors", norm="bn")
    linear = small(init="authors", norm="ln")
    w_conv = conv.stages[1].blocks[0].pwconv2.weight
    w_lin = linear.stages[1].blocks[0].pwconv2.weight
    assert w_conv.squeeze().shape == w_lin.shape
    bound = 1 / math.sqrt(w_lin.shape[1])
    assert w_conv.abs().max() <= bound and w_lin.abs().max() <= bound


def test_official_init_is_trunc_normal_everywhere():
    net = small(init="convnext", norm="ln")
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.weight.numel() > 500:
            assert 0.012 < m.weight.std() < 0.028
            assert m.bias is None or m.bias.abs().max() == 0


def dry_run(capsys, *args) -> list[dict]:
    assert cli.main(["run", *args, "--dry-run", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_paper_dry_run_trains_the_classic_step_as_torchvision_did(capsys):
    plans = {p["step"]: p for p in dry_run(capsys, "--all", "--scale", "paper", "--data", "synthetic",
                                                     "--set", "data.synthetic_size=4096")}   # one full batch of 4096
    classic, modern = plans["resnet50"], plans["modern_recipe"]
    assert classic["recipe"]["batch_size"] == 256 and classic["recipe"]["lr"] == pytest.approx(0.1)
    assert classic["recipe"]["warmup_epochs"] == 0 and classic["recipe"]["epochs"] == 90
    assert modern["recipe"]["batch_size"] == 4096 and modern["recipe"]["lr"] == pytest.approx(4e-3)
    assert modern["recipe"]["warmup_epochs"] == 20 and modern["batching"]["accum_steps"] == 32
    assert modern["model"]["drop_path"] == 0.1 and modern["model"]["layer_scale"] == 1e-6

