"""One network for every step of the ResNet -> ConvNeXt roadmap (Liu et al., CVPR 2022, Sec. 2).

`RoadmapNet(ModelConfig(...))`: the config's fields are the roadmap's axes; each step of `steps/`
is this class with another config. Reading the fields in roadmap order:

    depths          blocks per stage              step "stage ratio": (3,4,6,3) -> (3,3,9,3)
    stem            'resnet' | 'patchify'         step "patchify stem": 7x7/2 conv + max-pool -> 4x4/4 conv
    depthwise       spatial conv groups = chans   step "ResNeXt-ify" (part 1)
    widths          stage widths                  step "ResNeXt-ify" (part 2): 64 -> 96
    bottleneck      'classic' | 'inverted'        step "inverted bottleneck"
    spatial_first   kxk conv before the 1x1s      step "move up depthwise conv"
    kernel_size     3 | 5 | 7 | 9 | 11            step "kernel size"
    act             'relu' | 'gelu'               step "ReLU -> GELU"
    acts            'all' | 'one'                 step "fewer activations"
    norms           'all' | 'one'                 step "fewer norms"
    norm            'bn' | 'ln'                   step "BN -> LN"
    downsample      'in_block' | 'separate'       step "separate downsampling layers"

`layer_scale` and `drop_path` belong to the modern training recipe (step 1 on); `init` picks the
weight initialisation: torchvision's ResNet (step 0), the authors' roadmap code (steps 1 on), or the
official ConvNeXt (a side branch of its own, so that its effect is measured, not mixed into a step).

Two facts keep the endpoints exact: a conv has a bias unless a BatchNorm follows it (torchvision
ResNet / official ConvNeXt), and with LayerNorm the 1x1 convs are Linear layers over the channel
dimension, as in the official ConvNeXt block. The same parameter shapes and the same registration
order as torchvision `resnet50` (step 0) and timm `convnext_tiny` (last step) follow.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch import nn

from .errors import ConfigError
from .fields import bounded, check_fields

Act = Literal["relu", "gelu"]
# One per Act. ReLU in place, as torchvision's and timm's ResNets: no new tensor per activation (on a CPU
# ResNet-50 trains 0.90x timm's images/s without it); the layers before it do not need their output back.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": functools.partial(nn.ReLU, inplace=True), "gelu": nn.GELU}


@dataclass
class ModelConfig:
    """RoadmapNet's arguments, with torchvision ResNet-50's values as defaults (see the module docstring)."""
    depths: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: Literal["resnet", "patchify"] = "resnet"
    stem_stride: int = bounded(4, low=1)
    bottleneck: Literal["classic", "inverted"] = "classic"
    ratio: int = bounded(4, low=1)
    spatial_first: bool = False
    depthwise: bool = False
    groups: int = bounded(1, low=1)
    kernel_size: int = bounded(3, low=1)
    act: Act = "relu"
    acts: Literal["all", "one"] = "all"
    norm: Literal["bn", "ln"] = "bn"
    norms: Literal["all", "one"] = "all"
    downsample: Literal["in_block", "separate"] = "in_block"
    layer_scale: float = bounded(0.0, low=0)
    drop_path: float = bounded(0.0, low=0, high=1)
    init: Literal["torchvision", "authors", "convnext"] = "torchvision"


def make_norm(kind: str, channels: int) -> nn.Module:
    # eps 1e-6 as the official ConvNeXt; channels-first LN normalises over C only.
    return nn.BatchNorm2d(channels) if kind == "bn" else LayerNorm2d(channels, eps=1e-6)


class PointwiseLinear(nn.Linear):
    """A 1x1 conv written as nn.Linear over channels, as the official ConvNeXt block does.

    The permutes are free when the activations are in channels_last memory format."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


class ConvUnit(nn.Sequential):
    """conv -> optional norm -> optional activation; the bias is dropped only before a BatchNorm."""

    def __init__(self, cin, cout, kernel_size=1, stride=1, groups=1, norm=None, act=None, linear=False):
        bias = norm != "bn"
        if linear:
            conv = PointwiseLinear(cin, cout, bias=bias)
        else:
            conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
        layers = [conv]
        if norm:
            layers.append(make_norm(norm, cout))
        if act:
            layers.append(ACTIVATIONS[act]())
        super().__init__(*layers)


