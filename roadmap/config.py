"""Configs: dataclasses for the model, recipe, scale, data and training; YAML step files with
`base:` chains; strict `--set section.key=value` overrides.

A step file (steps/<roadmap>/NN_<id>.yaml) holds its `base:`, its `title:`, whether it is
`adopted`, the paper's numbers, and only the model/recipe keys that change. Roadmap order is the
order of the file names. Every mistake raises ConfigError with one line that names it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .errors import UserError

# The steps and scales shipped with the project; ROADMAP_STEPS_DIR=/my/steps runner.py ... points
# elsewhere, read (and checked) where it is used: see steps_root.
STEPS_DIR = Path(__file__).resolve().parent.parent / "steps"
ROADMAPS = ("resnet50", "resnet200", "reverse", "convnext")


class ConfigError(UserError):
    """A user mistake in a config, a step file or an override: shown as one line, exit 2."""


@dataclass
class ModelConfig:
    """The constructor arguments of roadmap.model.RoadmapNet (see its docstring)."""
    depths: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: str = "resnet"
    stem_stride: int = 4
    bottleneck: str = "classic"
    ratio: int = 4
    spatial_first: bool = False
    depthwise: bool = False
    groups: int = 1
    kernel_size: int = 3
    act: str = "relu"
    acts: str = "all"
    norm: str = "bn"
    norms: str = "all"
    downsample: str = "in_block"
    layer_scale: float = 0.0
    drop_path: float = 0.0
    init: str = "torchvision"


@dataclass
class RecipeConfig:
    """A training recipe; `name` picks the preset (recipe.py), any other key set here overrides it."""
    name: str = "modern"
    optimizer: str | None = None            # sgd | adamw
    lr: float | None = None                 # learning rate at batch `lr_batch`; scaled linearly
    lr_batch: int | None = None
    weight_decay: float | None = None
    momentum: float | None = None           # SGD momentum, or AdamW's beta1
    beta2: float | None = None
    schedule: str | None = None             # step | cosine
    warmup_epochs: float | None = None      # at the recipe's own epoch count; keeps its share
    step_every: float | None = None         # step schedule: decay every this many epochs (at recipe length)
    step_gamma: float | None = None
    epochs: int | None = None               # the recipe's own length (300 / 90); the scale sets the real one
    label_smoothing: float | None = None
    mixup: float | None = None
    cutmix: float | None = None
    rand_augment: str | None = None         # timm auto_augment string, '' for none
    random_erasing: float | None = None
    ema: bool | None = None


@dataclass
class ScaleConfig:
    """How big a run is; applied the same way to every step."""
    name: str = "custom"
    data: str | None = None                 # default dataset spec for this scale
    image_size: int = 224
    epochs: int = 300                       # modern-recipe epochs
    classic_epochs: int = 90                # classic-recipe epochs
    lr_mult: float = 1.0                    # on the modern recipe's (linearly scaled) learning rate
    classic_lr_mult: float = 1.0            # on the classic recipe's
    batch_size: int = 4096                  # global batch (gradient accumulation makes up the rest)
    classic_batch_size: int | None = None   # the classic recipe's global batch; None = batch_size
    regularization: float = 1.0             # strength of the modern recipe's augmentation and regularisation:
                                            # RandAugment magnitude, Mixup/CutMix alpha, erasing, drop path
    micro_batch: int = 256                  # largest batch per device and forward pass
    crop: str = "rrc"                       # rrc: RandomResizedCrop (ImageNet) | pad: pad 4 + random crop (32 px)
    width_mult: float = 1.0
    depth_mult: float = 1.0
    stem_stride: int | None = None          # overrides the model's stem stride (small images)
    train_subset: int | None = None         # use only this many training images
    eval_subset: int | None = None


@dataclass
class DataConfig:
    spec: str | None = None                 # fashion-mnist | cifar10 | cifar100 | imagefolder:PATH | synthetic
    root: str | None = None                 # where torchvision datasets live (or are downloaded)
    workers: int = 4
    in_memory: bool | None = None           # decode once and hold in memory; None = when small
    strict: bool = False                    # refuse unreadable images instead of skipping them
    synthetic_size: int = 512               # images in the synthetic training set
    synthetic_classes: int = 10


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"                    # auto | cpu | cuda
    amp: str = "auto"                       # auto (bf16 on CUDA) | bf16 | fp16 | off
    channels_last: bool | None = None       # None = on CUDA
    compile: bool = False
    deterministic: bool = False
    eval_every: int = 1
    init_from: str | None = None            # fine-tune: start from these weights (runner.py export, timm, torchvision)


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
FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
SECTIONS = {"model": ModelConfig, "recipe": RecipeConfig, "scale": ScaleConfig, "data": DataConfig, "train": TrainConfig}


# ---------------------------------------------------------------------------- typed values
def _closest(name: str, options) -> str:
    match = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def coerce(value, annotation, where: str):
    """Check `value` against a dataclass field type; ints widen to floats, lists become tuples."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing), {})  # noqa: S307 - our own annotations only
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {value!r}")
        return tuple(coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return finite(float(value), where)
    if annotation is float and isinstance(value, str) and FLOAT_RE.fullmatch(value.strip()):
        return finite(float(value), where)  # YAML 1.1 reads '1e-3' (no dot) as a string
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation in (int, str) and isinstance(value, annotation) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where} must be {getattr(annotation, '__name__', annotation)}, not {value!r}")


