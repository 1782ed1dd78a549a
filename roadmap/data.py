"""Datasets for the roadmap: fashion-mnist | cifar10 | cifar100 | imagefolder:PATH | synthetic.

`build_data` returns a `Data` whose `train_batches(epoch)` and `eval_batches()` yield normalized
float32 images and int64 labels on the run's device, sharded across ranks. Two ways to serve them:

- in memory (small sets: Fashion-MNIST, CIFAR, synthetic, small folders): every image is decoded
  once into a uint8 tensor on the device and augmented per batch there (crop, flip, RandAugment,
  random erasing), which keeps a GPU fed without CPU workers;
- streaming (ImageNet-sized folders): a DataLoader with timm's PIL transforms in worker processes.

Every user mistake about data raises DataError with one line that names it and what to do.
"""
from __future__ import annotations

import contextlib
import gzip
import math
import os
import random
import re
import socket
import struct
import sys
import urllib.parse
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T
from torchvision.ops import roi_align
from torchvision.transforms import v2

from .errors import UserError

SPECS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic")
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DOWNLOAD_DIR = Path.home() / ".cache" / "roadmap"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")        # label order of the idx files (Xiao et al., 2017)
DEEP_GRAY_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}   # PIL modes of grayscale above 8 bits
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IN_MEMORY_LIMIT_BYTES = 2 * 1024 ** 3   # decoded train + eval sets below this stay in memory
EVAL_CROP_PCT = 0.875                   # timm's default: resize to size / 0.875, center crop size
PAD = 4                                 # the 'pad' crop: pad 4 px, random crop back (CIFAR style)
SUBSET_SEED = 0                         # subsets are the same for every run seed and rank
SYNTHETIC_SEED = 1234                   # the synthetic images are the same for every run seed
RAND_AUGMENT_GROUP = 8                  # samples that share one draw of RandAugment ops on the device
MAX_REPLACEMENTS = 16                   # unreadable files in a row tolerated while streaming
Batch = tuple[torch.Tensor, torch.Tensor]


class DataError(UserError):
    """A user mistake about data (missing files, bad folders, sizes): one line, exit 2."""


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """Each warning once per process: a roadmap opens the same dataset for every step."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------- sources
@dataclass
class Split:
    """One split as found on disk: decoded pixels (N, H, W, C uint8) or image file paths."""
    targets: np.ndarray
    pixels: np.ndarray | None = None
    paths: list[str] | None = None
    where: str = ""
    skipped: list[str] = field(default_factory=list)   # 'path (reason)' of files that are not images

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, n: int | None) -> "Split":
        """The first n of a fixed permutation (sorted back, so files are read in order)."""
        if n is None or n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(self))[:n])
        return Split(self.targets[keep], None if self.pixels is None else self.pixels[keep],
                     None if self.paths is None else [self.paths[i] for i in keep], self.where, self.skipped)

    def native_size(self) -> int | None:
        return None if self.pixels is None else self.pixels.shape[1]


@dataclass
class Source:
    name: str
    classes: list[str]      # label i is classes[i]; kept in the record so weights can name what they predict
    train: Split
    eval: Split

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_source(spec: str, root: str | None, image_size: int, synthetic_size: int, synthetic_classes: int) -> Source:
    if spec == "fashion-mnist":
        return load_fashion_mnist(root)
    if spec in ("cifar10", "cifar100"):
        return load_cifar(spec, root)
    if spec.startswith("imagefolder:"):
        return scan_image_folder(spec.partition(":")[2])
    if spec == "synthetic":
        return make_synthetic(synthetic_size, synthetic_classes, image_size)
    raise DataError(f"unknown dataset '{spec}'; choose one of {', '.join(SPECS)}")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file (the MNIST format) of `ndim` dimensions, gzipped or not, as a uint8 array.

    A damaged file (truncated, corrupt, another header) is a DataError that names it: numpy would
    otherwise fail on it with a traceback, or read a short label file as misaligned pairs."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:   # a truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot be read ({err}); re-download the dataset") from None
    problem = idx_problem(raw, ndim)
    if problem:
        raise DataError(f"{path}: {problem}; re-download the dataset")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(bytearray(raw), np.uint8, offset=4 + 4 * ndim).reshape(dims)   # bytearray: writable


def idx_problem(raw: bytes, ndim: int) -> str | None:
    """What is wrong with an idx file's bytes: its header (magic 0 0 8 ndim, then the dims) and its size."""
    header = 4 + 4 * ndim
    if len(raw) < header:
        return f"{len(raw)} bytes, too short for an idx header"
    if raw[:3] != b"\0\0\x08":
        return "not a uint8 idx file (wrong magic number)"
    if raw[3] != ndim:
        return f"{raw[3]} dimensions where {ndim} belong"
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        cut = "truncated" if len(raw) < expected else "trailing bytes"
        return f"{len(raw)} bytes where its header ({' x '.join(map(str, dims))}) needs {expected} ({cut})"
    return None


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    found = {}
    for stem in stems:
        candidates = [folder / f"{stem}.gz", folder / stem]
        found[stem] = next((p for p in candidates if p.is_file()), None)
    return found if all(found.values()) else None


