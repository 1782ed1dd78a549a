"""The data contract the training loop relies on: shapes, dtypes, normalization, sharding, determinism,
both serving paths, and one-line DataErrors for every folder mistake."""
import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from roadmap.config import ConfigError, DataConfig, RecipeConfig, ScaleConfig
from roadmap.data import DataError, augment, build_data, load_source, sources
from roadmap.data.augment import random_resized_boxes, random_resized_crop
from roadmap.recipe import resolve

CPU = torch.device("cpu")
CLASSIC = resolve(RecipeConfig(name="classic"), ScaleConfig())   # no augmentation but crop and flip
MODERN = resolve(RecipeConfig(name="modern"), ScaleConfig())     # RandAugment m9, random erasing 0.25
# Normalized pixel bounds: (0 - mean) / std and (1 - mean) / std over the three channels.
LOW, HIGH = -0.485 / 0.229 - 1e-4, (1 - 0.406) / 0.225 + 1e-4
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def build(spec="synthetic", **overrides):
    """build_data from loose values: each goes to the data config, the scale config or the run, by its name."""
    values = {**dict(image_size=16, batch_size=8, recipe=CLASSIC, crop="pad", device=CPU, workers=0,
                     synthetic_size=64, synthetic_classes=4), **overrides}
    batch_size = values.pop("batch_size")   # this process's batch, not the scale's global one
    data = DataConfig(spec=spec, **fields_of(DataConfig, values))
    return build_data(data, ScaleConfig(**fields_of(ScaleConfig, values)), batch_size=batch_size, **values)


def fields_of(config, values: dict) -> dict:
    """The values that are fields of `config`, taken out of `values`."""
    return {f.name: values.pop(f.name) for f in dataclasses.fields(config) if f.name in values}


def check_batch(images, targets, image_size, num_classes, batch_size=None):
    assert images.dtype == torch.float32 and targets.dtype == torch.int64
    assert images.shape[1:] == (3, image_size, image_size) and len(images) == len(targets)
    assert batch_size is None or len(images) == batch_size
    assert images.device.type == targets.device.type == "cpu"
    assert targets.min() >= 0 and targets.max() < num_classes


# ---------------------------------------------------------------------------- datasets
@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
@pytest.mark.parametrize("image_size", [28, 32])
def test_fashion_mnist_subset_has_the_contract(image_size):
    data = build("fashion-mnist", image_size=image_size, batch_size=64, train_subset=512, eval_subset=200)
    assert (data.num_classes, data.train_size, data.eval_size, data.in_memory) == (10, 512, 200, True)
    batches = data.train_batches(0)
    assert len(batches) == data.steps_per_epoch() == 8
    seen = 0
    for images, targets in batches:
        check_batch(images, targets, image_size, 10, batch_size=64)
        assert LOW <= images.min() and images.max() <= HIGH
        seen += 1
    assert seen == 8
    eval_counts = [len(targets) for images, targets in data.eval_batches()]
    assert sum(eval_counts) == 200 and len(data.eval_batches()) == len(eval_counts) == 4


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_found_in_torchvisions_layout_under_root(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for file in FASHION_MNIST.parent.glob("*-ubyte.gz"):
        (raw / file.name).symlink_to(file)
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    data = build("fashion-mnist", root=str(tmp_path), train_subset=64, eval_subset=16)
    assert (data.num_classes, data.train_size, data.eval_size) == (10, 64, 16)


def test_missing_fashion_mnist_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(sources, "reachable", lambda url: False)
    with pytest.raises(DataError, match="Fashion-MNIST not found.*dataset-fashion-mnist") as err:
        build("fashion-mnist", root=str(tmp_path))
    assert "\n" not in str(err.value)


def test_missing_cifar_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "reachable", lambda url: False)
    with pytest.raises(DataError, match="CIFAR-100 not found") as err:
        build("cifar100", root=str(tmp_path))
    assert "\n" not in str(err.value)


