"""Serving a run's batches: `Data`, what the training loop sees, in two kinds.

- in memory (small sets: Fashion-MNIST, CIFAR, synthetic, small folders): every image is decoded
  once into a uint8 tensor on the device and augmented per batch there (augment.py), which keeps a
  GPU fed without CPU workers;
- streaming (ImageNet-sized folders): a DataLoader with timm's PIL transforms in worker processes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

from ..config import DataConfig
from .augment import EVAL_CROP_PCT, DeviceTrainAugment, crop_padding, Normalize, center_crop, derive_seed, \
    seeded_global_rngs, stored_size
from .checks import DataError, check_held_in_memory, check_no_class_lost, report_unreadable
from .folders import decode_file, decode_files, open_rgb
from .sources import Source, Split

IN_MEMORY_LIMIT_BYTES = 2 * 1024 ** 3   # decoded train + eval sets below this stay in memory
MAX_REPLACEMENTS = 16                   # unreadable files in a row tolerated while streaming
UNREADABLE = -1                         # the label of a streamed evaluation image that could not be read
Batch = tuple[torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------- what is served
def ready_to_serve(source: Source, size: int, data: DataConfig, rank: int, decode: bool = True) -> Source:
    """The source as every run of an invocation is served it: in memory (data.in_memory, else when it is
    small), its files decoded at the stored size `size` (arrays stay as they are: each run makes its tensors
    of them); streaming, as listed. Either way unreadable files are refused when strict, else skipped with
    one warning (streaming: once a pass has met them all, StreamingData.to_device). Without `decode` (a dry run) it is checked against memory, and served as listed."""
    in_memory = data.in_memory if data.in_memory is not None else fits_in_memory(source, size)
    if in_memory:
        check_held_in_memory(len(source.train) + len(source.eval), size)
    if not decode:
        return dataclasses.replace(source, in_memory=in_memory)
    if in_memory:
        train, evals = (decoded_for_memory(split, size, data.workers, data.strict, rank)
                        for split in (source.train, source.eval))
    else:
        train, evals = source.train, source.eval
        for split in (train, evals):
            if data.strict:
                report_unreadable(split, True, rank)
    return dataclasses.replace(source, train=train, eval=evals, in_memory=in_memory)


def fits_in_memory(source: Source, size: int) -> bool:
    return (len(source.train) + len(source.eval)) * 3 * size * size < IN_MEMORY_LIMIT_BYTES


def decoded_for_memory(split: Split, size: int, workers: int, strict: bool, rank: int) -> Split:
    if split.paths is None:
        return split
    decoded = decode_files(split, size, workers)
    report_unreadable(decoded, strict, rank)
    check_no_class_lost(split, decoded)
    return decoded


# ---------------------------------------------------------------------------- uint8 tensors
def pixels_to_tensor(pixels: np.ndarray, size: int, chunk: int = 4096) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, 3, size, size) uint8; bilinear (antialiased) resize, once, in chunks."""
    out = torch.empty(len(pixels), 3, size, size, dtype=torch.uint8)
    for start in range(0, len(pixels), chunk):
        part = torch.from_numpy(pixels[start:start + chunk]).permute(0, 3, 1, 2)
        if part.shape[-1] != size or part.shape[-2] != size:
            part = F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            part = part.round().clamp(0, 255).to(torch.uint8)
        out[start:start + len(part)] = part.expand(-1, 3, -1, -1)      # grayscale -> 3 channels
    return out


def read_eval_images(paths: list[str], image_size: int, crop: str,
                     from_files: bool) -> tuple[torch.Tensor, list[str], list[str]]:
    """Image files as a run's eval path saw its own images: resized to the stored size by PIL (bicubic) as an
    image folder's are, or else as tensors (bilinear, antialiased) as an array dataset's (Fashion-MNIST, CIFAR,
    synthetic) are; grayscale -> 3 channels, center crop, normalisation. Returns (images, the paths read,
    'path (reason)' of those that could not be)."""
    size = stored_size(crop, image_size)
    images, read, failures = [], [], []
    for path in paths:
        pixels = decode_file(path, size if from_files else None)
        if isinstance(pixels, str):
            failures.append(pixels)
            continue
        images.append(pixels_to_tensor(pixels[None].copy(), size))   # a copy: PIL's arrays are read-only
        read.append(path)
    if not images:
        return torch.zeros(0, 3, image_size, image_size), read, failures
    return Normalize(torch.device("cpu"))(center_crop(torch.cat(images), image_size)), read, failures


