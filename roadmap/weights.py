"""Kept weights: a complete run's final state_dict, and what can be done with it.

A complete run writes <weights>/<roadmap>/<scale>/<data>/<step>/seed<k>.safetensors, a plain state_dict
(a safetensors file holds tensors and strings only, never pickled code), and its record names that file
and its sha256. Runs kept before wrote seed<k>.pt (torch.save), still read, with weights_only=True. From there:

- `load_kept` rebuilds the run's RoadmapNet with them (predict, evaluate, export);
- `export` writes them as a native file (a safetensors file whose metadata holds the run's config and
  class names; `load_native` rebuilds the network from it), under timm's ConvNeXt / torchvision's ResNet
  key names for a step whose file says it `equals` that model, or as a Hugging Face folder (huggingface.py);
- `fit_state` fits a weights file onto a step's network for fine-tuning (train.init_from).

Tensor names go to and from timm's, torchvision's and transformers' by name (names.py), every shape checked;
files written before the block's parts had names are renamed on reading (names.upgrade).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import types
import typing
from pathlib import Path

import torch
from torch import nn

from .config import SECTIONS, ConfigError, ModelConfig, Step, set_fields
from .fields import coerce, field_types
from .huggingface import HF_CARD, HF_CONFIG, HF_FILES, HF_PREPROCESSOR, HF_STEM, HF_WEIGHTS, convnext_problems, \
    huggingface_folder, model_card
from .model import RoadmapNet
from .names import HUGGINGFACE_CONVNEXT, TIMM_CONVNEXT, TORCHVISION_RESNET, upgrade
from .results import COMPLETE, Record, ResultsError, RunKey, atomic_write_bytes, data_slug, load_records, \
    text_bytes, write_output
from .steps import build_model

FORMATS = ("native", "timm", "torchvision", "huggingface")
# timm's ConvNeXt(patch_size=S) is ours at these stem strides: at 2 its stage 0 downsamples too (`stride = 2 if
# curr_stride == 2 or i > 0`), above 4 the total stride passes its output_stride of 32 and its last stages dilate.
TIMM_STEM_STRIDES = (1, 3, 4)
SAFETENSORS = ".safetensors"
NATIVE = {"roadmap": "native export"}   # in a native export's metadata, beside its config and classes
HEAD = ("fc.weight", "fc.bias")   # the classifier: re-initialised when a file's class count differs
# What must be as the step file says for a library model to compute what ours does; widths, depths,
# stem stride, kernel size and layer scale are passed to the library model, init and drop path do
# not change a trained network's outputs.
STRUCTURE = ("stem", "bottleneck", "ratio", "spatial_first", "depthwise", "groups", "act", "acts", "norm", "norms",
             "downsample")


# ---------------------------------------------------------------------------- keeping
def plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors as a file holds them: on the CPU, contiguous (channels_last -> plain)."""
    return {name: t.detach().cpu().contiguous() for name, t in state.items()}


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file; metadata["format"] "pt" as transformers expects of a PyTorch file, unless given."""
    from safetensors.torch import save

    return save(plain(state), metadata={"format": "pt", **(metadata or {})})


def torch_bytes(blob: dict) -> bytes:
    """A torch.save file of tensors and plain data (readable with weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    return buffer.getvalue()


def keep_weights(root: Path, key: RunKey, model: nn.Module) -> dict:
    """Write a run's final weights atomically; returns the record's keys that name them."""
    data = safetensors_bytes(model.state_dict())
    atomic_write_bytes(key.weights_path(root), data)
    return {"weights": key.weights_path().as_posix(), "weights_sha256": hashlib.sha256(data).hexdigest()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# What predict, evaluate and export read from a complete run's record: its fields (typed by results.Record) and,
# of its config, these sections' keys (typed by the sections' dataclasses, config.SECTIONS; () the whole section).
KEPT_FIELDS = ("weights", "weights_sha256", "classes", "config")
KEPT_CONFIG = {"model": (), "scale": ("image_size", "crop"), "data": ("workers", "synthetic_size", "synthetic_classes")}


def kept_problem(record: dict) -> str | None:
    """Why a complete run's record cannot serve its kept weights, or None: it names none (trained before
    weights were kept), or it lacks a field that using them reads (a damaged or hand-made record)."""
    if not record.get("weights"):
        return "its record names no weights (it was trained before weights were kept)"
    for name, annotation, value in kept_values(record):
        try:
            coerce(value, annotation, name, text_numbers=False)
        except ConfigError:
            return f"its record has no usable {name} ({type_words(annotation)}); it is damaged"
    if not record["classes"] or not all(isinstance(name, str) for name in record["classes"]):
        return "its record's classes are not a list of class names; it is damaged"
    return None


def kept_values(record: dict):
    """(dotted name, the type it must have, its value or None) for each of KEPT_FIELDS and KEPT_CONFIG, in the
    order they are checked: a section only once the config is known to be a mapping."""
    record_types = field_types(Record)
    for name in KEPT_FIELDS:
        yield name, not_none(record_types[name]), record.get(name)
    for section, keys in KEPT_CONFIG.items():
        values = record["config"].get(section)
        yield f"config.{section}", dict, values
        section_types = field_types(SECTIONS[section])
        for key in keys:
            yield f"config.{section}.{key}", not_none(section_types[key]), values.get(key)


def not_none(annotation):
    """A field's type less its None: what a record that is to be used must hold."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    return options[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation


def type_words(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(map(str, typing.get_args(annotation)))
    return f"a {annotation.__name__}"


def missing_weights(record: dict, root: Path) -> str | None:
    """Why a complete run's weights cannot be used, or None when its record names them and the file is there."""
    problem = kept_problem(record)
    if problem:
        return problem
    path = Path(root) / record["weights"]
    return None if path.is_file() else f"its weights {path} are missing"


# ---------------------------------------------------------------------------- finding and loading
def find_record(results: Path, roadmap: str, step: Step, scale: str, data: str | None, seed: int) -> dict:
    """The complete record of one run; `data` None means the only dataset that step was trained on."""
    found = [r for r in load_records(results, roadmap, scale, data) if r["step"] == step.id and r["seed"] == seed]
    where = f"{roadmap}/{step.id} seed {seed} at scale {scale}" + (f" on {data}" if data else "")
    if not found:
        raise ResultsError(f"no record of {where} under {results}; train it with "
                           f"'runner.py run --step {step.id} --scale {scale} --seed {seed}' or pass --results DIR")
    if len(found) > 1:
        raise ConfigError(f"{where} was trained on several datasets "
                          f"({', '.join(sorted(data_slug(r['data']) for r in found))}); pick one with --data")
    if found[0]["status"] != COMPLETE:
        raise ResultsError(f"{where} is {found[0]['status']}, not complete: it has no weights")
    problem = kept_problem(found[0])
    if problem:   # before anything reads the record's fields
        record = found[0]
        path = RunKey(record["roadmap"], record["scale"], record["data"], record["step"], seed).record_path(results)
        raise ResultsError(f"{where}: {problem}; delete {path} to train it again")
    return found[0]


def model_config(record: dict) -> ModelConfig:
    return set_fields(ModelConfig(), record["config"]["model"], "model", "record: ")


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a state_dict (.pt/.pth/.bin or .safetensors), or a native export."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}")
    try:
        if path.suffix == SAFETENSORS:
            from safetensors.torch import load_file
            blob = load_file(path)
        else:
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever the reason, one line: this is no weights file
        raise ConfigError(f"{path} is not a weights file torch can read safely ({type(err).__name__})") from None
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]   # a native export, or a training checkpoint
    if not isinstance(blob, dict) or not blob or not all(isinstance(t, torch.Tensor) for t in blob.values()):
        raise ConfigError(f"{path} holds no state_dict (a mapping of names to tensors)")
    return blob


