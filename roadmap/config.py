"""Configs: dataclasses for the model, recipe, scale, data and training; YAML step files with
`base:` chains; strict `--set section.key=value` overrides.

A step file (steps/<roadmap>/NN_<id>.yaml) holds its `base:`, its `title:`, whether it is
`adopted`, the paper's numbers, and only the model/recipe keys that change. Roadmap order is the
order of the file names. Every mistake raises ConfigError with one line that names it.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .errors import ConfigError
from .fields import bounded, check_fields, closest, coerce, set_fields
from .model import ModelConfig
from .results import REPO_ROOT, path_part

# The steps and scales shipped with the project; ROADMAP_STEPS_DIR=/my/steps runner.py ... points
# elsewhere, read (and checked) where it is used: see steps_root.
STEPS_DIR = REPO_ROOT / "steps"
ROADMAPS = ("resnet50", "resnet200", "reverse", "convnext", "isotropic")


Device = Literal["auto", "cpu", "cuda"]


@dataclass
class RecipeConfig:
    """A training recipe; `name` picks the preset (recipe.py), any other key set here overrides it."""
    name: Literal["classic", "modern"] = "modern"
    optimizer: Literal["sgd", "adamw"] | None = None
    lr: float | None = bounded(None, above=0)           # learning rate at batch `lr_batch`; scaled linearly
    lr_batch: int | None = bounded(None, low=1)
    weight_decay: float | None = bounded(None, low=0)
    momentum: float | None = bounded(None, low=0, high=1)   # SGD momentum, or AdamW's beta1
    beta2: float | None = bounded(None, low=0, high=1)
    schedule: Literal["step", "cosine"] | None = None
    warmup_epochs: float | None = bounded(None, low=0)  # at the recipe's own epoch count; keeps its share
    step_every: float | None = bounded(None, above=0)   # step schedule: decay every this many epochs (at recipe length)
    step_gamma: float | None = bounded(None, above=0)
    epochs: int | None = bounded(None, low=1)           # the recipe's own length (300 / 90); the scale sets the real one
    label_smoothing: float | None = bounded(None, low=0, high=1)
    mixup: float | None = bounded(None, low=0)
    cutmix: float | None = bounded(None, low=0)
    rand_augment: str | None = None                     # timm auto_augment string, '' for none
    random_erasing: float | None = bounded(None, low=0, high=1)
    ema: bool | None = None


@dataclass
class ScaleConfig:
    """How big a run is; applied the same way to every step."""
    name: str = "custom"
    data: str | None = None                             # default dataset spec for this scale
    image_size: int = bounded(224, low=8)               # no network fits fewer pixels than its total stride (>= 8)
    epochs: int = bounded(300, low=1)                   # modern-recipe epochs
    classic_epochs: int = bounded(90, low=1)            # classic-recipe epochs
    lr_mult: float = bounded(1.0, above=0)              # on the modern recipe's (linearly scaled) learning rate
    classic_lr_mult: float = bounded(1.0, above=0)      # on the classic recipe's
    batch_size: int = bounded(4096, low=1)              # global batch (gradient accumulation makes up the rest)
    classic_batch_size: int | None = bounded(None, low=1)   # the classic recipe's global batch; None = batch_size
    regularization: float = bounded(1.0, low=0, high=1)     # strength of the modern recipe's augmentation and
                                                        # regularisation: RandAugment magnitude, Mixup/CutMix alpha,
                                                        # erasing, drop path
    micro_batch: int = bounded(256, low=1)              # largest batch per device and forward pass
    crop: Literal["rrc", "pad"] = "rrc"                 # rrc: RandomResizedCrop (ImageNet) | pad: pad 4 + random crop
    width_mult: float = bounded(1.0, above=0)
    depth_mult: float = bounded(1.0, above=0)
    stem_stride: int | None = bounded(None, low=1)      # the paper's stem stride 4 becomes this (small images);
                                                        # another stem's stride scales with it (scaled_model)
    train_subset: int | None = bounded(None, low=1)     # use only this many training images
    eval_subset: int | None = bounded(None, low=1)


@dataclass
class DataConfig:
    spec: str | None = None                 # fashion-mnist | cifar10 | cifar100 | imagefolder:PATH | synthetic
    root: str | None = None                 # where torchvision datasets live (or are downloaded)
    workers: int = bounded(4, low=0)
    in_memory: bool | None = None           # decode once and hold in memory; None = when small
    strict: bool = False                    # refuse unreadable images instead of skipping them
    synthetic_size: int = bounded(512, low=1)   # images in the synthetic training set
    synthetic_classes: int = bounded(10, low=2)


@dataclass
class TrainConfig:
    seed: int = bounded(0, low=0, high=2**63 - 1)   # a 64-bit integer, as JSON readers and torch take it; it names files
    device: Device = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"    # auto: bf16 on CUDA, off on the CPU
    channels_last: bool = True              # NHWC activations: on a CPU the depthwise steps train 1.7-2.4x faster,
                                            # none slower (docs/speed.md); on CUDA, cuDNN's fast depthwise kernels
    compile: bool = False
    flush_denormal: bool = False            # on a CPU, denormal floats as zero (x86 FTZ/DAZ); off: docs/speed.md
    deterministic: bool = False
    eval_every: int = bounded(1, low=1)
    init_from: str | None = None            # fine-tune: start from these weights (runner.py export, timm, torchvision)
    log: Literal["none", "tensorboard"] = "none"   # tensorboard: event files beside the record (tblog.py)


@dataclass
class PaperNumbers:
    top1: float | None = None
    top1_std: float | None = None
    gflops: float | None = None
    note: str | None = None


@dataclass
class Step:
    """One step of a roadmap, as loaded from steps/<roadmap>/NN_<id>.yaml with its bases resolved."""
    id: str
    roadmap: str
    order: int
    title: str
    adopted: bool
    base: str | None
    paper: PaperNumbers
    model: ModelConfig
    recipe: RecipeConfig
    path: str = ""
    equals: str | None = None   # the library model this step is exactly ('timm/convnext_tiny'), if any
    reverts: str | None = None  # reverse roadmap: 'roadmap/step' of the forward step whose change this undoes


@dataclass
class RunConfig:
    """Everything one training run needs; saved, resolved, next to its result."""
    roadmap: str
    step: str
    model: ModelConfig
    recipe: RecipeConfig
    scale: ScaleConfig
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)


STEP_FILE_KEYS = {"base", "title", "adopted", "paper", "model", "recipe", "equals", "reverts"}
SECTIONS = {"model": ModelConfig, "recipe": RecipeConfig, "scale": ScaleConfig, "data": DataConfig, "train": TrainConfig}


# ---------------------------------------------------------------------------- overrides
def parse_overrides(pairs: list[str]) -> dict[str, dict]:
    """['model.kernel_size=5', ...] -> {'model': {'kernel_size': 5}}; values parsed as YAML."""
    out: dict[str, dict] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set needs section.key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        section, _, name = key.strip().partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"--set key '{key}' must be one of {', '.join(s + '.KEY' for s in SECTIONS)}"
                              f"{closest(section, SECTIONS)}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, RecursionError):   # not YAML, or too deep for it: the text itself
            value = raw
        out.setdefault(section, {})[name] = value
    return out


# ---------------------------------------------------------------------------- YAML files
def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(err, 'problem', err)}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:   # '[[[[...' deep enough to exhaust the parser's stack
        raise ConfigError(f"{path}: nested too deeply to read") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a step file must be a mapping of keys, not {type(data).__name__}")
    return data


def steps_root(steps_dir: Path | None = None) -> Path:
    """The folder of roadmaps and scales: `steps_dir`, else ROADMAP_STEPS_DIR, else the project's steps/.

    Checked here, where it is used, so that a mistake in the variable is one line, not an import-time crash."""
    if steps_dir is not None:
        return Path(steps_dir)
    named = os.environ.get("ROADMAP_STEPS_DIR")
    if not named:  # unset or empty: the shipped steps
        return STEPS_DIR
    root = Path(named).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise ConfigError(f"ROADMAP_STEPS_DIR={named} {what}; point it at a folder of roadmaps "
                          f"(<roadmap>/NN_<id>.yaml) and scales/, or unset it")
    return root


def step_files(roadmap: str, steps_dir: Path | None = None) -> dict[str, Path]:
    """{step id: file} in roadmap order; the id is the file name after its NN_ order prefix."""
    steps_dir = steps_root(steps_dir)
    if roadmap not in available_roadmaps(steps_dir):
        raise ConfigError(f"unknown roadmap '{roadmap}'; choose from {', '.join(available_roadmaps(steps_dir))}"
                          f"{closest(roadmap, available_roadmaps(steps_dir))}")
    files = {}
    for path in sorted((steps_dir / roadmap).glob("*.yaml")):
        prefix, _, step_id = path.stem.partition("_")
        if not prefix.isdigit() or not step_id:
            raise ConfigError(f"{path}: step files are named NN_<id>.yaml (NN gives the roadmap order)")
        path_part(step_id, f"{path}: step id")   # it names the folder of the step's runs
        if step_id in files:
            raise ConfigError(f"{path}: step id '{step_id}' is used twice in roadmap '{roadmap}'")
        files[step_id] = path
    return files


def available_roadmaps(steps_dir: Path | None = None) -> list[str]:
    steps_dir = steps_root(steps_dir)
    return sorted(p.name for p in steps_dir.iterdir() if p.is_dir() and p.name != "scales" and any(p.glob("*.yaml")))


def load_roadmap(roadmap: str, steps_dir: Path | None = None) -> list[Step]:
    """Every step of a roadmap, in order, with bases resolved."""
    steps_dir = steps_root(steps_dir)
    files = step_files(roadmap, steps_dir)
    raw = {step_id: read_yaml(path) for step_id, path in files.items()}
    return [_resolve(step_id, order, raw, files, roadmap) for order, step_id in enumerate(files)]


def load_step(roadmap: str, step_id: str, steps_dir: Path | None = None) -> Step:
    return find_step(load_roadmap(roadmap, steps_dir), roadmap, step_id)


def find_step(steps: list[Step], roadmap: str, step_id: str) -> Step:
    """The step `step_id` of a loaded roadmap; an unknown id fails with a suggestion."""
    for step in steps:
        if step.id == step_id:
            return step
    ids = [step.id for step in steps]
    raise ConfigError(f"unknown step '{step_id}' in roadmap '{roadmap}'{closest(step_id, ids)}; "
                      f"'runner.py list --roadmap {roadmap}' shows them all")


def _chain(step_id: str, raw: dict, files: dict) -> list[str]:
    """The step and its bases, root first; a missing base or a cycle is an error."""
    chain = [step_id]
    while (base := raw[chain[-1]].get("base")) is not None:
        where = files[chain[-1]]
        if not isinstance(base, str):
            raise ConfigError(f"{where}: base must be a step id, not {base!r}")
        if base not in raw:
            raise ConfigError(f"{where}: base '{base}' is not a step of this roadmap{closest(base, raw)}")
        if base in chain:
            raise ConfigError(f"{where}: base cycle {' -> '.join(chain + [base])}")
        chain.append(base)
    return chain[::-1]


def _resolve(step_id: str, order: int, raw: dict, files: dict, roadmap: str) -> Step:
    path = files[step_id]
    own = raw[step_id]
    for key in own:
        if key not in STEP_FILE_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'{closest(str(key), STEP_FILE_KEYS)}")
    if not isinstance(own.get("title"), str):
        raise ConfigError(f"{path}: needs a 'title:' (a string)")
    model, recipe = ModelConfig(), RecipeConfig()
    for ancestor in _chain(step_id, raw, files):
        spec = raw[ancestor]
        where = f"{files[ancestor]}: "
        set_fields(model, spec.get("model") or {}, "model", where)
        recipe_spec = spec.get("recipe") or {}
        if isinstance(recipe_spec, str):
            recipe_spec = {"name": recipe_spec}
        set_fields(recipe, recipe_spec, "recipe", where)
    adopted = coerce(own.get("adopted", True), bool, f"{path}: adopted")
    paper = set_fields(PaperNumbers(), own.get("paper") or {}, "paper", f"{path}: ")
    for key, what in (("equals", "a library model name such as timm/convnext_tiny"),
                      ("reverts", "a forward step as roadmap/step, such as resnet50/gelu")):
        if own.get(key) is not None and not isinstance(own[key], str):
            raise ConfigError(f"{path}: {key} must be {what}, not {own[key]!r}")
    return Step(step_id, roadmap, order, own["title"], adopted, own.get("base"), paper, model, recipe, str(path),
                own.get("equals"), own.get("reverts"))


def available_scales(steps_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (steps_root(steps_dir) / "scales").glob("*.yaml"))


def load_scale(name: str, steps_dir: Path | None = None) -> ScaleConfig:
    steps_dir = steps_root(steps_dir)
    # A name, not a path: it picks a file of scales/ and names the folder of the scale's runs.
    own = "; a scale of your own is a file NAME.yaml in the scales/ folder of ROADMAP_STEPS_DIR, passed as NAME"
    path = steps_dir / "scales" / f"{path_part(name, 'scale', own)}.yaml"
    if not path.is_file():
        names = available_scales(steps_dir)
        raise ConfigError(f"unknown scale '{name}'; choose from {', '.join(names)}{closest(name, names)}")
    return set_fields(ScaleConfig(name=name), read_yaml(path), "scale", f"{path}: ")


# The stem stride of the paper's four-stage networks (ResNet's 7x7/2 + pool, ConvNeXt's 4x4 patchify):
# a scale's stem_stride replaces it, and a step with another stem stride keeps its ratio to it.
PAPER_STEM_STRIDE = 4


def scaled_stem_stride(model: ModelConfig, scale: ScaleConfig) -> int:
    """The scale's stem stride for the paper's 4, in proportion for other strides: the isotropic ConvNeXt's
    16x16 patches become 4x the scale's stride, so its one stage keeps the size of ConvNeXt's third."""
    if scale.stem_stride is None:
        return model.stem_stride
    stride, rest = divmod(model.stem_stride * scale.stem_stride, PAPER_STEM_STRIDE)
    if rest or stride < 1:
        raise ConfigError(f"the {scale.name} scale's stem stride {scale.stem_stride} (for the paper's "
                          f"{PAPER_STEM_STRIDE}) gives no whole stride for model.stem_stride {model.stem_stride}")
    return stride


def scaled_model(model: ModelConfig, scale: ScaleConfig) -> ModelConfig:
    """Apply a scale's width/depth multipliers and stem stride, identically for every step."""
    def width(w):
        # Keep widths divisible by the group count so grouped convs stay valid.
        return max(model.groups, round(w * scale.width_mult / model.groups) * model.groups)
    return dataclasses.replace(
        model,
        depths=tuple(max(1, round(d * scale.depth_mult)) for d in model.depths),
        widths=tuple(width(w) for w in model.widths),
        stem_stride=scaled_stem_stride(model, scale),
        drop_path=model.drop_path * scale.regularization,
    )