class Block(nn.Module):
    """A residual block of any roadmap step: three layers, a shortcut and optional layer scale.

    classic bottleneck:  1x1 (dim -> dim/4) -> kxk -> 1x1 (-> dim)   (ResNet; width = dim/4)
    inverted bottleneck: 1x1 (dim -> 4dim)  -> kxk -> 1x1 (-> dim)   (MobileNetV2 / Transformer MLP)
    spatial_first moves the kxk conv to the front (on the block's input width), as in ConvNeXt.
    """

    def __init__(self, in_dim, out_dim, hidden_dim, stride, *, spatial_first, kernel_size, depthwise, groups,
                 act, acts, norm, norms, layer_scale, drop_path):
        super().__init__()
        # Layer scale: a learnable per-channel gain on the residual branch (CaiT), registered first
        # so the parameter order follows timm's ConvNeXt block.
        self.gamma = nn.Parameter(layer_scale * torch.ones(out_dim)) if layer_scale > 0 else None
        pointwise_as_linear = norm == "ln"
        all_norms = norms == "all"
        all_acts = acts == "all"

        def spatial(dim):
            return ConvUnit(dim, dim, kernel_size, stride, dim if depthwise else groups, norm=norm, act=act if all_acts else None)

        if spatial_first:
            # Fewer norms keeps the single norm after the spatial conv; fewer activations keeps the
            # single activation between the two 1x1 layers (Sec. 2.6).
            self.layers = nn.ModuleList([
                spatial(in_dim),
                ConvUnit(in_dim, hidden_dim, norm=norm if all_norms else None, act=act, linear=pointwise_as_linear),
                ConvUnit(hidden_dim, out_dim, norm=norm if all_norms else None, linear=pointwise_as_linear),
            ])
        else:
            norm_pw = norm if all_norms else None
            self.layers = nn.ModuleList([
                ConvUnit(in_dim, hidden_dim, norm=norm_pw, act=act, linear=pointwise_as_linear),
                spatial(hidden_dim),
                ConvUnit(hidden_dim, out_dim, norm=norm_pw, linear=pointwise_as_linear),
            ])
        if in_dim != out_dim or stride != 1:
            # torchvision's projection shortcut: 1x1 conv with the block's stride, then a norm.
            self.shortcut = ConvUnit(in_dim, out_dim, 1, stride, norm=norm)
        else:
            self.shortcut = nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        # The activation after the residual sum of a ResNet block goes with "fewer activations".
        self.post_act = ACTIVATIONS[act]() if all_acts else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)                # (N, out, H/s, W/s)
        for layer in self.layers:
            x = layer(x)                           # (N, out, H/s, W/s) after the last layer
        if self.gamma is not None:
            x = x * self.gamma.view(1, -1, 1, 1)
        x = self.drop_path(x)
        x += shortcut                              # in place, as torchvision and timm: one activation fewer
        return self.post_act(x)