# ---------------------------------------------------------------------------- the Data interface
@dataclass
class Batches:
    """One pass of (images, targets) batches for this rank; len() is known before iterating."""
    length: int
    make_iterator: Callable[[], Iterator[Batch]]

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Batch]:
        return self.make_iterator()


class Data:
    """The data of one run as the training loop sees it; `build_data` makes one.

    Training shards follow DistributedSampler with drop_last: one permutation per (seed, epoch), shared by
    all ranks, cut to a multiple of world_size, rank r takes every world_size-th index from r. Eval shards
    are strided too but nothing is dropped or padded, so summed counts cover every eval image once."""
    in_memory: bool

    def __init__(self, source: Source, *, batch_size: int, device: torch.device, rank: int, world_size: int,
                 seed: int, drop_last: bool):
        self.classes, self.identity = source.classes, source.identity()
        self.train_size, self.eval_size = len(source.train), len(source.eval)
        self.skipped = len(source.train.skipped) + len(source.eval.skipped)
        self.batch_size, self.device = batch_size, device
        self.rank, self.world_size, self.seed, self.drop_last = rank, world_size, seed, drop_last

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        order = torch.randperm(self.train_size, generator=generator)
        per_rank = self.train_size // self.world_size
        return order[self.rank:per_rank * self.world_size:self.world_size]

    def eval_order(self) -> torch.Tensor:
        return torch.arange(self.rank, self.eval_size, self.world_size)

    def steps_per_epoch(self) -> int:
        per_rank = self.train_size // self.world_size
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def eval_steps(self) -> int:
        return math.ceil(len(self.eval_order()) / self.batch_size)

    def train_batches(self, epoch: int) -> Batches:
        return Batches(self.steps_per_epoch(), lambda: self.iterate_train(epoch))

    def eval_batches(self) -> Batches:
        return Batches(self.eval_steps(), self.iterate_eval)

    def iterate_train(self, epoch: int) -> Iterator[Batch]:
        raise NotImplementedError

    def iterate_eval(self) -> Iterator[Batch]:
        raise NotImplementedError


class InMemoryData(Data):
    """Every image held as uint8 on the device (decoded once, when the source was opened); augmentation per
    batch, on the device."""
    in_memory = True

    def __init__(self, source: Source, *, image_size: int, crop: str, rand_augment: str, random_erasing: float,
                 **common):
        super().__init__(source, **common)
        size, device = stored_size(crop, image_size), self.device
        self.train_images = pixels_to_tensor(source.train.pixels, size).to(device)
        self.train_targets = torch.from_numpy(source.train.targets).to(device)
        self.eval_images = pixels_to_tensor(source.eval.pixels, size).to(device)
        self.eval_targets = torch.from_numpy(source.eval.targets).to(device)
        self.image_size = image_size
        self.augment = DeviceTrainAugment(crop, image_size, rand_augment, random_erasing, device)
        self.normalize = Normalize(device)

    def iterate_train(self, epoch: int) -> Iterator[Batch]:
        order = self.train_order(epoch).to(self.device)
        for step in range(self.steps_per_epoch()):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            with seeded_global_rngs(derive_seed(self.seed, epoch, self.rank, step), self.device):
                images = self.augment(self.train_images[index])
            yield images, self.train_targets[index]

    def iterate_eval(self) -> Iterator[Batch]:
        order = self.eval_order().to(self.device)
        for index in order.split(self.batch_size):
            yield self.normalize(center_crop(self.eval_images[index], self.image_size)), self.eval_targets[index]


