"""Tensor names between this network and others, translated by name (as timm's `checkpoint_filter_fn`).

Ours: stem.<i>, stages.<s>.downsample.<i>, stages.<s>.blocks.<b>.<part>, head_norm, fc, where a block's
parts are conv_kxk/norm_kxk, pwconv1/norm1, pwconv2/norm2, shortcut.<i> and gamma (model.Block). A
`Names` says where each goes in another model: timm's ConvNeXt, torchvision's ResNet, transformers'
ConvNext, or this network as it was before its parts had names (`legacy_names`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError
from .model import ModelConfig

DOWNSAMPLE = re.compile(r"stages\.(\d+)\.downsample\.(.+)")
BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)")


@dataclass(frozen=True)
class Names:
    """Another model's names for ours: top-level prefixes, a stage's downsampling layer, a block, its parts."""
    model: str                      # in words, for errors
    top: dict[str, str]             # our prefix -> theirs, outside the stages
    downsample: str | None          # "{stage}" formatted -> their downsampling layer's prefix
    block: str                      # "{stage}" (or "{stage_1}", from 1), "{block}" formatted -> their block's prefix
    parts: dict[str, str]           # our prefix within a block -> theirs

    def of(self, name: str) -> str:
        for ours, theirs in self.top.items():
            if name.startswith(ours):
                return theirs + name[len(ours):]
        found = DOWNSAMPLE.fullmatch(name)
        if found and self.downsample:
            return self.downsample.format(stage=int(found[1])) + found[2]
        found = BLOCK.fullmatch(name)
        if found:
            stage = int(found[1])
            prefix = self.block.format(stage=stage, stage_1=stage + 1, block=int(found[2]))
            for ours, theirs in self.parts.items():
                if found[3].startswith(ours):
                    return prefix + theirs + found[3][len(ours):]
        raise ConfigError(f"tensor '{name}' has no place in {self.model}")


TIMM_CONVNEXT = Names("timm's ConvNeXt", {"stem.": "stem.", "head_norm.": "head.norm.", "fc.": "head.fc."},
                      "stages.{stage}.downsample.", "stages.{stage}.blocks.{block}.",
                      {"gamma": "gamma", "conv_kxk.": "conv_dw.", "norm_kxk.": "norm.", "pwconv1.": "mlp.fc1.",
                       "pwconv2.": "mlp.fc2."})
# torchvision numbers its stages from 1 (layer1..layer4) and names the projection shortcut `downsample`.
TORCHVISION_RESNET = Names("torchvision's ResNet", {"stem.0.": "conv1.", "stem.1.": "bn1.", "fc.": "fc."}, None,
                           "layer{stage_1}.{block}.",
                           {"pwconv1.": "conv1.", "norm1.": "bn1.", "conv_kxk.": "conv2.", "norm_kxk.": "bn2.",
                            "pwconv2.": "conv3.", "norm2.": "bn3.", "shortcut.": "downsample."})
HUGGINGFACE_CONVNEXT = Names("Hugging Face's ConvNext",
                             {"stem.0.": "convnext.embeddings.patch_embeddings.",
                              "stem.1.": "convnext.embeddings.layernorm.", "head_norm.": "convnext.layernorm.",
                              "fc.": "classifier."},
                             "convnext.encoder.stages.{stage}.downsampling_layer.",
                             "convnext.encoder.stages.{stage}.layers.{block}.",
                             {"gamma": "layer_scale_parameter", "conv_kxk.": "dwconv.", "norm_kxk.": "layernorm.",
                              "pwconv1.": "pwconv1.", "pwconv2.": "pwconv2."})


# ---------------------------------------------------------------------------- before the named block
# Until the block had named parts, a stage was a Sequential (with separate downsampling, its downsampling
# layer first) and a block's three convs were `layers.<i>`, each a Sequential of conv, norm, activation.
LEGACY_STAGE_ITEM = re.compile(r"stages\.(\d+)\.(\d+)\.(.+)")
LEGACY_UNIT = re.compile(r"layers\.(\d)\.(\d)\.(.+)")


def is_legacy(names) -> bool:
    return any(LEGACY_STAGE_ITEM.fullmatch(name) for name in names)


def legacy_name(name: str, model: ModelConfig) -> str:
    """Today's name of a tensor named as this network named it before its block had named parts."""
    item = LEGACY_STAGE_ITEM.fullmatch(name)
    if not item:
        return name   # stem, head: unchanged
    stage, index, rest = int(item[1]), int(item[2]), item[3]
    separate = model.downsample == "separate" and stage > 0
    if separate and index == 0:
        return f"stages.{stage}.downsample.{rest}"
    block = f"stages.{stage}.blocks.{index - 1 if separate else index}."
    unit = LEGACY_UNIT.fullmatch(rest)
    if not unit:
        return block + rest   # gamma, shortcut.<i>: unchanged
    order = ("kxk", "1", "2") if model.spatial_first else ("1", "kxk", "2")
    part = order[int(unit[1])]
    conv, norm = ("conv_kxk", "norm_kxk") if part == "kxk" else (f"pwconv{part}", f"norm{part}")
    return f"{block}{conv if unit[2] == '0' else norm}.{unit[3]}"


def upgrade(state: dict, model: ModelConfig) -> dict:
    """A state_dict under today's names: one written before the named block is renamed, any other kept."""
    return {legacy_name(name, model): t for name, t in state.items()} if is_legacy(state) else state