class RoadmapNet(nn.Module):
    """ResNet-50, ConvNeXt-T and every step between them, as one parameterised network."""

    def __init__(self, config: ModelConfig | None = None, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        c = config or ModelConfig()
        check_model(c)
        inverted = c.bottleneck == "inverted"
        # Stage output dims: a classic bottleneck widens its output 4x; an inverted one its hidden layer.
        dims = [w if inverted else w * c.ratio for w in c.widths]
        hidden = [w * c.ratio if inverted else w for w in c.widths]
        separate = c.downsample == "separate"

        self.stem = self._make_stem(c.stem, in_chans, c.widths[0], c.stem_stride, c.norm, c.act)
        if separate:
            # "one [LN] after the stem" (Sec. 2.6), with the LNs of the downsampling layers.
            self.stem.append(LayerNorm2d(c.widths[0], eps=1e-6))
        # Linear decay rule (timm, official); on the cpu, as timm, so a network builds on the meta device too.
        drop_rates = torch.linspace(0, c.drop_path, sum(c.depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        in_dim = c.widths[0]
        for i, depth in enumerate(c.depths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential()
            if separate and i > 0:
                # ConvNeXt: LN then a 2x2 stride-2 conv between stages, in place of strided blocks.
                stage.append(nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, dims[i], 2, 2)))
                in_dim, stride = dims[i], 1
            for _ in range(depth):
                stage.append(Block(
                    in_dim, dims[i], hidden[i], stride, spatial_first=c.spatial_first, kernel_size=c.kernel_size,
                    depthwise=c.depthwise, groups=c.groups, act=c.act, acts=c.acts, norm=c.norm, norms=c.norms,
                    layer_scale=c.layer_scale, drop_path=drop_rates.pop(0)))
                in_dim, stride = dims[i], 1
            self.stages.append(stage)
        self.num_features = dims[-1]
        self.head_norm = nn.LayerNorm(dims[-1], eps=1e-6) if separate else nn.Identity()
        self.fc = nn.Linear(dims[-1], num_classes)
        self._init_weights(c.init)

    @staticmethod
    def _make_stem(stem, in_chans, dim, stride, norm, act):
        if stem == "patchify":
            # Non-overlapping patches, a plain conv with bias as in the authors' roadmap code; the norm
            # after it comes with the separate-downsampling step (Sec. 2.6), which adds it below.
            return nn.Sequential(nn.Conv2d(in_chans, dim, stride, stride))
        # ResNet: 7x7 conv (stride 2) -> norm -> act -> 3x3 max-pool (stride 2); smaller total strides
        # (for small images) drop the pool, then the conv stride.
        conv_stride = min(stride, 2)
        layers = [nn.Conv2d(in_chans, dim, 7, conv_stride, 3, bias=norm != "bn"), make_norm(norm, dim), ACTIVATIONS[act]()]
        if stride == 4:
            layers.append(nn.MaxPool2d(3, 2, 1))
        return nn.Sequential(*layers)

    def _init_weights(self, init):
        """Norms start at weight 1, bias 0 (PyTorch's default) under every init.

        torchvision: kaiming_normal (fan_out) on convs; the classifier keeps PyTorch's default.
        authors:     convs (1x1 Linear layers included: the authors' code keeps them as convs, and
                     PyTorch's default draws both alike) keep PyTorch's default; the classifier is
                     trunc_normal(.02) with zero bias.
        convnext:    trunc_normal(.02), zero bias, on every conv and Linear layer (official code).
        """
        for m in self.modules():
            if init == "convnext" and isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif init == "authors" and m is self.fc:
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif init == "torchvision" and isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)                           # (N, C0, H/stem_stride, W/stem_stride)
        for stage in self.stages:
            x = stage(x)                           # spatial size halves at stages 2..4
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3))  # global average pool: (N, C4)
        return self.fc(self.head_norm(x))          # (N, num_classes)


def check_model(config: ModelConfig) -> None:
    """Reject impossible architectures with one readable ConfigError: the fields, then how they combine."""
    check_fields(config, "model")
    depths, widths, groups = config.depths, config.widths, config.groups
    if len(depths) != 4 or len(widths) != 4:
        raise ConfigError("model.depths and model.widths need 4 entries, one per stage")
    if min(depths) < 1 or min(widths) < 1:
        raise ConfigError("model.depths and model.widths must be positive")
    if config.kernel_size % 2 == 0:
        raise ConfigError(f"model.kernel_size must be odd, not {config.kernel_size}")
    if any(w % groups for w in widths):
        raise ConfigError(f"model.groups {groups} must divide every width {tuple(widths)}")
    if config.stem == "resnet" and config.stem_stride not in (1, 2, 4):
        raise ConfigError(f"model.stem_stride must be 1, 2 or 4 for the resnet stem, not {config.stem_stride}")


def total_stride(stem_stride: int) -> int:
    """Input pixels per stage-4 pixel: the stem's stride times three 2x downsamplings."""
    return stem_stride * 8


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, image_size: int = 224) -> float:
    """Giga multiply-accumulates of convs and linear layers: the paper's "GFLOPs".

    FlopCounterMode counts 2 FLOPs per MAC, hence the halving (ROADMAP_FACTS.md)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9