# ---------------------------------------------------------------------------- streaming
def streaming_transforms(crop: str, image_size: int, rand_augment: str, erasing: float) -> tuple[Callable, Callable]:
    """timm's PIL pipelines: (train, eval). Color jitter stays off: neither recipe of the paper uses it."""
    rand_augment = rand_augment or None
    if crop == "rrc":
        train = create_transform(image_size, is_training=True, auto_augment=rand_augment, color_jitter=None,
                                 re_prob=erasing, re_mode="pixel", interpolation="bicubic")
        return train, create_transform(image_size, is_training=False, interpolation="bicubic", crop_pct=EVAL_CROP_PCT)
    fill = tuple(round(255 * m) for m in IMAGENET_DEFAULT_MEAN)
    steps = [T.Resize(image_size, T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
             T.RandomCrop(image_size, padding=crop_padding(image_size)), T.RandomHorizontalFlip()]
    if rand_augment:
        hparams = {"img_mean": fill, "translate_const": int(image_size * 0.45),
                   "interpolation": Image.Resampling.BICUBIC}
        steps.append(rand_augment_transform(rand_augment, hparams))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
    if erasing:
        steps.append(RandomErasing(probability=erasing, mode="pixel", device="cpu"))
    return T.Compose(steps), create_transform(image_size, is_training=False, interpolation="bicubic", crop_pct=1.0)


class StreamingDataset(torch.utils.data.Dataset):
    """Items keyed by (index, epoch); the augmentation is seeded from (seed, epoch, index), so a sample
    looks the same whatever the worker count. An unreadable file is reported with the item, since workers cannot
    raise cleanly; in training (`replace`) the next readable one takes its place, so a batch keeps its size (strict:
    a blank image); in evaluation a blank image labelled UNREADABLE, which StreamingData leaves out: top-1 counts
    the readable images alone, as in memory."""

    def __init__(self, split: Split, transform: Callable, seed: int, strict: bool, replace: bool = True):
        self.split, self.transform, self.seed, self.strict, self.replace = split, transform, seed, strict, replace

    def __len__(self) -> int:
        return len(self.split)

    def load(self, index: int) -> Image.Image:
        if self.split.paths is None:
            pixels = self.split.pixels[index]
            return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
        return open_rgb(self.split.paths[index])

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        failures = []
        with seeded_global_rngs(derive_seed(self.seed, epoch, index)):
            for attempt in range(MAX_REPLACEMENTS if self.replace and not self.strict else 1):
                i = (index + attempt) % len(self)
                try:
                    return self.transform(self.load(i)), int(self.split.targets[i]), "\n".join(failures)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                    failures.append(f"{self.split.paths[i]} ({err})")
            # Strict, evaluation, or MAX_REPLACEMENTS bad files in a row: a blank stand-in; the failures travel with it.
            target = int(self.split.targets[index]) if self.replace else UNREADABLE
            return self.transform(Image.new("RGB", (8, 8))), target, "\n".join(failures)


class ShardSampler(torch.utils.data.Sampler):
    """Yields (index, epoch) for this rank's shard; set_epoch reaches persistent workers this way."""

    def __init__(self, order: Callable[[int], torch.Tensor], epoch: int = 0):
        self.order, self.epoch = order, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.order(self.epoch))

    def __iter__(self):
        return iter([(int(i), self.epoch) for i in self.order(self.epoch)])


class StreamingData(Data):
    """A DataLoader over files (or arrays) with timm's PIL transforms in worker processes."""
    in_memory = False

    def __init__(self, source: Source, *, image_size: int, crop: str, rand_augment: str, random_erasing: float,
                 workers: int, strict: bool, **common):
        super().__init__(source, **common)
        self.strict, self.unreadable = strict, set()
        train_transform, eval_transform = streaming_transforms(crop, image_size, rand_augment, random_erasing)
        self.train_sampler = ShardSampler(self.train_order)
        self.train_loader = self.loader(StreamingDataset(source.train, train_transform, self.seed, strict),
                                        self.train_sampler, workers, self.drop_last)
        self.eval_loader = self.loader(StreamingDataset(source.eval, eval_transform, self.seed, strict, replace=False),
                                       ShardSampler(lambda _: self.eval_order()), workers, False)

    def loader(self, dataset, sampler, workers: int, drop_last: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None)

    def iterate_train(self, epoch: int) -> Iterator[Batch]:
        self.train_sampler.set_epoch(epoch)
        return self.to_device(self.train_loader)

    def iterate_eval(self) -> Iterator[Batch]:
        return self.to_device(self.eval_loader)

    def to_device(self, loader) -> Iterator[Batch]:
        """The loader's batches on the device, less the evaluation images that could not be read; once the pass
        ends (or stops), its unreadable files in one warning for the split, as in memory (checks.report_unreadable)."""
        met = []
        try:
            for images, targets, failures in loader:
                met += self.note_unreadable([line for text in failures if text for line in text.split("\n")])
                readable = targets != UNREADABLE
                if not readable.all():
                    images, targets = images[readable], targets[readable]
                if len(targets):
                    yield images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        finally:
            split = loader.dataset.split
            if not self.strict:   # strict: refused at the first one
                report_unreadable(dataclasses.replace(split, skipped=split.skipped + list(dict.fromkeys(met))), False,
                                  self.rank)

    def note_unreadable(self, failures: list[str]) -> list[str]:
        """`failures` ('path (reason)'), each counted once in data.skipped; strict: refused."""
        if failures and self.strict:
            raise DataError(f"unreadable file {failures[0]}; remove it or set data.strict=false to skip such files")
        new = set(failures) - self.unreadable
        self.unreadable |= new
        self.skipped += len(new)
        return failures