def normalized_data_spec(spec: str | None) -> str | None:
    """'imagefolder:/data/x/' and 'imagefolder:/data/./x' are 'imagefolder:/data/x': one dataset, one spec."""
    if spec and spec.startswith("imagefolder:") and spec != "imagefolder:":
        return "imagefolder:" + os.path.normpath(spec.split(":", 1)[1])
    return spec


def build_run_config(roadmap: str, step_id: str, scale_name: str, data_spec: str | None,
                     seed: int, overrides: dict[str, dict], steps_dir: Path | None = None) -> RunConfig:
    """Step + scale + data + overrides, resolved into the exact config of one run."""
    return resolve_run_config(load_step(roadmap, step_id, steps_dir), scale_name, data_spec, seed, overrides,
                              steps_dir)


def resolve_run_config(step: Step, scale_name: str, data_spec: str | None, seed: int, overrides: dict[str, dict],
                       steps_dir: Path | None = None) -> RunConfig:
    """build_run_config for a step already loaded (the planner loads a roadmap once, not once per run)."""
    steps_dir = steps_root(steps_dir)
    scale = load_scale(scale_name, steps_dir)
    set_fields(scale, overrides.get("scale", {}), "scale")
    data = DataConfig(spec=normalized_data_spec(data_spec or scale.data))
    set_fields(data, overrides.get("data", {}), "data")
    if data.spec is None:
        raise ConfigError(f"the '{scale_name}' scale has no default dataset: pass --data (e.g. imagefolder:/path/to/imagenet)")
    train = TrainConfig(seed=seed)
    set_fields(train, overrides.get("train", {}), "train")
    model = set_fields(scaled_model(step.model, scale), overrides.get("model", {}), "model")
    recipe = set_fields(dataclasses.replace(step.recipe), overrides.get("recipe", {}), "recipe")   # the step's stays
    return RunConfig(step.roadmap, step.id, model, recipe, scale, data, train)


def check_config(cfg: RunConfig) -> None:
    """Every section of a run against its fields' types, choices and ranges (values set in code included)."""
    for section in SECTIONS:
        check_fields(getattr(cfg, section), section)


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
