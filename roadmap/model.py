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
                    | 'none'                      the isotropic ConvNeXt (Sec. 3.3): one stage, no downsampling

`layer_scale` and `drop_path` belong to the modern training recipe (step 1 on); `init` picks the
weight initialisation: torchvision's ResNet (step 0), the authors' roadmap code (steps 1 on), or the
official ConvNeXt (a side branch of its own, so that its effect is measured, not mixed into a step).

Two facts keep the endpoints exact: a conv has a bias unless a BatchNorm follows it (torchvision
ResNet / official ConvNeXt), and with LayerNorm the 1x1 convs are Linear layers over the channel
dimension, as in the official ConvNeXt block. The same parameters as torchvision `resnet50` (step 0) and
timm `convnext_tiny` (last step) follow; names.py says which of theirs each of ours is.
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

# The version of the tensor names below; a checkpoint of another one starts its run over (plan.config_fingerprint).
# 2: the block's named parts and stages with .downsample/.blocks (names.py renames files of 1 when it reads them).
TENSOR_LAYOUT = 2

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
    downsample: Literal["in_block", "separate", "none"] = "in_block"
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


def conv(cin: int, cout: int, kernel_size: int = 1, stride: int = 1, groups: int = 1, *, bias: bool,
         linear: bool = False) -> nn.Module:
    """A conv, or a 1x1 conv as nn.Linear over channels (the LayerNorm steps, as the official block)."""
    if linear:
        return PointwiseLinear(cin, cout, bias=bias)
    return nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)


def norm_or_identity(kind: str, channels: int, present: bool) -> nn.Module:
    return make_norm(kind, channels) if present else nn.Identity()


def act_or_identity(kind: str, present: bool) -> nn.Module:
    return ACTIVATIONS[kind]() if present else nn.Identity()


class Block(nn.Module):
    """A residual block of any roadmap step: a kxk conv and two 1x1 convs, a shortcut, optional layer scale.

    classic bottleneck:  pwconv1 (dim -> dim/4) -> conv_kxk -> pwconv2 (-> dim)   (ResNet; width = dim/4)
    inverted bottleneck: pwconv1 (dim -> 4dim)  -> conv_kxk -> pwconv2 (-> dim)   (MobileNetV2 / Transformer MLP)
    spatial_first moves conv_kxk to the front (on the block's input width), as in ConvNeXt (Fig. 4):
        conv_kxk -> norm_kxk -> pwconv1 -> act1 -> pwconv2 -> gamma -> drop_path -> + shortcut

    Every block has the same named parts; what a step switches off is an nn.Identity, and the parts are
    registered in the order the block runs them, so print(model) shows the layout of each step. A conv has
    a bias unless a BatchNorm follows it (torchvision ResNet / official ConvNeXt).

    Args:
        in_dim, out_dim, hidden_dim: channels in, out, and between the two 1x1 convs.
        stride: 2 in a stage's first block when blocks downsample (ResNet), else 1.
        spatial_first, kernel_size, depthwise, groups: the kxk conv: where, how large, how grouped.
        act, acts: the activation, and 'all' (ResNet: after every conv and the sum) or 'one' (between the 1x1s).
        norm, norms: the norm, and 'all' (after every conv) or 'one' (after the kxk conv alone).
        layer_scale: initial per-channel gain on the residual branch (CaiT), 0 for none.
        drop_path: stochastic depth rate of this block.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, stride: int, *, spatial_first: bool,
                 kernel_size: int, depthwise: bool, groups: int, act: str, acts: str, norm: str, norms: str,
                 layer_scale: float, drop_path: float):
        super().__init__()
        self.spatial_first = spatial_first
        self.gamma = nn.Parameter(layer_scale * torch.ones(out_dim)) if layer_scale > 0 else None
        all_norms, all_acts, linear = norms == "all", acts == "all", norm == "ln"
        kxk_dim = in_dim if spatial_first else hidden_dim

        def add_kxk():
            self.conv_kxk = conv(kxk_dim, kxk_dim, kernel_size, stride, kxk_dim if depthwise else groups,
                                 bias=norm != "bn")
            self.norm_kxk = make_norm(norm, kxk_dim)   # fewer norms keeps this one (Sec. 2.6)
            self.act_kxk = act_or_identity(act, all_acts)

        # Registered in the order they run: the state_dict, the init's draws and print(model) follow it.
        if spatial_first:
            add_kxk()
        self.pwconv1 = conv(in_dim, hidden_dim, bias=not all_norms or norm != "bn", linear=linear)
        self.norm1 = norm_or_identity(norm, hidden_dim, all_norms)
        self.act1 = ACTIVATIONS[act]()   # fewer activations keeps this one, between the 1x1s (Sec. 2.6)
        if not spatial_first:
            add_kxk()
        self.pwconv2 = conv(hidden_dim, out_dim, bias=not all_norms or norm != "bn", linear=linear)
        self.norm2 = norm_or_identity(norm, out_dim, all_norms)
        if in_dim != out_dim or stride != 1:
            # torchvision's projection shortcut: 1x1 conv with the block's stride, then a norm.
            self.shortcut = nn.Sequential(conv(in_dim, out_dim, 1, stride, bias=norm != "bn"), make_norm(norm, out_dim))
        else:
            self.shortcut = nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act_out = act_or_identity(act, all_acts)   # a ResNet's activation after the sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)                  # (N, out, H/s, W/s)
        if self.spatial_first:
            x = self.kxk(x)                          # (N, in, H, W)
        x = self.pwconv1(x)                          # (N, hidden, H, W)
        x = self.norm1(x)
        x = self.act1(x)
        if not self.spatial_first:
            x = self.kxk(x)                          # (N, hidden, H/s, W/s)
        x = self.pwconv2(x)                          # (N, out, H/s, W/s)
        x = self.norm2(x)
        if self.gamma is not None:
            x = x * self.gamma.view(1, -1, 1, 1)
        x = self.drop_path(x)
        x += shortcut                                # in place, as torchvision and timm: one activation fewer
        return self.act_out(x)

    def kxk(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_kxk(self.norm_kxk(self.conv_kxk(x)))


class Stage(nn.Module):
    """A stage as timm's ConvNeXtStage: an optional downsampling layer, then blocks at one resolution."""

    def __init__(self, downsample: nn.Module, blocks: list[Block]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


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
        drop_rates = torch.linspace(0, c.drop_path, sum(c.depths), device="cpu").split(list(c.depths))
        self.stages = nn.ModuleList()
        in_dim = c.widths[0]
        for i, depth in enumerate(c.depths):
            stride = 1 if i == 0 else 2
            downsample = nn.Identity()
            if separate and i > 0:
                # ConvNeXt: LN then a 2x2 stride-2 conv between stages, in place of strided blocks.
                downsample = nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, dims[i], 2, 2))
                in_dim, stride = dims[i], 1
            blocks = []
            for rate in drop_rates[i].tolist():
                blocks.append(Block(
                    in_dim, dims[i], hidden[i], stride, spatial_first=c.spatial_first, kernel_size=c.kernel_size,
                    depthwise=c.depthwise, groups=c.groups, act=c.act, acts=c.acts, norm=c.norm, norms=c.norms,
                    layer_scale=c.layer_scale, drop_path=rate))
                in_dim, stride = dims[i], 1
            self.stages.append(Stage(downsample, blocks))
        self.num_features = dims[-1]
        # ConvNeXt and its isotropic variant normalise the pooled features; the isotropic one has no other
        # norm outside its blocks (official convnext_isotropic.py: no LN after its 16x16 stem).
        self.head_norm = nn.LayerNorm(dims[-1], eps=1e-6) if c.downsample != "in_block" else nn.Identity()
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
            x = stage(x)                           # (N, Ci, H/s, W/s); s doubles at stages 2..4
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3))  # global average pool: (N, C4)
        return self.fc(self.head_norm(x))          # (N, num_classes)


