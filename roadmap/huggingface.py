"""A ConvNeXt run as a Hugging Face `transformers` folder: config.json, model.safetensors, preprocessor_config.json,
and README.md, its model card (the Hub's YAML header, then the run as its record tells it).

`transformers.ConvNextForImageClassification.from_pretrained(DIR)` loads it with every tensor in place and
computes the run's logits; `AutoImageProcessor.from_pretrained(DIR)` prepares an image as the run's evaluation
did, as far as its ConvNextImageProcessor can say it (docs/using.md: what differs). Writing the folder needs no
`transformers`: its files are plain JSON and safetensors.

Our tensor names are translated to theirs by name (names.HUGGINGFACE_CONVNEXT), never by position: a name with
no place in their ConvNext is an error naming it.
"""
from __future__ import annotations

import torch
import yaml
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .data.augment import EVAL_CROP_PCT
from .model import ModelConfig
from .names import HUGGINGFACE_CONVNEXT

HF_CONFIG, HF_WEIGHTS, HF_PREPROCESSOR = "config.json", "model.safetensors", "preprocessor_config.json"
HF_CARD = "README.md"   # the model card, which the Hub shows as the model's page
HF_FILES = (HF_WEIGHTS, HF_CONFIG, HF_PREPROCESSOR, HF_CARD)   # every file an export writes into its folder
PAPER = ('Zhuang Liu, Hanzi Mao, Chao-Yuan Wu, Christoph Feichtenhofer, Trevor Darrell, Saining Xie: "A ConvNet for '
         'the 2020s", CVPR 2022 ([arXiv:2201.03545](https://arxiv.org/abs/2201.03545))')
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


# ---------------------------------------------------------------------------- the model card
def card_header(record: dict) -> dict:
    """The card's YAML front matter, as the Hub reads it: library, task, tags, the dataset, and the run's own top-1
    and top-5 (model-index) on that dataset's evaluation split."""
    name = f"{record['roadmap']}/{record['step']}"
    metrics = [{"type": "accuracy", "name": f"{which} accuracy (%)", "value": record[key]}
               for which, key in (("top-1", "top1"), ("top-5", "top5")) if record.get(key) is not None]
    return {"library_name": "transformers", "pipeline_tag": "image-classification",
            "tags": ["image-classification", "convnext", "convnext-roadmap", record["roadmap"], record["step"]],
            "datasets": [record["data"]], "metrics": ["accuracy"],
            "model-index": [{"name": name, "results": [{
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"type": record["data"], "name": record["data"], "split": "evaluation"},
                "metrics": metrics}]}]}


def said(value, form: str = "{}") -> str:
    """A record's value in words; a field an older runner did not record says so."""
    return "not recorded" if value is None else form.format(value)


def card_measures(record: dict) -> list[tuple[str, str]]:
    """(measure, value) of the run, as its record has them."""
    size = record["config"]["scale"]["image_size"]
    return [("top-1 accuracy (%)", said(record.get("top1"))), ("top-5 accuracy (%)", said(record.get("top5"))),
            ("evaluation images", said(record.get("eval_images"), "{:,}")),
            ("training images", said(record.get("train_images"), "{:,}")),
            ("parameters", said(record.get("params"), "{:,}")),
            (f"GFLOPs at {size} px (multiply-accumulates of convs and linear layers, as the paper counts)",
             said(record.get("gflops"), "{:.4g}")),
            ("training wall time (s)", said(record.get("wall_s"), "{:.0f}")), ("device", said(record.get("device"))),
            ("torch, timm", f"{said(record.get('torch'))}, {said(record.get('timm'))}")]


def card_intro(record: dict) -> str:
    """Which step of which roadmap, what it changes, the paper and the paper's numbers for it."""
    paper = record.get("paper") or {}
    base = f" from its base step `{record['base']}`" if record.get("base") else ""
    numbers = ", ".join(f"{label} {paper[key]}" for label, key in (("top-1 (%)", "top1"), ("GFLOPs", "gflops"))
                        if paper.get(key) is not None)
    return (f"A network of the ConvNeXt roadmap, the ResNet -> ConvNeXt modernization of {PAPER}, trained step by "
            f"step as an ablation study. This one is step `{record['step']}` of roadmap `{record['roadmap']}`: "
            f"{said(record.get('title'))}, the change it makes{base}."
            + (f" The paper's numbers for this step (ImageNet-1k, 224 px): {numbers}." if numbers else ""))


LOAD_IT = """```python
from PIL import Image
from transformers import AutoImageProcessor, ConvNextForImageClassification

processor = AutoImageProcessor.from_pretrained("THIS_FOLDER")
model = ConvNextForImageClassification.from_pretrained("THIS_FOLDER").eval()
inputs = processor(images=Image.open("image.png").convert("RGB"), return_tensors="pt")
print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])
```

Give the processor RGB images. It resizes the shorter side (bicubic), then crops the center. The run's own
evaluation resized Fashion-MNIST, CIFAR and synthetic arrays bilinearly, and cropped an image folder's images
to their center square before resizing, so pixels can differ a little from those the top-1 above was measured on.
"""


def model_card(record: dict) -> str:
    """README.md of an export, as the Hub's model cards are written; every number in it is the run's record's."""
    scale = record["config"]["scale"]
    measures = "\n".join(f"| {name} | {value} |" for name, value in card_measures(record))
    resolved = yaml.safe_dump({"model": record["config"]["model"], "recipe": record.get("recipe"), "scale": scale},
                              sort_keys=False, default_flow_style=None)   # a list on one line
    classes = "\n".join(f"{i}. {name}" for i, name in enumerate(record["classes"]))
    return (f"---\n{yaml.safe_dump(card_header(record), sort_keys=False)}---\n\n"
            f"# `{record['roadmap']}/{record['step']}`, seed {record['seed']}: {said(record.get('title'))}\n\n"
            f"{card_intro(record)}\n\nTrained at scale `{record['scale']}` on `{record['data']}`; what it "
            f"measured:\n\n| measure | value |\n|---|---:|\n{measures}\n\n"
            f"## The network, the recipe and the scale, as resolved\n\n```yaml\n{resolved}```\n\n"
            f"## How it was trained\n\n```bash\npython {said(record.get('command'))}\n```\n\n"
            f"At git commit `{said(record.get('git_commit'))}` (a `-dirty` suffix: with changes not committed); "
            f"started {said(record.get('started'))}, finished {said(record.get('finished'))}.\n\n"
            f"## Classes\n\n{classes}\n\n## How to load it\n\n{LOAD_IT}")
