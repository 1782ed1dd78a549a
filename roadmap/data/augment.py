"""The in-memory path's augmentation, on whole uint8 batches where they live (the GPU, or the CPU):
timm's order of crop ('rrc' or 'pad') + flip, RandAugment, normalize, random erasing; and the seeding
that makes every batch reproducible whatever else draws random numbers."""
from __future__ import annotations

import contextlib
import math
import random
import re

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.random_erasing import RandomErasing
from torchvision.ops import roi_align
from torchvision.transforms import v2

from .checks import DataError

EVAL_CROP_PCT = 0.875                   # timm's default: resize to size / 0.875, center crop size
RAND_AUGMENT_GROUP = 8                  # samples that share one draw of RandAugment ops on the device


# ---------------------------------------------------------------------------- randomness
def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_global_rngs(seed: int, device: torch.device | None = None):
    """Seed the global RNGs that timm's and torchvision's augmentations draw from, then restore them:
    batches are reproducible and the caller's random streams are left untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = device is not None and device.type == "cuda"
    cuda_index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[cuda_index] if cuda else []):
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda_index):
                torch.cuda.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


# ---------------------------------------------------------------------------- device augmentation
def parse_rand_augment(spec: str) -> dict:
    """timm's 'rand-m9-n2-mstd0.5-inc1' as {'magnitude', 'num_ops', 'std', 'prob'}."""
    parts = spec.split("-")
    if parts[0] != "rand":
        raise DataError(f"rand_augment '{spec}' is not a RandAugment string ('rand-m9-mstd0.5-inc1'); the in-memory "
                        f"path supports only those: set data.in_memory=false to use timm's other policies")
    params = {"magnitude": 10.0, "num_ops": 2, "std": 0.0, "prob": 0.5}
    keys = {"m": "magnitude", "n": "num_ops", "mstd": "std", "p": "prob", "inc": None, "mmax": None}
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)(inf|[\d.]+)", part)
        if not match or match[1] not in keys:
            raise DataError(f"rand_augment '{spec}': unsupported part '{part}' (known: m, n, mstd, p, inc, mmax)")
        if keys[match[1]]:
            params[keys[match[1]]] = float(match[2])
    params["num_ops"] = int(params["num_ops"])
    return params


class DeviceRandAugment:
    """timm's RandAugment on uint8 tensors on the device, built from torchvision's RandAugment ops.

    Like timm: each of `num_ops` layers picks an op uniformly and applies it with probability `prob`,
    at a magnitude drawn from N(m, mstd) on timm's 0..10 scale (101 bins map it onto torchvision's ranges,
    which equal timm's for rotate, shear, translate, solarize and the enhance ops). Not like timm, and
    said plainly: the op set is torchvision's (Identity instead of Invert and SolarizeAdd), Posterize is
    milder, and samples in a group of RAND_AUGMENT_GROUP share one draw of ops, which keeps a GPU batch
    to a few dozen kernel launches instead of thousands.
    """

    def __init__(self, spec: str):
        self.params = parse_rand_augment(spec)
        fill = [round(255 * m) for m in IMAGENET_DEFAULT_MEAN]   # timm fills with the mean color too
        self.op = v2.RandAugment(num_ops=1, num_magnitude_bins=101, interpolation=v2.InterpolationMode.BILINEAR,
                                 fill=fill)

    def magnitude_bin(self) -> int:
        magnitude, std = self.params["magnitude"], self.params["std"]
        if std == float("inf"):
            magnitude = random.uniform(0, magnitude)
        elif std > 0:
            magnitude = random.gauss(magnitude, std)
        return round(min(max(magnitude, 0.0), 10.0) * 10)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        groups = []
        for group in images.split(RAND_AUGMENT_GROUP):
            for _ in range(self.params["num_ops"]):
                if random.random() < self.params["prob"]:
                    self.op.magnitude = self.magnitude_bin()
                    group = self.op(group)
            groups.append(group)
        return torch.cat(groups)


def stored_size(crop: str, image_size: int) -> int:
    """Side of the square images held in memory: 'rrc' keeps the border that eval crops off (its train
    crops come from this center square of a folder image, the streaming path's from the whole image)."""
    return math.floor(image_size / EVAL_CROP_PCT) if crop == "rrc" else image_size