def finite(value: float, where: str) -> float:
    """No config number means anything as NaN or infinity (YAML's .nan, .inf, or 1e999)."""
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, not {value}")
    return value


def update_dataclass(obj, values: dict, section: str, origin: str = ""):
    """Set `values` on dataclass `obj`, strictly: unknown keys and wrong types are errors.

    `origin` ("file.yaml: ") prefixes the message so the user knows where to look."""
    if not isinstance(values, dict):
        raise ConfigError(f"{origin}'{section}' must be a mapping of keys to values, not {values!r}")
    known = {f.name: f for f in fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{origin}unknown key '{section}.{key}'{_closest(str(key), known)}")
        setattr(obj, key, coerce(value, known[key].type, f"{origin}{section}.{key}"))
    return obj


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
                              f"{_closest(section, SECTIONS)}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
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
                          f"{_closest(roadmap, available_roadmaps(steps_dir))}")
    files = {}
    for path in sorted((steps_dir / roadmap).glob("*.yaml")):
        prefix, _, step_id = path.stem.partition("_")
        if not prefix.isdigit() or not step_id:
            raise ConfigError(f"{path}: step files are named NN_<id>.yaml (NN gives the roadmap order)")
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
    steps_dir = steps_root(steps_dir)
    for step in load_roadmap(roadmap, steps_dir):
        if step.id == step_id:
            return step
    ids = list(step_files(roadmap, steps_dir))
    raise ConfigError(f"unknown step '{step_id}' in roadmap '{roadmap}'{_closest(step_id, ids)}; "
                      f"'runner.py list --roadmap {roadmap}' shows them all")


def _chain(step_id: str, raw: dict, files: dict) -> list[str]:
    """The step and its bases, root first; a missing base or a cycle is an error."""
    chain = [step_id]
    while (base := raw[chain[-1]].get("base")) is not None:
        where = files[chain[-1]]
        if not isinstance(base, str):
            raise ConfigError(f"{where}: base must be a step id, not {base!r}")
        if base not in raw:
            raise ConfigError(f"{where}: base '{base}' is not a step of this roadmap{_closest(base, raw)}")
        if base in chain:
            raise ConfigError(f"{where}: base cycle {' -> '.join(chain + [base])}")
        chain.append(base)
    return chain[::-1]


def _resolve(step_id: str, order: int, raw: dict, files: dict, roadmap: str) -> Step:
    path = files[step_id]
    own = raw[step_id]
    for key in own:
        if key not in STEP_FILE_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'{_closest(str(key), STEP_FILE_KEYS)}")
    if not isinstance(own.get("title"), str):
        raise ConfigError(f"{path}: needs a 'title:' (a string)")
    model, recipe = ModelConfig(), RecipeConfig()
    for ancestor in _chain(step_id, raw, files):
        spec = raw[ancestor]
        where = f"{files[ancestor]}: "
        update_dataclass(model, spec.get("model") or {}, "model", where)
        recipe_spec = spec.get("recipe") or {}
        if isinstance(recipe_spec, str):
            recipe_spec = {"name": recipe_spec}
        update_dataclass(recipe, recipe_spec, "recipe", where)
    adopted = coerce(own.get("adopted", True), bool, f"{path}: adopted")
    paper = update_dataclass(PaperNumbers(), own.get("paper") or {}, "paper", f"{path}: ")
    for key, what in (("equals", "a library model name such as timm/convnext_tiny"),
                      ("reverts", "a forward step as roadmap/step, such as resnet50/gelu")):
        if own.get(key) is not None and not isinstance(own[key], str):
            raise ConfigError(f"{path}: {key} must be {what}, not {own[key]!r}")
    return Step(step_id, roadmap, order, own["title"], adopted, own.get("base"), paper, model, recipe, str(path),
                own.get("equals"), own.get("reverts"))


