"""Datasets for the roadmap: fashion-mnist | cifar10 | cifar100 | imagefolder:PATH | synthetic.

`open_source` finds a dataset, cuts it to the scale's subsets and, when it is held in memory, decodes
it: once per invocation. `build_data` serves it to one run as a `Data` whose `train_batches(epoch)`
and `eval_batches()` yield normalized float32 images and int64 labels on the run's device, sharded
across ranks. Every user mistake about data raises DataError with one line that names it.

  sources.py   Fashion-MNIST, CIFAR, synthetic: the Source and its splits
  folders.py   image folders: listing, fingerprint, reading files
  augment.py   the in-memory path's augmentation on the device, and its seeding
  serving.py   Data: in memory or streaming
  checks.py    DataError and the checks of sizes, memory and unreadable files
"""
from __future__ import annotations

import torch

from ..config import DataConfig, ScaleConfig
from ..recipe import Recipe
from .augment import derive_seed, stored_size
from .checks import DataError, check_batch, check_batch_fits, check_scale, check_streamed_batch
from .folders import IMAGE_EXTENSIONS, scan_image_folder
from .serving import Data, InMemoryData, StreamingData, read_eval_images, ready_to_serve
from .sources import Source, load_cifar, load_fashion_mnist, make_synthetic

SPECS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic")


def load_source(data: DataConfig, image_size: int, made: bool = True) -> Source:
    """The dataset `data.spec` names, whole, as found (synthetic data is made at `image_size`; not `made`: its
    sizes alone)."""
    spec = data.spec
    if spec == "fashion-mnist":
        return load_fashion_mnist(data.root)
    if spec in ("cifar10", "cifar100"):
        return load_cifar(spec, data.root)
    if spec.startswith("imagefolder:"):
        return scan_image_folder(spec.partition(":")[2])
    if spec == "synthetic":
        return make_synthetic(data.synthetic_size, data.synthetic_classes, image_size, made)
    raise DataError(f"unknown dataset '{spec}'; choose one of {', '.join(SPECS)}")


def open_source(data: DataConfig, scale: ScaleConfig, *, rank: int = 0, eval_only: bool = False,
                listed: bool = False) -> Source:
    """The dataset ready to serve every run of an invocation: found, cut to the scale's subsets and, in
    memory, decoded; every mistake in it is a DataError by now.

    `eval_only` (evaluating kept weights) leaves the training split empty: nothing of it is decoded. `listed` (a dry
    run) decodes and makes nothing: the sizes a plan needs, and the memory check, cost a listing."""
    check_scale(scale)
    source = load_source(data, scale.image_size, made=not listed)
    source = source.subsets(0 if eval_only else scale.train_subset, scale.eval_subset)
    return ready_to_serve(source, stored_size(scale.crop, scale.image_size), data, rank, decode=not listed)


def check_fits(source: Source, scale: ScaleConfig, batch_size: int, rank: int, world_size: int,
               eval_only: bool = False) -> None:
    """What one run asks of an opened source: its batch, over its ranks, fits the data and the memory."""
    check_batch(batch_size, rank, world_size)
    if not eval_only:
        check_batch_fits(batch_size, world_size, len(source.train))
    if not source.in_memory:
        check_streamed_batch(batch_size, stored_size(scale.crop, scale.image_size))


def build_data(data: DataConfig, scale: ScaleConfig, *, batch_size: int, recipe: Recipe | None = None,
               device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1, seed: int = 0,
               drop_last: bool = True, eval_only: bool = False, source: Source | None = None) -> Data:
    """One run's data: `source` as opened for the invocation and checked against this batch (plan.ready), else
    opened and checked now; served on `device` with the recipe's augmentation (none without a recipe);
    `batch_size` is this process's."""
    if source is None:
        source = open_source(data, scale, rank=rank, eval_only=eval_only)
        check_fits(source, scale, batch_size, rank, world_size, eval_only)
    augment = {"image_size": scale.image_size, "crop": scale.crop,
               "rand_augment": recipe.rand_augment if recipe else "",
               "random_erasing": recipe.random_erasing if recipe else 0.0}
    common = {"batch_size": batch_size, "device": torch.device(device), "rank": rank, "world_size": world_size,
              "seed": seed, "drop_last": drop_last}
    if source.in_memory:
        return InMemoryData(source, **augment, **common)
    return StreamingData(source, **augment, workers=data.workers, strict=data.strict, **common)


# The names the rest of the project uses; the parts live in the modules above.
__all__ = ["SPECS", "IMAGE_EXTENSIONS", "Data", "DataError", "Source", "build_data", "check_fits", "derive_seed",
           "load_source", "open_source", "read_eval_images"]