def reachable(url: str) -> bool:
    """Whether a download could start at all (this often runs on machines without network)."""
    host = urllib.parse.urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def load_fashion_mnist(root: str | None) -> Source:
    folders = [Path(root), Path(root) / "FashionMNIST" / "raw"] if root else []
    folders.append(FASHION_MNIST_SYSTEM_DIR)
    files = next((f for f in map(find_idx_files, folders) if f), None)
    if files is None:
        files = download_fashion_mnist(Path(root) if root else DEFAULT_DOWNLOAD_DIR)
    if files is None:
        raise DataError(f"Fashion-MNIST not found in {', '.join(map(str, folders))}; "
                        f"install Debian's dataset-fashion-mnist or pass --set data.root=DIR")

    def split(images: str, labels: str, where: str) -> Split:
        pixels = read_idx(files[images], 3)[..., None]                     # (N, 28, 28, 1)
        targets = read_idx(files[labels], 1).astype(np.int64)
        if len(targets) != len(pixels):   # pairs would be misaligned, silently
            raise DataError(f"{files[labels]}: {len(targets)} labels for the {len(pixels)} images of "
                            f"{files[images].name}; re-download the dataset")
        if len(targets) and targets.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{files[labels]}: label {targets.max()} outside 0..{len(FASHION_MNIST_CLASSES) - 1}; "
                            f"re-download the dataset")
        return Split(targets, pixels, where=where)

    where = str(files["train-images-idx3-ubyte"].parent)
    return Source("fashion-mnist", list(FASHION_MNIST_CLASSES),
                  split("train-images-idx3-ubyte", "train-labels-idx1-ubyte", where),
                  split("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", where))


def download_fashion_mnist(root: Path) -> dict[str, Path] | None:
    from torchvision.datasets import FashionMNIST
    if not reachable(FashionMNIST.mirrors[0]):
        return None
    try:
        FashionMNIST(str(root), download=True)
    except Exception:  # noqa: BLE001 - any failure to download ends in the one-line DataError
        return None
    return find_idx_files(root / "FashionMNIST" / "raw")


def load_cifar(spec: str, root: str | None) -> Source:
    from torchvision.datasets import CIFAR10, CIFAR100
    dataset_class, title = (CIFAR10, "CIFAR-10") if spec == "cifar10" else (CIFAR100, "CIFAR-100")
    folder = root or str(DEFAULT_DOWNLOAD_DIR)

    def open_split(train: bool):
        try:
            return dataset_class(folder, train=train, download=False)
        except RuntimeError:
            if not (root and reachable(dataset_class.url)):
                raise DataError(f"{title} not found in {folder} (expected {dataset_class.base_folder}/ there); "
                                f"pass --set data.root=DIR holding it (with network access it is downloaded there)") from None
            return dataset_class(folder, train=train, download=True)

    def split(dataset) -> Split:
        return Split(np.asarray(dataset.targets, np.int64), dataset.data, where=folder)  # data: (N, 32, 32, 3)

    train, evals = open_split(True), open_split(False)
    return Source(spec, list(train.classes), split(train), split(evals))


