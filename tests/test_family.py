"""The ConvNeXt family (steps/convnext): each size is timm's model of the same name, parameter for parameter.

Built on the meta device: shapes only, nothing allocated or downloaded, so XL's 350M parameters cost nothing."""
import pytest
import timm
import torch

from roadmap.config import load_roadmap
from roadmap.model import count_gflops, count_params
from roadmap.steps import build_model

FAMILY = load_roadmap("convnext")
# (depths, widths, drop path, timm's name): the paper's Sec. 3 and its ImageNet-1K stochastic depth per size.
SIZES = {
    "convnext_t": ((3, 3, 9, 3), (96, 192, 384, 768), 0.1, "timm/convnext_tiny"),
    "convnext_s": ((3, 3, 27, 3), (96, 192, 384, 768), 0.4, "timm/convnext_small"),
    "convnext_b": ((3, 3, 27, 3), (128, 256, 512, 1024), 0.5, "timm/convnext_base"),
    "convnext_l": ((3, 3, 27, 3), (192, 384, 768, 1536), 0.5, "timm/convnext_large"),
    "convnext_xl": ((3, 3, 27, 3), (256, 512, 1024, 2048), 0.5, "timm/convnext_xlarge"),
}


def test_the_family_is_the_papers_five_sizes():
    assert [s.id for s in FAMILY] == list(SIZES)
    for step in FAMILY:
        assert (step.model.depths, step.model.widths, step.model.drop_path, step.equals) == SIZES[step.id]


@pytest.mark.parametrize("step", FAMILY, ids=[s.id for s in FAMILY])
def test_each_size_is_timms_model_parameter_for_parameter(step):
    with torch.device("meta"):
        ours = build_model(step.model)
        theirs = timm.create_model(step.equals.split("/", 1)[1], drop_path_rate=step.model.drop_path)
    # Same shapes in the same registration order: `runner.py export --format timm` maps by it.
    assert [tuple(t.shape) for t in ours.state_dict().values()] == [tuple(t.shape) for t in theirs.state_dict().values()]
    assert count_params(ours) == count_params(theirs)
    assert abs(count_params(ours) / 1e6 - float(step.paper.note.split("M params")[0])) < 1  # the paper's, rounded


@pytest.mark.parametrize("step", FAMILY, ids=[s.id for s in FAMILY])
def test_gflops_match_the_paper(step):
    with torch.device("meta"):
        gflops = count_gflops(build_model(step.model), 224)
    assert gflops == pytest.approx(step.paper.gflops, rel=0.015)
