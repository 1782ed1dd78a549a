"""Trained models are kept and usable: weights and classes in the record. One tiny run (trained once) serves
most tests."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from roadmap import cli
from roadmap.config import ModelConfig, update_dataclass
from roadmap.data import FASHION_MNIST_CLASSES, load_source
from roadmap.results import RunKey, read_record
from roadmap.steps import build_model
from roadmap.weights import sha256_of

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
# ConvNeXt at 1/8 width, stem stride 4 (timm's default patch size), 32 px, 64 synthetic images, one epoch.
TINY = ["--data", "synthetic", "--no-progress", "--set", "scale.epochs=1", "--set", "scale.batch_size=32",
        "--set", "scale.micro_batch=32", "--set", "data.synthetic_size=64", "--set", "scale.image_size=32",
        "--set", "scale.stem_stride=4"]
STEP = "separate_downsampling"


def train(root: Path, *args) -> int:
    return cli.main(["run", "--step", STEP, "--results", str(root / "results"), "--checkpoints", str(root / "ckpt"),
                     *TINY, *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One complete tiny run: (folder, record); its weights are in folder/weights (beside folder/ckpt)."""
    root = tmp_path_factory.mktemp("run")
    assert train(root) == 0
    return root, read_record(RunKey("resnet50", "demo", "synthetic", STEP, 0).record_path(root / "results"))


# ---------------------------------------------------------------------------- kept weights
def test_a_complete_run_keeps_its_weights_and_names_them_in_its_record(run):
    root, record = run
    path = root / "weights" / record["weights"]
    assert record["weights"] == f"resnet50/demo/synthetic/{STEP}/seed0.pt" and path.is_file()
    assert sha256_of(path) == record["weights_sha256"]
    assert record["classes"] == [f"class{i}" for i in range(10)]
    state = torch.load(path, weights_only=True)
    network = update_dataclass(ModelConfig(), record["config"]["model"], "model")
    assert set(state) == set(build_model(network, 10).state_dict())
    assert not list((root / "ckpt").rglob("*.pt")), "the checkpoint goes, the weights stay"


def test_a_rerun_warns_when_a_complete_runs_weights_are_missing(run, capsys):
    root, record = run
    capsys.readouterr()
    assert train(root, "--weights", str(root / "elsewhere")) == 0
    err = capsys.readouterr().err
    assert "already complete, skipped" in err and "warning:" in err and "weights" in err and "missing" in err
    assert read_record(RunKey("resnet50", "demo", "synthetic", STEP, 0).record_path(root / "results")) == record
    assert not (root / "elsewhere" / record["weights"]).exists(), "a warning, not a silent retraining"


def test_every_source_knows_its_class_names(tmp_path):
    assert load_source("synthetic", None, 16, 8, 3).classes == ["class0", "class1", "class2"]
    for split in ("train", "val"):
        for name in ("dog", "cat"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "0.png")
    assert load_source(f"imagefolder:{tmp_path}", None, 16, 8, 3).classes == ["cat", "dog"]
    if FASHION_MNIST.exists():
        assert load_source("fashion-mnist", None, 28, 8, 3).classes == list(FASHION_MNIST_CLASSES)
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[-1] == "Ankle boot"