# ConvNeXt-XL has 36 blocks of at most 2048 channels, ResNet-152 50: far beyond is a typo, which would take for ever
# to build, or overflow a tensor's size (plan.check_model_memory then counts what is within).
MAX_BLOCKS, MAX_WIDTH = 1000, 1 << 16


def check_model(config: ModelConfig) -> None:
    """Reject impossible architectures with one readable ConfigError: the fields, then how they combine."""
    check_fields(config, "model")
    depths, widths, groups = config.depths, config.widths, config.groups
    stages = stage_count(config.downsample)
    if len(depths) != stages or len(widths) != stages:
        one_per_stage = ("1 entry: downsample 'none' is one stage (the isotropic ConvNeXt)" if stages == 1
                         else "4 entries, one per stage")
        raise ConfigError(f"model.depths and model.widths need {one_per_stage}")
    if min(depths) < 1 or min(widths) < 1:
        raise ConfigError("model.depths and model.widths must be positive")
    if sum(depths) > MAX_BLOCKS or max(widths) > MAX_WIDTH:
        raise ConfigError(f"model.depths {tuple(depths)} and model.widths {tuple(widths)} (after the scale's "
                          f"multipliers) must stay within {MAX_BLOCKS} blocks and {MAX_WIDTH} channels")
    if config.kernel_size % 2 == 0:
        raise ConfigError(f"model.kernel_size must be odd, not {config.kernel_size}")
    if any(w % groups for w in widths):
        raise ConfigError(f"model.groups {groups} must divide every width {tuple(widths)}")
    if config.stem == "resnet" and config.stem_stride not in (1, 2, 4):
        raise ConfigError(f"model.stem_stride must be 1, 2 or 4 for the resnet stem, not {config.stem_stride}")


def stage_count(downsample: str) -> int:
    """Four stages (ResNet, ConvNeXt), or one where nothing downsamples after the stem (isotropic ConvNeXt)."""
    return 1 if downsample == "none" else 4


def total_stride(stem_stride: int, stages: int = 4) -> int:
    """Input pixels per pixel of the last stage: the stem's stride, then 2x at each later stage."""
    return stem_stride * 2 ** (stages - 1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, image_size: int = 224) -> float:
    """Giga multiply-accumulates of convs and linear layers: the paper's "GFLOPs".

    FlopCounterMode counts 2 FLOPs per MAC, hence the halving: the paper counts MACs as FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9