def load_kept(record: dict, root: Path) -> RoadmapNet:
    """The network a complete run trained, with its kept weights, in eval mode."""
    why = missing_weights(record, root)
    if why:
        raise ResultsError(f"{record['step']} seed {record['seed']}: {why}; pass --weights DIR "
                           f"(by default weights/ inside the results folder)")
    path = Path(root) / record["weights"]
    if sha256_of(path) != record["weights_sha256"]:
        raise ResultsError(f"{path} is not the file its record names (sha256 differs); it was overwritten")
    config = model_config(record)
    return load_exactly(build_model(config, len(record["classes"])), upgrade(read_state(path), config), path)


def load_exactly(model: RoadmapNet, state: dict[str, torch.Tensor], path: Path) -> RoadmapNet:
    """`model` in eval mode with the tensors of the file at `path`, each in its place and of its shape; else one
    line naming the file and the first tensor that does not fit (torch's own error is dozens of lines)."""
    problem = misfit(model.state_dict(), state)
    if problem:
        raise ConfigError(f"{path} does not fit the network its run trained: {problem}")
    model.load_state_dict(state)
    return model.eval()


def misfit(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> str | None:
    """The first tensor of `theirs` that does not fit `ours` (by name, then shape), in words; None when all fit."""
    for name, tensor in ours.items():
        if name not in theirs:
            return f"it has no tensor '{name}'"
        if theirs[name].shape != tensor.shape:
            return f"its tensor '{name}' has shape {tuple(theirs[name].shape)}, the network needs {tuple(tensor.shape)}"
    extra = sorted(set(theirs) - set(ours))
    return f"its tensor '{extra[0]}' has no place in the network" if extra else None


def load_native(path: Path) -> tuple[RoadmapNet, dict, list[str]]:
    """A native export as (the exact network in eval mode, its run's config dict, its class names)."""
    state, config, classes = read_native(Path(path))
    model_cfg = set_fields(ModelConfig(), config["model"], "model", f"{path}: ")
    return load_exactly(build_model(model_cfg, len(classes)), upgrade(state, model_cfg), path), config, classes


def read_native(path: Path) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    """(state_dict, config, classes) of a native export: a safetensors file with them in its metadata, or a
    torch.save dict {state_dict, config, classes} as exports were written before."""
    not_native = f"{path} is not a native export (runner.py export --format native)"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    if path.suffix == SAFETENSORS:
        metadata = safetensors_metadata(path)
        if not NATIVE.items() <= metadata.items():
            raise ConfigError(not_native)
        return checked_native(read_state(path), *(metadata_json(metadata, key, path) for key in ("config", "classes")),
                              path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"{path} is not a weights file torch can read safely ({type(err).__name__})") from None
    if not isinstance(blob, dict) or not {"state_dict", "config", "classes"} <= set(blob):
        raise ConfigError(not_native)
    return checked_native(blob["state_dict"], blob["config"], blob["classes"], path)


def metadata_json(metadata: dict[str, str], key: str, path: Path):
    """A native export's metadata entry, read as the JSON it was written as."""
    try:
        return json.loads(metadata[key])
    except (KeyError, ValueError, RecursionError):   # absent, not JSON, nested too deeply to read
        raise ConfigError(f"{path} is a damaged native export: no readable '{key}' in its metadata") from None


def checked_native(state, config, classes, path: Path) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    """A native export's parts, each of the kind it must be; damage is one line naming the file."""
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        problem = "its state_dict is not a mapping of names to tensors"
    elif not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        problem = "its config has no model section"
    elif not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes):
        problem = "its classes are not a list of class names"
    else:
        return state, config, classes
    raise ConfigError(f"{path} is a damaged native export: {problem}")


def safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            return f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - whatever the reason, one line: this is no safetensors file
        raise ConfigError(f"{path} is not a safetensors file ({type(err).__name__})") from None


# ---------------------------------------------------------------------------- library models
def library_kind(equals: str | None) -> str | None:
    """'timm' or 'torchvision' for a step whose file says it equals one of their models."""
    if equals and equals.startswith("timm/convnext"):
        return "timm"
    if equals and equals.startswith("torchvision/resnet"):
        return "torchvision"
    return None


def library_model(kind: str, model: ModelConfig, num_classes: int) -> nn.Module:
    """timm's ConvNeXt (any width, stem stride TIMM_STEM_STRIDES) or torchvision's ResNet (its widths, stem stride
    4) with this network's shapes."""
    if kind == "timm":
        from timm.models.convnext import ConvNeXt
        if model.stem_stride not in TIMM_STEM_STRIDES:
            raise ConfigError(f"timm's ConvNeXt computes this network at stem stride 1, 3 or 4 alone, not "
                              f"{model.stem_stride} (at 2 its first stage downsamples as well, above 4 its last "
                              f"stages dilate instead of downsampling); use --format huggingface or native")
        return ConvNeXt(depths=model.depths, dims=model.widths, num_classes=num_classes, patch_size=model.stem_stride,
                        kernel_sizes=model.kernel_size, ls_init_value=model.layer_scale or None)
    from torchvision.models.resnet import Bottleneck, ResNet
    if tuple(model.widths) != (64, 128, 256, 512) or model.stem_stride != 4:
        raise ConfigError(f"torchvision's ResNet has widths (64, 128, 256, 512) and stem stride 4, this run "
                          f"{tuple(model.widths)} and {model.stem_stride} (a scale with width_mult 1 and no "
                          f"stem_stride keeps them); use --format native")
    return ResNet(Bottleneck, list(model.depths), num_classes=num_classes)


