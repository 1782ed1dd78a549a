"""Every step of both regimes against the paper; the endpoints against torchvision and timm."""
import csv
import typing
from pathlib import Path

import pytest
import timm
import torch
import torchvision

from roadmap.config import load_roadmap
from roadmap.errors import ConfigError
from roadmap.model import ACTIVATIONS, Act, ModelConfig, RoadmapNet, count_gflops, count_params
from roadmap.names import upgrade
from roadmap.steps import build_model
from roadmap.weights import library_names

PAPER_CSV = Path(__file__).resolve().parent / "paper_roadmap.csv"  # the paper's per-step numbers
STEPS = [(r, s) for r in ("resnet50", "resnet200") for s in load_roadmap(r)]


@pytest.mark.parametrize("roadmap,step", STEPS, ids=[f"{r}-{s.id}" for r, s in STEPS])
def test_gflops_match_paper(roadmap, step):
    gflops = count_gflops(build_model(step.model), 224)
    if step.id in ("layernorm", "official_init"):
        # BN -> LN changes no conv or linear layer: the MACs must equal the step before.
        before = next(s for s in load_roadmap(roadmap) if s.id == step.base)
        assert gflops == pytest.approx(count_gflops(build_model(before.model), 224), rel=1e-9)
        assert step.paper.note or step.paper.gflops is None, "the layernorm step must explain the paper's GFLOPs"
    else:
        assert gflops == pytest.approx(step.paper.gflops, rel=0.015)


@pytest.mark.parametrize("roadmap,step", STEPS, ids=[f"{r}-{s.id}" for r, s in STEPS])
def test_forward_backward_small_input(roadmap, step):
    torch.manual_seed(0)
    net = build_model(step.model, num_classes=7)
    out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_steps_cover_the_paper_csv():
    rows = [r for r in csv.DictReader(PAPER_CSV.open()) if r["order"] != "ref"]
    for roadmap in ("resnet50", "resnet200"):
        ours = [s for s in load_roadmap(roadmap) if s.id != "official_init"]  # our side branch, not the paper's
        paper = [r for r in rows if r["regime"] == roadmap]
        assert len(ours) == len(paper) == 17
        for step, row in zip(ours, paper):
            assert step.paper.top1 == float(row["paper_top1"])
            assert step.paper.gflops == float(row["paper_gflops"])
            assert step.adopted == (row["adopted"] == "yes")


def copy_by_name(src: torch.nn.Module, dst: torch.nn.Module, kind: str, config) -> None:
    """Copy every parameter and buffer under its translated name (roadmap.names), insisting that shapes agree."""
    theirs, ours = src.state_dict(), dst.state_dict()
    names = library_names(kind, config, ours)
    dst.load_state_dict({name: theirs[names[name]] for name in ours})


def shapes(module):
    return sorted(tuple(p.shape) for p in module.parameters())