def random_resized_boxes(batch: int, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
    """torchvision's RandomResizedCrop.get_params for a batch of size x size images: (batch, 4) x1, y1, x2, y2.

    Up to `attempts` draws per sample, the first that fits wins; none fits -> the whole (square) image."""
    area = size * size * torch.empty(batch, attempts).uniform_(*scale)
    log_ratio = torch.empty(batch, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    w = torch.sqrt(area * torch.exp(log_ratio)).round()
    h = torch.sqrt(area / torch.exp(log_ratio)).round()
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = fits.float().argmax(dim=1, keepdim=True)
    any_fit = fits.any(dim=1)
    w = torch.where(any_fit, w.gather(1, first)[:, 0], torch.tensor(float(size)))
    h = torch.where(any_fit, h.gather(1, first)[:, 0], torch.tensor(float(size)))
    x = torch.floor(torch.rand(batch) * (size - w + 1))
    y = torch.floor(torch.rand(batch) * (size - h + 1))
    return torch.stack([x, y, x + w, y + h], dim=1)


def random_resized_crop(images: torch.Tensor, out_size: int) -> torch.Tensor:
    """Per-sample random resized crops in one roi_align call (bilinear, averaging when it shrinks)."""
    boxes = random_resized_boxes(len(images), images.shape[-1]).to(images.device)
    index = torch.arange(len(images), device=images.device, dtype=boxes.dtype)[:, None]
    return roi_align(images.float(), torch.cat([index, boxes], dim=1), out_size, spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)


def crop_padding(image_size: int) -> int:
    """The 'pad' crop's zero border: CIFAR's 4 px of 32, an eighth of the side, so that a larger scale
    jitters the same share of the image (8 px at 64) and differs from the 32 px one in resolution alone."""
    return image_size // 8


def pad_random_crop_flip(images: torch.Tensor, out_size: int) -> torch.Tensor:
    """Zero-pad crop_padding(out_size) px, then a random out_size window per sample, mirrored for half of them.

    Crop and flip are one gather over each image's flattened pixels: 6x faster on a CPU than indexing with
    four broadcast index tensors, then flipping. The draws (rows, columns, then the flips, as random_flip
    draws them after a crop) and so the batches are those of cropping, then flipping."""
    pad = crop_padding(out_size)
    padded = F.pad(images, (pad, pad, pad, pad))
    (batch, channels, side, _), span = padded.shape, padded.shape[-1] - out_size + 1
    top = torch.randint(0, span, (batch,)).to(images.device)
    left = torch.randint(0, span, (batch,)).to(images.device)
    flip = (torch.rand(batch) < 0.5).to(images.device)[:, None]
    offsets = torch.arange(out_size, device=images.device)
    rows = top[:, None] + offsets                                               # (B, S)
    cols = left[:, None] + torch.where(flip, offsets.flip(0), offsets)          # (B, S), reversed if flipped
    pixels = (rows[:, :, None] * side + cols[:, None, :]).view(batch, 1, -1)   # (B, 1, S*S) into side*side
    picked = padded.reshape(batch, channels, -1).gather(2, pixels.expand(-1, channels, -1))
    return picked.view(batch, channels, out_size, out_size)


def random_flip(images: torch.Tensor) -> torch.Tensor:
    flip = (torch.rand(len(images)) < 0.5).to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


class Normalize:
    def __init__(self, device: torch.device):
        self.mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_DEFAULT_STD, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std


class DeviceTrainAugment:
    """The in-memory training augmentation, on a whole batch where it lives, in timm's order:
    crop ('rrc' or 'pad') + flip, RandAugment, normalize, random erasing."""

    def __init__(self, crop: str, image_size: int, rand_augment: str | None, random_erasing: float,
                 device: torch.device):
        self.crop, self.image_size = crop, image_size
        self.rand_augment = DeviceRandAugment(rand_augment) if rand_augment else None
        self.normalize = Normalize(device)
        self.erase = RandomErasing(probability=random_erasing, mode="pixel", device=device) if random_erasing else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop == "rrc":
            images = random_flip(random_resized_crop(images, self.image_size))
        else:
            images = pad_random_crop_flip(images, self.image_size)
        if self.rand_augment:
            images = self.rand_augment(images.round().clamp(0, 255).to(torch.uint8))
        images = self.normalize(images)
        return self.erase(images) if self.erase else images


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    top = int(round((images.shape[-1] - size) / 2.0))
    return images[..., top:top + size, top:top + size]