def make_synthetic(size: int, classes: int, image_size: int) -> Source:
    """Noisy images whose mean color depends on the class: a tiny model learns it in a few steps."""
    if size < 1 or classes < 2:
        raise DataError(f"synthetic data needs data.synthetic_size >= 1 and data.synthetic_classes >= 2, "
                        f"got {size} and {classes}")
    check_memory(size + max(1, size // 4), image_size, 0, in_memory=True)   # made at the run's size: check first
    rng = np.random.default_rng(SYNTHETIC_SEED)
    colors = rng.integers(40, 216, (classes, 3))

    def split(n: int) -> Split:
        targets = rng.integers(0, classes, n)
        noise = rng.normal(0, 40, (n, image_size, image_size, 3))
        pixels = np.clip(colors[targets][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        return Split(targets.astype(np.int64), pixels, where="synthetic")

    return Source("synthetic", [f"class{i}" for i in range(classes)], split(size), split(max(1, size // 4)))


# ---------------------------------------------------------------------------- image folders
def scan_image_folder(path: str) -> Source:
    """PATH/train/<class>/* and PATH/val|test/<class>/*, validated before anything is decoded."""
    folder = Path(path).expanduser()
    if not path or not folder.is_dir():
        raise DataError(f"image folder '{path}' does not exist; pass imagefolder:DIR with DIR/train and DIR/val")
    train_dir = folder / "train"
    eval_dir = next((folder / name for name in ("val", "test") if (folder / name).is_dir()), None)
    if not train_dir.is_dir():
        raise DataError(f"{folder} has no train/ folder; expected {folder}/train/<class>/<images>")
    if eval_dir is None:
        raise DataError(f"{folder} has no val/ or test/ folder; expected {folder}/val/<class>/<images>")
    train_classes, eval_classes = class_folders(train_dir), class_folders(eval_dir)
    check_same_classes(train_dir, train_classes, eval_dir, eval_classes)
    index = {name: i for i, name in enumerate(train_classes)}
    return Source(f"imagefolder:{folder}", train_classes, list_images(train_dir, index), list_images(eval_dir, index))


def class_folders(split_dir: Path) -> list[str]:
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"no class folders in {split_dir}; expected {split_dir}/<class>/<image files>")
    return names


def check_same_classes(train_dir: Path, train: list[str], eval_dir: Path, evals: list[str]) -> None:
    if train == evals:
        return

    def listed(names: set[str]) -> str:
        shown = sorted(names)[:5]
        return ", ".join(shown) + (f" and {len(names) - 5} more" if len(names) > 5 else "") if names else "none"

    raise DataError(f"class folders differ: {train_dir} has {len(train)}, {eval_dir} has {len(evals)} "
                    f"(only in train: {listed(set(train) - set(evals))}; only in {eval_dir.name}: "
                    f"{listed(set(evals) - set(train))}); make them the same")


def list_images(split_dir: Path, class_index: dict[str, int]) -> Split:
    """Image files by extension; anything else is recorded as skipped (dot files are ignored)."""
    paths, targets, skipped = [], [], []
    for name, label in class_index.items():
        files = sorted(p for p in (split_dir / name).rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [str(p) for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += [f"{p} (not an image file)" for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(f"class folder {split_dir / name} has no images; add some or remove the folder")
        paths += images
        targets += [label] * len(images)
    return Split(np.asarray(targets, np.int64), paths=paths, where=str(split_dir), skipped=skipped)


def open_rgb(path: str, draft_size: int | None = None) -> Image.Image:
    with Image.open(path) as image:
        if draft_size:
            image.draft("RGB", (draft_size, draft_size))   # JPEG: decode at a reduced scale, much faster
        return (to_8_bit(image) if image.mode in DEEP_GRAY_MODES else image).convert("RGB")


def to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale scaled to 8 bits by the image's own range (min..max).

    PIL's own conversion clips them at 255, so a 16-bit scan becomes nearly white. A flat image has
    no range to scale: it becomes black."""
    pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
    low, high = pixels.min(), pixels.max()
    scaled = (pixels - low) * (255 / (high - low)) if high > low else np.zeros_like(pixels)
    return Image.fromarray(np.round(scaled).astype(np.uint8))


def report_unreadable(split: Split, strict: bool, rank: int) -> None:
    if not split.skipped:
        return
    if strict:
        raise DataError(f"unreadable file {split.skipped[0]}; remove it or set data.strict=false to skip such files")
    if rank == 0:
        warn(f"skipped {len(split.skipped)} unreadable files in {split.where} (first: {split.skipped[0]})")


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


def pad_random_crop(images: torch.Tensor, out_size: int) -> torch.Tensor:
    """Zero-pad PAD px, then a random out_size window per sample, gathered in one indexing op."""
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    batch, span = len(images), padded.shape[-1] - out_size + 1
    top = torch.randint(0, span, (batch,)).to(images.device)
    left = torch.randint(0, span, (batch,)).to(images.device)
    offsets = torch.arange(out_size, device=images.device)
    rows = (top[:, None] + offsets)[:, None, :, None]                   # (B, 1, S, 1)
    cols = (left[:, None] + offsets)[:, None, None, :]                  # (B, 1, 1, S)
    batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch_index, channels, rows, cols]


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
            images = random_resized_crop(images, self.image_size)
        else:
            images = pad_random_crop(images, self.image_size)
        images = random_flip(images)
        if self.rand_augment:
            images = self.rand_augment(images.round().clamp(0, 255).to(torch.uint8))
        images = self.normalize(images)
        return self.erase(images) if self.erase else images


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    top = int(round((images.shape[-1] - size) / 2.0))
    return images[..., top:top + size, top:top + size]


# ---------------------------------------------------------------------------- decoding into memory
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


def decode_file(path: str, size: int | None) -> np.ndarray | str:
    """A file as a (size, size, 3) array (shorter side resized, center crop; size None: the center square at
    the file's own resolution), or why it cannot be read."""
    try:
        image = open_rgb(path, size)
        if size is None:
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            return np.asarray(image.crop((left, top, left + side, top + side)))
        return np.asarray(ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"{path} ({err})"


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


def decode_files(split: Split, size: int, workers: int) -> Split:
    """Decode every file of `split` (threads: PIL releases the GIL); unreadable ones join split.skipped."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = list(pool.map(lambda p: decode_file(p, size), split.paths))
    ok = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    skipped = split.skipped + [d for d in decoded if isinstance(d, str)]
    pixels = np.stack([decoded[i] for i in ok]) if ok else np.zeros((0, size, size, 3), np.uint8)
    return Split(split.targets[ok], pixels, where=split.where, skipped=skipped)


def check_no_class_lost(before: Split, after: Split) -> None:
    """Dropping unreadable files must not leave a class of the split without images."""
    lost = sorted(set(before.targets.tolist()) - set(after.targets.tolist()))
    if lost:
        raise DataError(f"{after.where}: {len(lost)} class folders have no readable images (first: class "
                        f"index {lost[0]}); replace the broken files")


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

    def __init__(self, *, classes: list[str], train_size: int, eval_size: int, batch_size: int, skipped: int,
                 device: torch.device, rank: int, world_size: int, seed: int, drop_last: bool):
        self.classes, self.train_size, self.eval_size = classes, train_size, eval_size
        self.batch_size, self.skipped, self.device = batch_size, skipped, device
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
    """Every image decoded once to uint8 on the device; augmentation per batch, on the device."""
    in_memory = True

    def __init__(self, source: Source, *, image_size: int, crop: str, recipe: dict, workers: int, strict: bool,
                 **common):
        size = stored_size(crop, image_size)
        train, evals = (self.decoded(split, size, workers, strict, common["rank"])
                        for split in (source.train, source.eval))
        super().__init__(classes=source.classes, train_size=len(train), eval_size=len(evals),
                         skipped=len(train.skipped) + len(evals.skipped), **common)
        device = self.device
        self.train_images = pixels_to_tensor(train.pixels, size).to(device)
        self.train_targets = torch.from_numpy(train.targets).to(device)
        self.eval_images = pixels_to_tensor(evals.pixels, size).to(device)
        self.eval_targets = torch.from_numpy(evals.targets).to(device)
        self.image_size = image_size
        self.augment = DeviceTrainAugment(crop, image_size, recipe.get("rand_augment"),
                                          recipe.get("random_erasing") or 0.0, device)
        self.normalize = Normalize(device)

    @staticmethod
    def decoded(split: Split, size: int, workers: int, strict: bool, rank: int) -> Split:
        if split.paths is None:
            return split
        decoded = decode_files(split, size, workers)
        report_unreadable(decoded, strict, rank)
        check_no_class_lost(split, decoded)
        return decoded

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
def streaming_transforms(crop: str, image_size: int, recipe: dict) -> tuple[Callable, Callable]:
    """timm's PIL pipelines: (train, eval). Color jitter stays off: neither recipe of the paper uses it."""
    rand_augment, erasing = recipe.get("rand_augment") or None, recipe.get("random_erasing") or 0.0
    if crop == "rrc":
        train = create_transform(image_size, is_training=True, auto_augment=rand_augment, color_jitter=None,
                                 re_prob=erasing, re_mode="pixel", interpolation="bicubic")
        return train, create_transform(image_size, is_training=False, interpolation="bicubic", crop_pct=EVAL_CROP_PCT)
    fill = tuple(round(255 * m) for m in IMAGENET_DEFAULT_MEAN)
    steps = [T.Resize(image_size, T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
             T.RandomCrop(image_size, padding=PAD), T.RandomHorizontalFlip()]
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
    looks the same whatever the worker count. An unreadable file is replaced by the next readable one
    (strict: by a blank image) and reported with the item, since workers cannot raise cleanly."""

    def __init__(self, split: Split, transform: Callable, seed: int, strict: bool):
        self.split, self.transform, self.seed, self.strict = split, transform, seed, strict

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
            for attempt in range(1 if self.strict else MAX_REPLACEMENTS):
                i = (index + attempt) % len(self)
                try:
                    return self.transform(self.load(i)), int(self.split.targets[i]), "\n".join(failures)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                    failures.append(f"{self.split.paths[i]} ({err})")
            # Strict, or MAX_REPLACEMENTS bad files in a row: a blank stand-in; the failures travel with it.
            return self.transform(Image.new("RGB", (8, 8))), int(self.split.targets[index]), "\n".join(failures)


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

    def __init__(self, source: Source, *, image_size: int, crop: str, recipe: dict, workers: int, strict: bool,
                 **common):
        for split in (source.train, source.eval):
            report_unreadable(split, strict, common["rank"])
        super().__init__(classes=source.classes, train_size=len(source.train), eval_size=len(source.eval),
                         skipped=len(source.train.skipped) + len(source.eval.skipped), **common)
        self.strict, self.unreadable = strict, set()
        train_transform, eval_transform = streaming_transforms(crop, image_size, recipe)
        self.train_sampler = ShardSampler(self.train_order)
        self.train_loader = self.loader(StreamingDataset(source.train, train_transform, self.seed, strict),
                                        self.train_sampler, workers, self.drop_last)
        self.eval_loader = self.loader(StreamingDataset(source.eval, eval_transform, self.seed, strict),
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
        for images, targets, failures in loader:
            self.note_unreadable([line for text in failures if text for line in text.split("\n")])
            yield images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    def note_unreadable(self, failures: list[str]) -> None:
        if not failures:
            return
        if self.strict:
            raise DataError(f"unreadable file {failures[0]}; remove it or set data.strict=false to skip such files")
        if not self.unreadable and self.rank == 0:
            warn(f"skipped unreadable file {failures[0]}; data.skipped counts any others")
        new = set(failures) - self.unreadable
        self.unreadable |= new
        self.skipped += len(new)


# ---------------------------------------------------------------------------- entry point
def build_data(spec: str, *, root: str | None, image_size: int, batch_size: int, train_subset: int | None,
               eval_subset: int | None, recipe: dict, crop: str, device: torch.device, rank: int = 0,
               world_size: int = 1, seed: int = 0, workers: int = 4, in_memory: bool | None = None,
               strict: bool = False, synthetic_size: int = 512, synthetic_classes: int = 10,
               drop_last: bool = True, eval_only: bool = False) -> Data:
    """The run's data, validated before any training: every mistake is a one-line DataError.

    `eval_only` (evaluating kept weights) leaves the training split empty: nothing of it is decoded."""
    check_arguments(image_size, batch_size, crop, train_subset, eval_subset, rank, world_size)
    source = load_source(spec, root, image_size, synthetic_size, synthetic_classes)
    source.train = source.train.subset(0 if eval_only else train_subset)
    source.eval = source.eval.subset(eval_subset)
    if not eval_only:
        check_batch_fits(batch_size, world_size, len(source.train))
    if in_memory is None:
        in_memory = fits_in_memory(source, stored_size(crop, image_size))
    check_memory(len(source.train) + len(source.eval), stored_size(crop, image_size), batch_size, in_memory)
    serve = InMemoryData if in_memory else StreamingData
    data = serve(source, image_size=image_size, crop=crop, recipe=recipe or {}, workers=workers, strict=strict,
                 batch_size=batch_size, device=torch.device(device), rank=rank, world_size=world_size, seed=seed,
                 drop_last=drop_last)
    if not eval_only:
        check_batch_fits(batch_size, world_size, data.train_size)   # unreadable files may have shrunk the set
    return data


def check_arguments(image_size: int, batch_size: int, crop: str, train_subset, eval_subset, rank, world_size) -> None:
    if image_size < 8:
        raise DataError(f"image size {image_size} is too small; use scale.image_size >= 8")
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be at least 1")
    if crop not in ("rrc", "pad"):
        raise DataError(f"unknown crop '{crop}'; use 'rrc' (ImageNet-style) or 'pad' (small images)")
    for name, subset in (("train_subset", train_subset), ("eval_subset", eval_subset)):
        if subset is not None and subset < 1:
            raise DataError(f"scale.{name} must be at least 1 (or null for the whole set), got {subset}")
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside world size {world_size}")


def check_batch_fits(batch_size: int, world_size: int, train_size: int) -> None:
    if batch_size * world_size > train_size:
        raise DataError(f"batch size {batch_size} x {world_size} ranks exceeds the {train_size} training images; "
                        f"lower scale.batch_size/micro_batch or use more data")


def check_memory(images: int, size: int, batch_size: int, in_memory: bool) -> None:
    """Refuse, before any of it is allocated, data no run could hold: in memory the decoded set is
    images x 3 x size^2 bytes; streaming, a batch is batch x 3 x size^2 float32. Compared with the
    machine's physical memory, not with what is free now (that moves with the page cache)."""
    need = images * 3 * size * size if in_memory else batch_size * 3 * size * size * 4
    have = physical_memory()
    if have is not None and need > have:
        what = f"{images} images held in memory" if in_memory else f"a streamed batch of {batch_size}"
        raise DataError(f"{size} px images need {need / 2**30:,.0f} GiB for {what}, more than this machine's "
                        f"{have / 2**30:,.0f} GiB; lower scale.image_size")


def physical_memory() -> int | None:
    """Bytes of RAM, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def fits_in_memory(source: Source, size: int) -> bool:
    return (len(source.train) + len(source.eval)) * 3 * size * size < IN_MEMORY_LIMIT_BYTES