def randomize_norm_stats(module):
    """So the comparison exercises BN running stats and affine parameters, not only convs."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


REFERENCES = {
    ("resnet50", "resnet50"): (lambda: torchvision.models.resnet50(), 25_557_032),
    ("resnet200", "resnet200"): (lambda: torchvision.models.resnet.ResNet(
        torchvision.models.resnet.Bottleneck, [3, 24, 36, 3]), 64_673_832),
    ("resnet50", "separate_downsampling"): (lambda: timm.create_model("convnext_tiny"), 28_589_128),
    ("resnet200", "separate_downsampling"): (lambda: timm.create_model("convnext_base"), 88_591_464),
}


@pytest.mark.parametrize("roadmap,step_id", list(REFERENCES), ids=["-".join(k) for k in REFERENCES])
def test_endpoints_are_exact(roadmap, step_id):
    make_ref, n_params = REFERENCES[(roadmap, step_id)]
    torch.manual_seed(0)
    ref = make_ref().eval()
    randomize_norm_stats(ref)
    step = next(s for s in load_roadmap(roadmap) if s.id == step_id)
    ours = build_model(step.model).eval()
    assert count_params(ours) == count_params(ref) == n_params
    assert shapes(ours) == shapes(ref)
    if step_id == "separate_downsampling":
        for m in ref.modules():  # layer scale is 1e-6 at init: make the blocks matter in the comparison
            if hasattr(m, "gamma") and isinstance(m.gamma, torch.nn.Parameter):
                m.gamma.data.uniform_(0.5, 1.5)
    copy_by_name(ref, ours, "timm" if step_id == "separate_downsampling" else "torchvision", step.model)
    x = torch.randn(2, 3, 224 if roadmap == "resnet50" else 128, 224 if roadmap == "resnet50" else 128)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_first_step_gflops_equal_torchvision():
    step = load_roadmap("resnet50")[0]
    assert count_gflops(build_model(step.model)) == pytest.approx(count_gflops(torchvision.models.resnet50()), rel=1e-12)


def test_impossible_architecture_is_a_clear_error():
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        RoadmapNet(ModelConfig(kernel_size=4))
    with pytest.raises(ConfigError, match="model.norm must be one of bn, ln, not 'gn'"):
        RoadmapNet(ModelConfig(norm="gn"))
    with pytest.raises(ConfigError, match="model.drop_path must be >= 0 and <= 1, not 1.5"):
        RoadmapNet(ModelConfig(drop_path=1.5))


def test_every_activation_choice_has_a_module():
    assert set(typing.get_args(Act)) == set(ACTIVATIONS)


@pytest.mark.parametrize("step_id", ["resnet50", "inverted_bottleneck", "layernorm", "separate_downsampling"])
def test_fast_path_keeps_the_numerics(step_id):
    """channels_last must not change the outputs (fp32: same math); bf16 autocast only within bf16's precision."""
    import dataclasses
    step = next(s for s in load_roadmap("resnet50") if s.id == step_id)
    small = dataclasses.replace(step.model, widths=tuple(w // 4 for w in step.model.widths), depths=(1, 1, 2, 1))
    torch.manual_seed(0)
    net = build_model(small, num_classes=10).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        reference = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        channels_last = net_cl(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = net_cl(x.contiguous(memory_format=torch.channels_last)).float()
    torch.testing.assert_close(channels_last, reference, atol=1e-5, rtol=1e-5)
    scale = reference.abs().max()
    assert (bf16 - reference).abs().max() <= 0.05 * scale, "bf16 outputs drift beyond bf16 tolerance"


def test_print_shows_each_steps_block_by_its_named_parts():
    """The kxk conv, the norms and the activations have names; what a step switches off is an Identity."""
    steps = {s.id: s for s in load_roadmap("resnet50")}
    resnet = str(build_model(steps["resnet50"].model).stages[0].blocks[0])
    convnext = str(build_model(steps["separate_downsampling"].model).stages[1].blocks[0])
    assert resnet.index("(pwconv1)") < resnet.index("(conv_kxk): Conv2d(64, 64, kernel_size=(3, 3)") < resnet.index("(pwconv2)")
    assert "(act_out): ReLU" in resnet and "(norm2): BatchNorm2d" in resnet
    assert convnext.index("(conv_kxk): Conv2d(192, 192, kernel_size=(7, 7)") < convnext.index("(pwconv1)")
    assert "groups=192" in convnext and "(norm_kxk): LayerNorm2d" in convnext
    for switched_off in ("(act_kxk): Identity()", "(norm1): Identity()", "(norm2): Identity()", "(act_out): Identity()"):
        assert switched_off in convnext
    net = build_model(steps["separate_downsampling"].model)
    assert isinstance(net.stages[0].downsample, torch.nn.Identity) and len(net.stages[1].downsample) == 2


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("step_id", ["resnet50", "separate_downsampling"])
def test_weights_named_before_the_named_block_are_renamed_and_compute_the_same(step_id):
    """tests/fixtures/legacy-<step>.safetensors: a small network of the step, its state_dict under the names of
    before the named block, an input and the logits that network gave (written once by that code)."""
    import dataclasses
    from safetensors.torch import load_file
    blob = load_file(FIXTURES / f"legacy-{step_id}.safetensors")
    x, expected = blob.pop("__input__"), blob.pop("__logits__")
    step = next(s for s in load_roadmap("resnet50") if s.id == step_id)
    config = dataclasses.replace(step.model, widths=(4, 8, 8, 16), depths=(1, 1, 2, 1), groups=1)
    net = build_model(config, num_classes=3).eval()
    net.load_state_dict(upgrade(blob, config))   # strict: every tensor placed
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, atol=1e-6, rtol=1e-6)