def library_names(kind: str, model: ModelConfig, ours: dict[str, torch.Tensor]) -> dict[str, str]:
    """{our tensor name: the library's}, by name (names.py), every tensor of both models placed, every shape checked."""
    names = TIMM_CONVNEXT if kind == "timm" else TORCHVISION_RESNET
    theirs = library_model(kind, model, ours["fc.weight"].shape[0]).state_dict()
    pairs = {name: names.of(name) for name in ours}
    unplaced = sorted(set(theirs) - set(pairs.values()))
    if unplaced:
        raise ConfigError(f"{kind}'s tensor '{unplaced[0]}' has no place in this network: it is not that model")
    for name, their_name in pairs.items():
        if their_name not in theirs or ours[name].shape != theirs[their_name].shape:
            found = f"{tuple(theirs[their_name].shape)}" if their_name in theirs else "no such tensor"
            raise ConfigError(f"'{name}' {tuple(ours[name].shape)} does not fit {kind}'s '{their_name}' "
                              f"({found}): this network is not that model")
    return pairs


def check_format(fmt: str, step: Step) -> None:
    """A library format only for a step that equals that library's model (checked before any record is read)."""
    if fmt == "huggingface":
        check_convnext(step.model, f"step {step.id}")
    elif fmt != "native" and library_kind(step.equals) != fmt:
        said = f"says it equals {step.equals}" if step.equals else "names no library model it equals"
        other = f" or --format {library_kind(step.equals)}" if library_kind(step.equals) else ""
        raise ConfigError(f"step {step.id} is not a {fmt} model (its step file {said}); use --format native{other}")


def check_convnext(model: ModelConfig, what: str) -> None:
    problems = convnext_problems(model)
    if problems:
        raise ConfigError(f"{what} is not a ConvNeXt, which Hugging Face's ConvNext needs: {'; '.join(problems)}; "
                          f"use --format native")


def export_files(fmt: str, to: Path) -> list[Path]:
    """Every file an export to `to` writes: that file, or each file of a Hugging Face folder."""
    return [Path(to) / name for name in HF_FILES] if fmt == "huggingface" else [Path(to)]


def check_target(fmt: str, to: Path) -> None:
    """Where an export goes: a native export is a .safetensors file, a Hugging Face export a folder."""
    to = Path(to)
    if fmt == "native" and to.suffix != SAFETENSORS:
        raise ConfigError(f"a native export is a safetensors file: name it {to.with_suffix(SAFETENSORS)}, not {to}")
    if fmt == "huggingface" and to.exists() and not to.is_dir():
        raise ConfigError(f"--format huggingface writes a folder, and {to} is a file; pick another --to")


def check_exportable(kind: str, step: Step, model: ModelConfig) -> None:
    """A library format only for a step that equals that library's model, with the step's structure."""
    check_format(kind, step)
    if kind == "huggingface":
        check_convnext(model, f"this run of {step.id}")
        return
    for key in STRUCTURE:
        if getattr(model, key) != getattr(step.model, key):
            raise ConfigError(f"this run set model.{key}={getattr(model, key)!r} (the step file: "
                              f"{getattr(step.model, key)!r}), which {step.equals} cannot express; use --format native")


def export(record: dict, step: Step, root: Path, to: Path, fmt: str) -> Path:
    """Write a run's kept weights to `to` in `fmt`; nothing is written when the format does not fit."""
    to, model = Path(to), model_config(record)
    check_target(fmt, to)
    if fmt != "native":
        check_exportable(fmt, step, model)
    state = load_kept(record, root).state_dict()
    if fmt == "huggingface":
        tensors, config, preprocessor = huggingface_folder(record, model, state)
        for name, data in ((HF_WEIGHTS, safetensors_bytes(tensors)), (HF_CONFIG, json_bytes(config)),
                           (HF_PREPROCESSOR, json_bytes(preprocessor)), (HF_CARD, text_bytes(model_card(record)))):
            write_export(to / name, data)
        return to
    if fmt == "native":
        write_export(to, safetensors_bytes(state, {**NATIVE, "config": json.dumps(record["config"]),
                                                   "classes": json.dumps(record["classes"])}))
        return to
    names = library_names(fmt, model, state)
    theirs = {names[name]: tensor for name, tensor in state.items()}
    write_export(to, safetensors_bytes(theirs) if to.suffix == SAFETENSORS else torch_bytes(plain(theirs)))
    return to


def json_bytes(blob: dict) -> bytes:
    return (json.dumps(blob, indent=2) + "\n").encode()


def write_export(path: Path, data: bytes) -> None:
    write_output(path, data, "--to")


