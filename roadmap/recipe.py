"""The two training recipes of the roadmap, built from timm's parts.

classic: torchvision's ResNet-50 reference recipe (step 0).
modern:  the paper's Table 5 (step 1 on): AdamW, cosine with warm-up, RandAugment, Mixup, CutMix,
         random erasing, label smoothing; stochastic depth and layer scale are model arguments.
A run rescales each recipe to its scale: epochs and global batch come from the scale (the classic
recipe may keep a batch of its own: torchvision trained at 256), warm-up and step decay keep their
share of the schedule, the learning rate scales linearly with the global batch (times the scale's
lr_mult), and the scale's `regularization` (0..1) shrinks the modern recipe's augmentation and
regularisation together, as timm's recipes for smaller models and shorter schedules do: RandAugment
magnitude, Mixup and CutMix alphas and the erasing probability (drop path: config.scaled_model).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from .config import ConfigError, RecipeConfig, ScaleConfig

PRESETS = {
    "classic": dict(optimizer="sgd", lr=0.1, lr_batch=256, weight_decay=1e-4, momentum=0.9, beta2=0.999,
                    schedule="step", warmup_epochs=0.0, step_every=30.0, step_gamma=0.1, epochs=90,
                    label_smoothing=0.0, mixup=0.0, cutmix=0.0, rand_augment="", random_erasing=0.0, ema=False),
    "modern": dict(optimizer="adamw", lr=4e-3, lr_batch=4096, weight_decay=0.05, momentum=0.9, beta2=0.999,
                   schedule="cosine", warmup_epochs=20.0, step_every=30.0, step_gamma=0.1, epochs=300,
                   label_smoothing=0.1, mixup=0.8, cutmix=1.0, rand_augment="rand-m9-mstd0.5-inc1",
                   random_erasing=0.25, ema=False),
}
OPTIMIZERS = {"sgd": "momentum", "adamw": "adamw"}   # timm's 'sgd' is Nesterov; torchvision's is not


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A recipe with every value filled in, rescaled to one run."""
    name: str
    optimizer: str
    batch_size: int           # this run's global batch
    lr: float                 # at this run's global batch
    weight_decay: float
    momentum: float
    beta2: float
    schedule: str
    epochs: int
    warmup_epochs: float
    step_every: float
    step_gamma: float
    label_smoothing: float
    mixup: float
    cutmix: float
    rand_augment: str
    random_erasing: float
    ema: bool


# The scale keys the classic recipe alone reads (resolve): a run of any other is the same run whatever they say.
CLASSIC_SCALE_KEYS = ("classic_epochs", "classic_lr_mult", "classic_batch_size")


def unread_scale_keys(recipe_name: str | None) -> tuple[str, ...]:
    """The scale keys a run of this recipe never reads (plan.run_identity leaves them out)."""
    return () if recipe_name == "classic" else CLASSIC_SCALE_KEYS


def resolve(recipe: RecipeConfig, scale: ScaleConfig) -> Recipe:
    """Preset + explicit keys, rescaled to the scale's epochs and batch."""
    values = dict(PRESETS[recipe.name])   # name, optimizer and schedule are checked choices (RecipeConfig)
    values.update({k: v for k, v in dataclasses.asdict(recipe).items() if v is not None and k != "name"})
    if values["ema"]:
        raise ConfigError("recipe.ema is not supported: the roadmap runs disable EMA (it hurts BatchNorm models)")
    classic = recipe.name == "classic"
    epochs = scale.classic_epochs if classic else scale.epochs
    lr_mult = scale.classic_lr_mult if classic else scale.lr_mult
    batch = (scale.classic_batch_size or scale.batch_size) if classic else scale.batch_size
    if epochs < 1:
        raise ConfigError(f"the scale gives {epochs} epochs for the {recipe.name} recipe; it needs at least 1")
    share = epochs / values.pop("epochs")
    strength = scale.regularization
    resolved = Recipe(
        name=recipe.name, epochs=epochs, batch_size=batch,
        lr=values.pop("lr") * batch / values.pop("lr_batch") * lr_mult,
        warmup_epochs=values.pop("warmup_epochs") * share,
        step_every=values.pop("step_every") * share,
        mixup=values.pop("mixup") * strength, cutmix=values.pop("cutmix") * strength,
        random_erasing=values.pop("random_erasing") * strength,
        rand_augment=scaled_rand_augment(values.pop("rand_augment"), strength),
        **values,
    )
    for name, value in dataclasses.asdict(resolved).items():
        # Finite keys can still multiply to infinity (lr 1e300 x lr_mult 1e300): it must not reach training.
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"the {recipe.name} recipe's {name} comes to {value} at this scale; lower the keys "
                              f"that multiply into it")
    return resolved


def scaled_rand_augment(spec: str, strength: float) -> str:
    """'rand-m9-mstd0.5-inc1' at strength 0.25 -> 'rand-m2-mstd0.5-inc1' (timm takes whole magnitudes);
    '' when nothing is left."""
    if not spec or strength == 1.0:
        return spec
    parts = spec.split("-")
    for i, part in enumerate(parts):
        if part.startswith("m") and not part.startswith("mstd") and not part.startswith("mmax"):
            magnitude = round(float(part[1:]) * strength)
            if magnitude <= 0:
                return ""
            parts[i] = f"m{magnitude}"
    return "-".join(parts)


def make_optimizer(model: torch.nn.Module, recipe: Recipe, fused: bool = False) -> torch.optim.Optimizer:
    kwargs = {"betas": (recipe.momentum, recipe.beta2)} if recipe.optimizer == "adamw" else {}
    if fused and recipe.optimizer == "adamw":
        kwargs["fused"] = True  # one kernel for all parameters on CUDA
    # The modern recipe takes no weight decay on norms and biases (official code, timm); the
    # torchvision reference recipe decays every parameter.
    return create_optimizer_v2(model, opt=OPTIMIZERS[recipe.optimizer], lr=recipe.lr,
                               weight_decay=recipe.weight_decay, momentum=recipe.momentum,
                               filter_bias_and_bn=recipe.name != "classic", **kwargs)


def make_scheduler(optimizer, recipe: Recipe, updates_per_epoch: int):
    """Per-update schedule, so fractional warm-up epochs (small scales) still warm up smoothly.

    The official shape: a linear warm-up from 0, then cosine over the remaining updates (timm's
    warmup_prefix; the official utils.cosine_scheduler)."""
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.schedule, num_epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
        warmup_lr=0.0, warmup_prefix=True, min_lr=1e-6 if recipe.schedule == "cosine" else 0.0,
        decay_epochs=recipe.step_every, decay_rate=recipe.step_gamma,
        step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    return scheduler


def make_mixup(recipe: Recipe, num_classes: int) -> Mixup | None:
    """timm's Mixup/CutMix (it also applies the label smoothing); None when the recipe has neither."""
    if recipe.mixup <= 0 and recipe.cutmix <= 0:
        return None
    return Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, label_smoothing=recipe.label_smoothing,
                 num_classes=num_classes)


def make_loss(recipe: Recipe, mixup: Mixup | None) -> torch.nn.Module:
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if recipe.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return torch.nn.CrossEntropyLoss()
