"""The isotropic ConvNeXt (steps/isotropic, paper Sec. 3.3): the official definition parameter for parameter,
the paper's params and GFLOPs, and a config of the one network that trains, exports and is refused where it
is not what a format needs."""
import pytest
import torch
from timm.layers import LayerNorm
from timm.models.convnext import ConvNeXtBlock
from torch import nn

from conftest import main, tiny
from roadmap.config import ConfigError, load_roadmap, load_scale, scaled_model
from roadmap.model import ModelConfig, RoadmapNet, check_model, count_gflops, count_params
from roadmap.results import RunKey, read_record
from roadmap.steps import build_model
from roadmap.weights import load_kept, load_native

ISOTROPIC = load_roadmap("isotropic")
# (blocks, width, stochastic depth, layer scale): the paper's Table 2 sizes and the official training commands.
SIZES = {"convnext_iso_s": (18, 384, 0.1, 0.0), "convnext_iso_b": (18, 768, 0.2, 0.0),
         "convnext_iso_l": (36, 1024, 0.5, 1e-6)}


def official_isotropic(depth: int, dim: int, layer_scale: float, num_classes: int = 1000) -> nn.Module:
    """The official convnext_isotropic.py, rebuilt from its description with timm's ConvNeXt block (the same
    block as the official one): a 16x16/16 conv with bias, `depth` blocks, LayerNorm, Linear head."""
    return nn.Sequential(nn.Conv2d(3, dim, 16, 16), *[ConvNeXtBlock(dim, ls_init_value=layer_scale or None)
                                                      for _ in range(depth)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), LayerNorm(dim, eps=1e-6), nn.Linear(dim, num_classes))


def official_param_count(depth: int, dim: int, layer_scale: float, num_classes: int = 1000) -> int:
    """Counted by hand: stem conv + bias; per block a 7x7 depthwise conv + bias, LN, dim -> 4dim -> dim
    Linear layers with biases, gamma when layer scale is on; final LN; the head."""
    block = 49 * dim + dim + 2 * dim + (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim) + (dim if layer_scale else 0)
    return 3 * 16 * 16 * dim + dim + depth * block + 2 * dim + dim * num_classes + num_classes


def test_the_roadmap_is_the_papers_three_sizes():
    assert [s.id for s in ISOTROPIC] == list(SIZES)
    for step in ISOTROPIC:
        m = step.model
        assert (m.depths[0], m.widths[0], m.drop_path, m.layer_scale) == SIZES[step.id]
        assert (m.stem, m.stem_stride, m.downsample, m.kernel_size, m.init) == ("patchify", 16, "none", 7, "convnext")
        assert step.recipe.warmup_epochs == 50


@pytest.mark.parametrize("step", ISOTROPIC, ids=[s.id for s in ISOTROPIC])
def test_each_size_is_the_official_definition_parameter_for_parameter(step):
    depth, dim, _, layer_scale = SIZES[step.id]
    with torch.device("meta"):
        ours = build_model(step.model)
        theirs = official_isotropic(depth, dim, layer_scale)
    assert count_params(ours) == count_params(theirs) == official_param_count(depth, dim, layer_scale)
    # Same shapes in the same order: stem, blocks, the norm after pooling, the head.
    assert [tuple(t.shape) for t in ours.state_dict().values()] == [tuple(t.shape) for t in theirs.state_dict().values()]
    assert round(count_params(ours) / 1e6) == int(step.paper.note.split("M params")[0])


@pytest.mark.parametrize("step", ISOTROPIC, ids=[s.id for s in ISOTROPIC])
def test_gflops_match_the_paper(step):
    with torch.device("meta"):
        assert count_gflops(build_model(step.model), 224) == pytest.approx(step.paper.gflops, rel=0.01)


def test_the_small_size_computes_what_the_official_definition_computes():
    step = ISOTROPIC[0]
    ours = build_model(step.model, num_classes=7).eval()
    theirs = official_isotropic(18, 384, 0.0, num_classes=7).eval()
    theirs.load_state_dict(dict(zip(theirs.state_dict(), ours.state_dict().values())))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    print_out = str(ours)
    assert "downsample): Identity()" in print_out and "(head_norm): LayerNorm" in print_out


def test_a_small_scale_shrinks_the_patch_with_its_stem_stride():
    """The scale's stem stride stands for the paper's 4: 16x16 patches become 4x it, so the one stage has the
    size of ConvNeXt's third at every scale; the four-stage steps get the scale's stride as before."""
    cpu, small = load_scale("cpu"), load_scale("small")
    assert (cpu.stem_stride, small.stem_stride) == (4, 2)
    assert scaled_model(ISOTROPIC[0].model, cpu).stem_stride == 16   # 32 px -> 2x2, as ConvNeXt-T's stage 3
    assert scaled_model(ISOTROPIC[0].model, small).stem_stride == 8
    convnext_t = load_roadmap("convnext")[0].model
    assert scaled_model(convnext_t, small).stem_stride == 2


def test_a_stem_stride_a_scale_cannot_shrink_is_one_line():
    model = ModelConfig(stem="patchify", stem_stride=2)
    scale = load_scale("small")   # stride 2 for the paper's 4: 2 -> 1
    assert scaled_model(model, scale).stem_stride == 1
    with pytest.raises(ConfigError, match="gives no whole stride for model.stem_stride 3"):
        scaled_model(ModelConfig(stem="patchify", stem_stride=3), scale)


def test_one_stage_only_without_downsampling():
    with pytest.raises(ConfigError, match="need 1 entry: downsample 'none' is one stage"):
        check_model(ModelConfig(downsample="none"))
    with pytest.raises(ConfigError, match="need 4 entries, one per stage"):
        check_model(ModelConfig(depths=(18,), widths=(384,)))
    RoadmapNet(ModelConfig(depths=(2,), widths=(32,), downsample="none", stem="patchify", stem_stride=16))


def test_it_trains_at_the_tiny_scale_and_exports_natively_not_to_libraries(tmp_path, capsys):
    results = tmp_path / "results"
    chosen = ["--roadmap", "isotropic", "--step", "convnext_iso_s", "--results", results]
    code, err = main(capsys, "run", *chosen, *tiny("scale.width_mult=0.125", "scale.depth_mult=0.12"))
    assert code == 0, err
    record = read_record(RunKey("isotropic", "demo", "synthetic", "convnext_iso_s", 0).record_path(results))
    assert record["status"] == "complete" and record["config"]["model"]["stem_stride"] == 8   # 16 x 2/4
    assert record["config"]["model"]["depths"] == [2] and record["config"]["model"]["widths"] == [48]
    assert main(capsys, "export", *chosen, "--to", tmp_path / "iso.safetensors")[0] == 0
    model, config, _ = load_native(tmp_path / "iso.safetensors")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), load_kept(record, results / "weights")(x), atol=0, rtol=0)
    for fmt, why in (("huggingface", "downsample"), ("timm", "names no library model it equals")):
        code, err = main(capsys, "export", *chosen, "--format", fmt, "--to", tmp_path / fmt)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and why in lines[0], err
