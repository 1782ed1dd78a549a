"""Image folders: PATH/train/<class>/* and PATH/val|test/<class>/*, listed and fingerprinted before
anything is decoded; reading one image file as RGB pixels."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .checks import DataError
from .sources import Source, Split

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEEP_GRAY_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}   # PIL modes of grayscale above 8 bits
FINGERPRINT_CHARS = 16                  # hex digits of a folder's fingerprint: 64 bits tell listings apart


def scan_image_folder(path: str) -> Source:
    """The folder's classes and image files, validated, with the fingerprint of what it holds."""
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
    fingerprint = hashlib.sha256()
    train, evals = list_images(train_dir, index, fingerprint), list_images(eval_dir, index, fingerprint)
    return Source(f"imagefolder:{folder}", train_classes, train, evals, fingerprint.hexdigest()[:FINGERPRINT_CHARS])


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


def list_images(split_dir: Path, class_index: dict[str, int], fingerprint) -> Split:
    """Image files by extension; anything else is recorded as skipped (dot files are ignored).

    Each image's path below `split_dir` and byte size go into `fingerprint` (a hashlib object), so the
    same images under another path give the same fingerprint and a renamed, added, removed or resized
    file another. It costs nothing beyond the listing: the size comes from the one stat per file that
    tells files from folders. A file rewritten at the very same size goes unseen."""
    paths, targets, skipped = [], [], []
    for name, label in class_index.items():
        files = regular_files(split_dir / name)
        images = [(p, size) for p, size in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += [f"{p} (not an image file)" for p, _ in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(f"class folder {split_dir / name} has no images; add some or remove the folder")
        for p, size in images:
            # The name's own bytes (os.fsencode): a name that is not UTF-8 (Latin-1 from an old archive) is listed too.
            fingerprint.update(os.fsencode(f"{p.relative_to(split_dir).as_posix()}\0{size}\n"))
        paths += [str(p) for p, _ in images]
        targets += [label] * len(images)
    return Split(np.asarray(targets, np.int64), paths=paths, where=str(split_dir), skipped=skipped)


def regular_files(folder: Path) -> list[tuple[Path, int]]:
    """(path, size in bytes) of every file below `folder` but dot files, sorted by path."""
    found = []
    for path in folder.rglob("*"):
        if path.name.startswith("."):
            continue
        try:
            info = path.stat()          # follows links, as Path.is_file does
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(info.st_mode):
            found.append((path, info.st_size))
    return sorted(found)


# ---------------------------------------------------------------------------- reading files
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


def decode_files(split: Split, size: int, workers: int) -> Split:
    """Decode every file of `split` (threads: PIL releases the GIL); unreadable ones join split.skipped."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = list(pool.map(lambda p: decode_file(p, size), split.paths))
    ok = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    skipped = split.skipped + [d for d in decoded if isinstance(d, str)]
    pixels = np.stack([decoded[i] for i in ok]) if ok else np.zeros((0, size, size, 3), np.uint8)
    return dataclasses.replace(split, targets=split.targets[ok], pixels=pixels, paths=None, skipped=skipped)
