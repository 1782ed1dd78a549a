"""Speed parity with timm that does not depend on a quiet machine: a training step of our ResNet-50 runs the
same kernels as timm's `resnet50` (the same convolutions, norms and activations, no extra copies), so a gap
in a benchmark's images/s is the machine's noise, not work this network does and timm's does not."""
import collections

import pytest
import timm
import torch
from torch.profiler import ProfilerActivity, profile

from roadmap.config import load_step
from roadmap.steps import build_model

# The kernels that cost time in a ResNet training step, forward and backward; then those that only move data.
COMPUTE = ("aten::convolution", "aten::convolution_backward", "aten::native_batch_norm",
           "aten::native_batch_norm_backward", "aten::relu_", "aten::threshold_backward",
           "aten::max_pool2d_with_indices", "aten::add_", "aten::addmm", "aten::mm")
COPIES = ("aten::copy_", "aten::clone", "aten::contiguous")


def aten_calls(model: torch.nn.Module) -> collections.Counter:
    """Every aten op one channels_last training step (forward, backward) dispatches, counted."""
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 3, 64, 64).to(memory_format=torch.channels_last)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x).sum().backward()
    return collections.Counter(event.name for event in prof.events() if event.name.startswith("aten::"))


@pytest.mark.filterwarnings("ignore")
def test_our_resnet50_runs_timms_kernels_and_no_more():
    torch.manual_seed(0)
    ours = aten_calls(build_model(load_step("resnet50", "resnet50").model))
    theirs = aten_calls(timm.create_model("resnet50"))
    assert {op: ours[op] for op in COMPUTE} == {op: theirs[op] for op in COMPUTE}
    assert all(ours[op] <= theirs[op] for op in COPIES), {op: (ours[op], theirs[op]) for op in COPIES}
    assert ours["aten::convolution"] == 53 and ours["aten::native_batch_norm"] == 53   # not a vacuous match
    assert sum(ours.values()) <= sum(theirs.values())