def test_unknown_spec_and_bad_sizes_are_data_errors():
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        build("mnist")
    with pytest.raises(ConfigError, match="scale.image_size must be >= 8, not 4"):
        build(image_size=4)
    with pytest.raises(DataError, match=r"batch size 40 x 2 ranks exceeds the 64 training images"):
        build(batch_size=40, world_size=2)
    with pytest.raises(ConfigError, match="scale.crop must be one of rrc, pad, not 'center'"):
        build(crop="center")
    with pytest.raises(DataError, match="in-memory path supports only those"):
        build(recipe=dataclasses.replace(MODERN, rand_augment="original"))


# ---------------------------------------------------------------------------- determinism and sharding
def first_batch(data, epoch):
    return next(iter(data.train_batches(epoch)))


def test_synthetic_is_deterministic_per_seed_and_epoch():
    images, targets = first_batch(build(recipe=MODERN), 0)
    again, again_targets = first_batch(build(recipe=MODERN), 0)
    assert torch.equal(images, again) and torch.equal(targets, again_targets)
    assert not torch.equal(images, first_batch(build(recipe=MODERN), 1)[0])
    assert not torch.equal(images, first_batch(build(recipe=MODERN, seed=1), 0)[0])


def test_augmentation_leaves_the_callers_random_streams_alone():
    data = build(recipe=MODERN)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    first_batch(data, 0)
    assert torch.equal(torch.rand(4), expected)


def test_synthetic_signal_is_learnable():
    """Class means differ: a nearest-mean classifier on raw eval images beats chance by far."""
    data = build(synthetic_size=256)
    images = torch.cat([images for images, _ in data.eval_batches()])
    labels = torch.cat([targets for _, targets in data.eval_batches()])
    means = torch.stack([images[labels == c].mean(dim=(0, 2, 3)) for c in range(4)])
    predicted = torch.cdist(images.mean(dim=(2, 3)), means).argmin(dim=1)
    assert (predicted == labels).float().mean() > 0.9


def test_two_ranks_get_disjoint_equal_shards():
    ranks = [build(synthetic_size=100, world_size=2, rank=r) for r in (0, 1)]
    orders = [set(data.train_order(epoch=0).tolist()) for data in ranks]
    assert len(orders[0]) == len(orders[1]) == 50 and not orders[0] & orders[1]
    assert [len(list(data.train_batches(0))) for data in ranks] == [6, 6] == [d.steps_per_epoch() for d in ranks]
    targets = torch.cat([t for _, t in ranks[0].train_batches(0)])
    assert torch.equal(targets, ranks[0].train_targets[ranks[0].train_order(0)[:48]])
    # Eval is sharded without dropping: the ranks together see every eval image exactly once.
    assert sum(len(t) for data in ranks for _, t in data.eval_batches()) == ranks[0].eval_size == 25


# ---------------------------------------------------------------------------- crops
@pytest.mark.parametrize("crop", ["rrc", "pad"])
@pytest.mark.parametrize("in_memory", [True, False])
def test_crops_give_the_requested_size(crop, in_memory):
    data = build(crop=crop, image_size=24, recipe=MODERN, in_memory=in_memory)
    check_batch(*first_batch(data, 0), 24, 4, batch_size=8)
    check_batch(*next(iter(data.eval_batches())), 24, 4)


def test_random_resized_crop_boxes_stay_inside_and_keep_the_scale():
    torch.manual_seed(0)
    boxes = random_resized_boxes(1000, 36)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 36).all() and (width >= 1).all() and (height >= 1).all()
    area = width * height / 36 ** 2
    assert area.min() >= 0.08 * 0.8 and area.max() <= 1.0


def test_random_resized_crop_of_the_whole_image_is_the_image(monkeypatch):
    images = torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8)
    whole = torch.tensor([[0.0, 0.0, 20.0, 20.0]]).repeat(3, 1)
    monkeypatch.setattr(augment, "random_resized_boxes", lambda batch, size: whole)
    assert torch.equal(random_resized_crop(images, 20), images.float())


# ---------------------------------------------------------------------------- image folders
def write_image(path: Path, size, color, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, fmt)


def make_folder(root: Path, classes=("cat", "dog", "fox"), per_class=4, bad_files=True) -> Path:
    colors = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}
    for split, count in (("train", per_class), ("val", 2)):
        for name in classes:
            for i in range(count):
                fmt, ext = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
                size = (20 + 4 * i, 16 + 2 * i)   # images of different sizes and aspect ratios
                write_image(root / split / name / f"{i}.{ext}", size, colors[name], fmt)
    if bad_files:
        whole = root / "train" / classes[0] / "1.jpg"
        (root / "train" / classes[0] / "truncated.jpg").write_bytes(whole.read_bytes()[:200])
        (root / "train" / classes[1] / "notes.txt").write_text("not an image")
    return root


