"""A ConvNeXt run as a Hugging Face `transformers` folder: config.json, model.safetensors, preprocessor_config.json.

`transformers.ConvNextForImageClassification.from_pretrained(DIR)` loads it with every tensor in place and
computes the run's logits; `AutoImageProcessor.from_pretrained(DIR)` prepares an image as the run's evaluation
did, as far as its ConvNextImageProcessor can say it (docs/using.md: what differs). Writing the folder needs no
`transformers`: its files are plain JSON and safetensors.

Our tensor names are translated to theirs by name (names.HUGGINGFACE_CONVNEXT), never by position: a name with
no place in their ConvNext is an error naming it.
"""
from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .data.augment import EVAL_CROP_PCT
from .model import ModelConfig
from .names import HUGGINGFACE_CONVNEXT

HF_CONFIG, HF_WEIGHTS, HF_PREPROCESSOR = "config.json", "model.safetensors", "preprocessor_config.json"
# What transformers' ConvNext computes, fixed in its code (modeling_convnext.py: ConvNextEmbeddings, ConvNextStage,
# ConvNextLayer with a 7x7 depthwise conv, one LayerNorm, Linear 4x, one GELU): a run must have these values.
CONVNEXT = {"stem": "patchify", "bottleneck": "inverted", "ratio": 4, "spatial_first": True, "depthwise": True,
            "kernel_size": 7, "act": "gelu", "acts": "one", "norm": "ln", "norms": "one", "downsample": "separate"}
SAID = {"bn": "BatchNorm", "resnet": "the ResNet stem", "in_block": "in-block downsampling", "relu": "ReLU",
        "classic": "the classic bottleneck"}   # a value that is a known roadmap step's, in words
BICUBIC = 3   # PIL.Image.Resampling.BICUBIC, as an image processor's `resample` names it
LAYER_NORM_EPS = 1e-6   # every LayerNorm of ours; transformers' config default (1e-12) would change the head's

HF_STEM = HUGGINGFACE_CONVNEXT.of("stem.0.weight")   # a tensor every transformers ConvNext file holds: how fit_state knows one


def convnext_problems(model: ModelConfig) -> list[str]:
    """What keeps this network from being transformers' ConvNext, in words; [] when nothing does."""
    problems = []
    for key, theirs in CONVNEXT.items():
        ours = getattr(model, key)
        if ours != theirs:
            said = f" ({SAID[ours]})" if ours in SAID else ""
            problems.append(f"{key} {ours!r}{said}, not {theirs!r}")
    return problems


def huggingface_config(model: ModelConfig, classes: list[str], image_size: int) -> dict:
    """config.json: the network's shape and labels; every other key takes transformers' default."""
    return {"architectures": ["ConvNextForImageClassification"], "model_type": "convnext", "num_channels": 3,
            "num_stages": len(model.depths), "depths": list(model.depths), "hidden_sizes": list(model.widths),
            "patch_size": model.stem_stride, "hidden_act": "gelu", "layer_norm_eps": LAYER_NORM_EPS,
            "layer_scale_init_value": model.layer_scale, "drop_path_rate": 0.0, "image_size": image_size,
            "id2label": {str(i): name for i, name in enumerate(classes)},
            "label2id": {name: i for i, name in enumerate(classes)}}


def huggingface_preprocessor(image_size: int, crop: str) -> dict:
    """preprocessor_config.json: ConvNextImageProcessor as the run's evaluation sees an image: the shorter side
    resized (bicubic) to image_size / crop_pct, a center crop of image_size, ImageNet's mean and std. An 'rrc'
    run keeps timm's 0.875 border, a 'pad' run none."""
    return {"image_processor_type": "ConvNextImageProcessor", "do_resize": True,
            "size": {"shortest_edge": image_size}, "crop_pct": EVAL_CROP_PCT if crop == "rrc" else 1.0,
            "resample": BICUBIC, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(IMAGENET_DEFAULT_MEAN), "image_std": list(IMAGENET_DEFAULT_STD)}


def huggingface_folder(record: dict, model: ModelConfig,
                       state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(model.safetensors' tensors, config.json, preprocessor_config.json) of a run of a ConvNeXt."""
    scale = record["config"]["scale"]
    tensors = {HUGGINGFACE_CONVNEXT.of(name): tensor for name, tensor in state.items()}
    return (tensors, huggingface_config(model, record["classes"], scale["image_size"]),
            huggingface_preprocessor(scale["image_size"], scale["crop"]))