def load_scale(name: str, steps_dir: Path | None = None) -> ScaleConfig:
    steps_dir = steps_root(steps_dir)
    path = steps_dir / "scales" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (steps_dir / "scales").glob("*.yaml"))
        raise ConfigError(f"unknown scale '{name}'; choose from {', '.join(names)}{_closest(name, names)}")
    return update_dataclass(ScaleConfig(name=name), read_yaml(path), "scale", f"{path}: ")


def scaled_model(model: ModelConfig, scale: ScaleConfig) -> ModelConfig:
    """Apply a scale's width/depth multipliers and stem stride, identically for every step."""
    def width(w):
        # Keep widths divisible by the group count so grouped convs stay valid.
        return max(model.groups, round(w * scale.width_mult / model.groups) * model.groups)
    return dataclasses.replace(
        model,
        depths=tuple(max(1, round(d * scale.depth_mult)) for d in model.depths),
        widths=tuple(width(w) for w in model.widths),
        stem_stride=scale.stem_stride or model.stem_stride,
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
    steps_dir = steps_root(steps_dir)
    step = load_step(roadmap, step_id, steps_dir)
    scale = load_scale(scale_name, steps_dir)
    update_dataclass(scale, overrides.get("scale", {}), "scale")
    data = DataConfig(spec=normalized_data_spec(data_spec or scale.data))
    update_dataclass(data, overrides.get("data", {}), "data")
    if data.spec is None:
        raise ConfigError(f"the '{scale_name}' scale has no default dataset: pass --data (e.g. imagefolder:/path/to/imagenet)")
    train = TrainConfig(seed=seed)
    update_dataclass(train, overrides.get("train", {}), "train")
    model = update_dataclass(scaled_model(step.model, scale), overrides.get("model", {}), "model")
    recipe = update_dataclass(step.recipe, overrides.get("recipe", {}), "recipe")
    return RunConfig(roadmap, step.id, model, recipe, scale, data, train)


# (section, key, lowest allowed, highest allowed, inclusive low): values a run cannot use.
VALUE_RANGES = [
    ("scale", "image_size", 1, None, True), ("scale", "epochs", 1, None, True),
    ("scale", "classic_epochs", 1, None, True), ("scale", "batch_size", 1, None, True),
    ("scale", "micro_batch", 1, None, True), ("scale", "width_mult", 0, None, False),
    ("scale", "depth_mult", 0, None, False), ("scale", "lr_mult", 0, None, False),
    ("scale", "classic_lr_mult", 0, None, False), ("scale", "stem_stride", 1, None, True),
    ("scale", "classic_batch_size", 1, None, True), ("scale", "regularization", 0, 1, True),
    ("scale", "train_subset", 1, None, True), ("scale", "eval_subset", 1, None, True),
    ("data", "workers", 0, None, True), ("data", "synthetic_size", 1, None, True),
    ("data", "synthetic_classes", 2, None, True), ("train", "eval_every", 1, None, True),
    ("train", "seed", 0, None, True), ("model", "ratio", 1, None, True),
    ("model", "layer_scale", 0, None, True), ("model", "drop_path", 0, 1, True),
    ("recipe", "lr", 0, None, False), ("recipe", "weight_decay", 0, None, True),
    ("recipe", "warmup_epochs", 0, None, True), ("recipe", "label_smoothing", 0, 1, True),
    ("recipe", "mixup", 0, None, True), ("recipe", "cutmix", 0, None, True),
    ("recipe", "random_erasing", 0, 1, True), ("recipe", "lr_batch", 1, None, True),
    ("recipe", "momentum", 0, 1, True), ("recipe", "beta2", 0, 1, True), ("recipe", "step_every", 0, None, False),
    ("recipe", "step_gamma", 0, None, False), ("recipe", "epochs", 1, None, True),
]


def check_ranges(cfg: RunConfig) -> None:
    """Numbers no run can use (batch 0, negative multipliers, ...) stop before anything is written."""
    for section, key, low, high, inclusive in VALUE_RANGES:
        value = getattr(getattr(cfg, section), key)
        if value is None:
            continue
        too_low = value < low if inclusive else value <= low
        if too_low or (high is not None and value > high):
            bound = f">= {low}" if inclusive else f"> {low}"
            limit = f"{bound} and <= {high}" if high is not None else bound
            raise ConfigError(f"{section}.{key} must be {limit}, not {value}")
    if cfg.scale.crop not in ("rrc", "pad"):
        raise ConfigError(f"scale.crop must be rrc or pad, not {cfg.scale.crop!r}")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
