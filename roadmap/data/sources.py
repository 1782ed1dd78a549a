"""Where a dataset comes from: what a spec names, found on disk (or made), as a `Source` of two splits.

Fashion-MNIST (idx files), CIFAR-10/100 (torchvision's files) and synthetic images come as decoded
pixels; image folders (folders.py) as file paths. Nothing here depends on a run: a Source is opened
once per invocation and served to every run of it.
"""
from __future__ import annotations

import dataclasses
import gzip
import math
import socket
import struct
import urllib.parse
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checks import DataError, check_held_in_memory

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DOWNLOAD_DIR = Path.home() / ".cache" / "roadmap"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")        # label order of the idx files (Xiao et al., 2017)
SUBSET_SEED = 0                         # subsets are the same for every run seed and rank
SYNTHETIC_SEED = 1234                   # the synthetic images are the same for every run seed
SYNTHETIC_CHUNK = 1 << 22               # noise values drawn at a time: float64 temporaries of 32 MiB each


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
        return dataclasses.replace(self, targets=self.targets[keep],
                                   pixels=None if self.pixels is None else self.pixels[keep],
                                   paths=None if self.paths is None else [self.paths[i] for i in keep])


@dataclass
class Source:
    name: str
    classes: list[str]      # label i is classes[i]; kept in the record so weights can name what they predict
    train: Split
    eval: Split
    fingerprint: str | None = None   # image folders: of the whole listing (folders.py); array datasets: None
    in_memory: bool | None = None    # how it is served, decided when it is opened (None: not opened yet)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subsets(self, train: int | None, evals: int | None) -> "Source":
        return dataclasses.replace(self, train=self.train.subset(train), eval=self.eval.subset(evals))

    def identity(self) -> dict:
        """What a run's record says its data was, and what a later invocation compares with it
        (plan.run_identity): what the data holds, not where it lies, so moved data finds its results."""
        return {"num_classes": self.num_classes, "train_images": len(self.train), "eval_images": len(self.eval),
                "data_fingerprint": self.fingerprint}


# ---------------------------------------------------------------------------- Fashion-MNIST
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


# ---------------------------------------------------------------------------- CIFAR
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


# ---------------------------------------------------------------------------- synthetic
def make_synthetic(size: int, classes: int, image_size: int, made: bool = True) -> Source:
    """Noisy images whose mean color depends on the class: a tiny model learns it in a few steps. Not `made` (a
    dry run): the splits' sizes alone, labelled -1, nothing drawn."""
    if size < 1 or not 2 <= classes <= size:
        raise DataError(f"synthetic data needs data.synthetic_size >= 1 and data.synthetic_classes from 2 to "
                        f"data.synthetic_size, got {size} and {classes}")
    check_held_in_memory(size + max(1, size // 4), image_size)   # made at the run's size: check first
    rng = np.random.default_rng(SYNTHETIC_SEED)
    colors = rng.integers(40, 216, (classes, 3))

    def split(n: int) -> Split:
        if not made:
            return Split(np.full(n, -1, np.int64), where="synthetic")
        targets = rng.integers(0, classes, n)
        pixels = np.empty((n, image_size, image_size, 3), np.uint8)
        per_chunk = max(1, SYNTHETIC_CHUNK // pixels[0].size)   # the same draws as one call, a chunk at a time
        for start in range(0, n, per_chunk):
            part = targets[start:start + per_chunk]
            noise = rng.normal(0, 40, (len(part), image_size, image_size, 3))
            pixels[start:start + len(part)] = np.clip(colors[part][:, None, None, :] + noise, 0, 255)
        return Split(targets.astype(np.int64), pixels, where="synthetic")

    return Source("synthetic", [f"class{i}" for i in range(classes)], split(size), split(max(1, size // 4)))