# ---------------------------------------------------------------------------- fine-tuning
def fit_state(path: Path, model: RoadmapNet, step: Step, model_cfg: ModelConfig) -> tuple[dict, dict]:
    """A weights file's tensors under this network's names, for load_state_dict(strict=False), and what the
    record says about it. Our own names match by name (renamed first if written before the named block), transformers' ConvNext's through
    names.HUGGINGFACE_CONVNEXT, a
    library's (timm/torchvision, for a step that equals one) through `library_names`. The classifier stays freshly
    initialised when the class count differs; any other tensor that does not fit is a ConfigError naming it."""
    where = f"train.init_from {path}"
    theirs, ours = upgrade(read_state(path), model_cfg), model.state_dict()
    try:
        names = source_names(set(theirs), ours, step, model_cfg)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    fitted, head = {}, "loaded"
    for name, tensor in ours.items():
        source = names[name]
        if source not in theirs:
            raise ConfigError(f"{where}: has no tensor '{source}' (its names are neither this network's nor "
                              f"{step.equals or 'a library model it equals'}'s)")
        found = theirs[source]
        if name in HEAD and found.shape[1:] == tensor.shape[1:] and found.shape[0] != tensor.shape[0]:
            head = f"re-initialised ({found.shape[0]} classes in the file, {tensor.shape[0]} here)"
            continue
        if found.shape != tensor.shape:
            raise ConfigError(f"{where}: tensor '{source}' has shape {tuple(found.shape)}, step {step.id} needs "
                              f"{tuple(tensor.shape)} for '{name}'")
        fitted[name] = found
    extra = sorted(set(theirs) - set(names.values()))
    if extra:
        raise ConfigError(f"{where}: tensor '{extra[0]}' has no place in step {step.id}'s network")
    return fitted, {"path": str(path), "sha256": sha256_of(Path(path)), "head": head}


def source_names(theirs: set[str], ours: dict[str, torch.Tensor], step: Step, model_cfg: ModelConfig) -> dict[str, str]:
    """{our tensor name: the file's}: ours where the file has them all, else transformers' ConvNext names (by name),
    else those of the library model the step equals (`library_names`)."""
    if not set(ours) <= theirs:
        if HF_STEM in theirs:
            return {name: HUGGINGFACE_CONVNEXT.of(name) for name in ours}
        if library_kind(step.equals):
            return library_names(library_kind(step.equals), model_cfg, ours)
    return {name: name for name in ours}
# ---------------------------------------------------------------------------- files a record names
# No command overwrites or deletes a file a record names: the record, its run's kept weights (whose sha256 it
# holds), the weights its run was fine-tuned from.
def named_files(results: Path, weights: Path) -> list[tuple[Path, str]]:
    """(path, what it is) of every file a usable record under `results` names, its weights under `weights`."""
    named = []
    for record in load_records(results):
        run = f"{record['step']} seed {record['seed']}"
        key = RunKey(record["roadmap"], record["scale"], record["data"], record["step"], record["seed"])
        named.append((key.record_path(results), f"the record of {run}"))
        if isinstance(record.get("weights"), str):
            named.append((Path(weights) / record["weights"], f"the kept weights of {run}"))
        if isinstance(record.get("init_from"), dict) and isinstance(record["init_from"].get("path"), str):
            named.append((Path(record["init_from"]["path"]), f"the weights {run} was fine-tuned from"))
    return named


def check_not_named(path: Path, results: Path, weights: Path, option: str) -> None:
    """Refuse to write `path` (given by `option`) when it is a file a record names: writing would destroy the
    evidence of a run (a kept weights file that no longer matches its sha256 can never be used again)."""
    for named, what in named_files(results, weights):
        if same_file(Path(path), named):
            raise ResultsError(f"{option} {path} is {what}: the runner never overwrites a file a record names; "
                               f"pick another path")


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one file, or writing `a` (a rename over it) would replace `b`."""
    if a.parent.resolve() / a.name == b.parent.resolve() / b.name:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:   # either is missing: not one file
        return False


def drop_checkpoint(path: Path, record: dict | None) -> None:
    """Delete a finished run's checkpoint, unless the file there is the weights its record names (a checkpoints
    folder that is, or was, the weights folder: both name their files seed<k>.pt under the same path)."""
    path = Path(path)
    if not path.is_file():
        return
    if record and isinstance(record.get("weights_sha256"), str) and sha256_of(path) == record["weights_sha256"]:
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as err:   # a read-only folder: the run is recorded; the file only takes room
        print(f"warning: cannot delete the finished run's checkpoint {path} ({err.strerror}); delete it yourself",
              file=sys.stderr)