def warnings_in(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def test_image_folder_in_memory_skips_unreadable_files_with_one_warning(tmp_path, capsys):
    folder = make_folder(tmp_path / "data")
    data = build(f"imagefolder:{folder}", batch_size=4)
    assert (data.in_memory, data.num_classes, data.train_size, data.eval_size, data.skipped) == (True, 3, 12, 6, 2)
    warnings = warnings_in(capsys)
    assert len(warnings) == 1 and "skipped 2 unreadable files" in warnings[0]
    check_batch(*first_batch(data, 0), 16, 3, batch_size=4)
    labels = torch.cat([t for _, t in data.eval_batches()])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("in_memory", [True, False])
def test_image_folder_strict_refuses_unreadable_files(tmp_path, in_memory):
    folder = make_folder(tmp_path / "data")
    with pytest.raises(DataError, match="unreadable file .*data.strict=false"):
        build(f"imagefolder:{folder}", strict=True, in_memory=in_memory)


def test_streaming_strict_stops_at_a_corrupt_image(tmp_path):
    folder = make_folder(tmp_path / "data", bad_files=False)
    (folder / "train" / "cat" / "truncated.jpg").write_bytes((folder / "train" / "cat" / "1.jpg").read_bytes()[:200])
    data = build(f"imagefolder:{folder}", strict=True, in_memory=False, batch_size=13)
    with pytest.raises(DataError, match="unreadable file .*truncated.jpg"):
        list(data.train_batches(0))


def test_streaming_image_folder_has_the_same_contract(tmp_path, capsys):
    folder = make_folder(tmp_path / "data")
    data = build(f"imagefolder:{folder}", batch_size=4, in_memory=False, crop="rrc", recipe=MODERN)
    assert (data.in_memory, data.num_classes, data.train_size, data.eval_size) == (False, 3, 13, 6)
    batches = list(data.train_batches(0))
    assert len(batches) == len(data.train_batches(0)) == data.steps_per_epoch() == 3
    for images, targets in batches:
        check_batch(images, targets, 16, 3, batch_size=4)
    check_batch(*next(iter(data.eval_batches())), 16, 3)
    assert sum(len(t) for _, t in data.eval_batches()) == 6
    list(data.train_batches(1))   # every file read at least once: the truncated one is now counted
    assert data.skipped == 2
    warnings = warnings_in(capsys)   # one for the split, as in memory, once a pass has met every file
    assert len(warnings) == 1 and "skipped 2 unreadable files" in warnings[0] and "notes.txt" in warnings[0]


class ByColour(torch.nn.Module):
    """Class i is colour channel i (make_folder's cat, dog, fox are red, green, blue): the same prediction from
    either serving path's preprocessing."""

    def forward(self, images):
        return images.mean((2, 3))


def test_unreadable_eval_images_are_left_out_alike_in_memory_and_streaming(tmp_path, capsys):
    from roadmap.train import eval_totals
    folder = make_folder(tmp_path / "data", bad_files=False)
    for name in ("cat", "dog", "fox"):   # 6 readable images, 4 not: none may be counted, or stood in for
        (folder / "val" / name / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "val" / "fox" / "cut.jpg").write_bytes((folder / "val" / "fox" / "1.jpg").read_bytes()[:200])
    seen = {}
    for in_memory in (True, False):
        copy = shutil.copytree(folder, tmp_path / str(in_memory))   # a warning of its own (one per message)
        data = build(f"imagefolder:{copy}", in_memory=in_memory, batch_size=4)
        totals, confusion = eval_totals(ByColour(), data.eval_batches(), CPU, 3)
        seen[in_memory] = totals[1:].tolist(), confusion.tolist()   # top-1 hits, top-5 hits, images; the matrix
        warnings = warnings_in(capsys)
        assert len(warnings) == 1 and f"skipped 4 unreadable files in {copy / 'val'}" in warnings[0], warnings
    assert seen[True] == seen[False] and seen[True][0] == [6, 6, 6], seen


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_streaming_batches_do_not_depend_on_the_worker_count():
    def batch(workers):
        data = build("fashion-mnist", train_subset=64, eval_subset=16, in_memory=False, workers=workers, recipe=MODERN)
        return first_batch(data, 2)
    images, targets = batch(0)
    check_batch(images, targets, 16, 10, batch_size=8)
    parallel_images, parallel_targets = batch(2)
    assert torch.equal(images, parallel_images) and torch.equal(targets, parallel_targets)


def folder_error(tmp_path: Path, mistake: str) -> str:
    folder = make_folder(tmp_path / "data", bad_files=False)
    if mistake == "missing":
        folder = tmp_path / "absent"
    elif mistake == "no_train":
        (folder / "train").rename(folder / "training")
    elif mistake == "no_val":
        (folder / "val").rename(folder / "validation")
    elif mistake == "empty_class":
        (folder / "train" / "owl").mkdir()
        (folder / "val" / "owl").mkdir()
    elif mistake == "different_classes":
        (folder / "val" / "fox").rename(folder / "val" / "wolf")
    elif mistake == "no_images":
        for path in sorted((folder / "train").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(DataError) as err:
        build(f"imagefolder:{folder}")
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("mistake,expected", [
    ("missing", "does not exist"),
    ("no_train", "has no train/ folder"),
    ("no_val", "has no val/ or test/ folder"),
    ("empty_class", "class folder .*train/owl has no images"),
    ("different_classes", "class folders differ.*only in train: fox; only in val: wolf"),
    ("no_images", "no class folders in .*train"),
])
def test_image_folder_mistakes_are_one_line(tmp_path, mistake, expected):
    assert re.search(expected, folder_error(tmp_path, mistake))


def fingerprint(folder: Path) -> str:
    return load_source(DataConfig(spec=f"imagefolder:{folder}"), 16).fingerprint


def test_a_folders_fingerprint_follows_its_images_not_its_path(tmp_path):
    folder = make_folder(tmp_path / "data", bad_files=False)
    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "data")
    assert fingerprint(folder) == fingerprint(copy) and len(fingerprint(folder)) == 16
    (copy / "train" / "dog" / "notes.txt").write_text("not an image: not data")
    assert fingerprint(copy) == fingerprint(folder)
    (copy / "val").rename(copy / "test")                        # the eval split under its other name
    assert fingerprint(copy) == fingerprint(folder)
    (copy / "train" / "cat" / "0.png").rename(copy / "train" / "cat" / "9.png")
    renamed = fingerprint(copy)
    assert renamed != fingerprint(folder)
    (copy / "train" / "cat" / "9.png").rename(copy / "train" / "cat" / "0.png")
    write_image(copy / "train" / "cat" / "0.png", (30, 30), (1, 2, 3))   # replaced by another image
    assert fingerprint(copy) not in (fingerprint(folder), renamed)


def test_image_folder_accepts_test_instead_of_val(tmp_path):
    folder = make_folder(tmp_path / "data", bad_files=False)
    (folder / "val").rename(folder / "test")
    assert build(f"imagefolder:{folder}").eval_size == 6


@pytest.mark.parametrize("size", [32, 64])
def test_pad_crop_is_crop_then_flip_with_an_eighth_of_the_side_as_border(size):
    """The one-gather crop + flip draws and returns what padding, cropping, then flipping would; its border
    is an eighth of the side (CIFAR's 4 px at 32), so a 64 px scale jitters the image as much as 32 px."""
    pad = augment.crop_padding(size)
    assert pad == size // 8
    images = torch.rand(16, 3, size, size)
    torch.manual_seed(0)
    got = augment.pad_random_crop_flip(images, size)
    torch.manual_seed(0)
    top, left = torch.randint(0, 2 * pad + 1, (16,)), torch.randint(0, 2 * pad + 1, (16,))
    flip = torch.rand(16) < 0.5
    padded = torch.nn.functional.pad(images, (pad,) * 4)
    for i in range(16):
        window = padded[i, :, top[i]:top[i] + size, left[i]:left[i] + size]
        assert torch.equal(got[i], window.flip(-1) if flip[i] else window)
