"""Trained models are kept and usable: weights and classes in the record, export to roadmap / timm /
torchvision. One tiny run (trained once) serves most tests."""
import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from PIL import Image

from roadmap import cli
from roadmap.config import ModelConfig, build_run_config, to_dict, update_dataclass
from roadmap.data import FASHION_MNIST_CLASSES, load_source
from roadmap.results import SCHEMA_VERSION, RunKey, read_record, write_record
from roadmap.steps import build_model
from roadmap.weights import keep_weights, load_kept, load_native, sha256_of

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
# ConvNeXt at 1/8 width, stem stride 4 (timm's default patch size), 32 px, 64 synthetic images, one epoch.
TINY = ["--data", "synthetic", "--no-progress", "--set", "scale.epochs=1", "--set", "scale.batch_size=32",
        "--set", "scale.micro_batch=32", "--set", "data.synthetic_size=64", "--set", "scale.image_size=32",
        "--set", "scale.stem_stride=4"]
STEP = "separate_downsampling"


def train(root: Path, *args) -> int:
    return cli.main(["run", "--step", STEP, "--results", str(root / "results"), "--checkpoints", str(root / "ckpt"),
                     *TINY, *args])


def use(root: Path, command: str, *args) -> int:
    return cli.main([command, "--step", STEP, "--results", str(root / "results"), *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One complete tiny run: (folder, record); its weights are in folder/weights (beside folder/ckpt)."""
    root = tmp_path_factory.mktemp("run")
    assert train(root) == 0
    return root, read_record(RunKey("resnet50", "demo", "synthetic", STEP, 0).record_path(root / "results"))


def one_error_line(capsys, expect: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err


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


# ---------------------------------------------------------------------------- export
def test_native_export_rebuilds_the_exact_network(run, tmp_path):
    root, record = run
    assert use(root, "export", "--to", str(tmp_path / "native.pt")) == 0
    model, config, classes = load_native(tmp_path / "native.pt")
    assert classes == record["classes"] and config == record["config"]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), load_kept(record, root / "weights")(x), atol=0, rtol=0)


def test_timm_export_at_the_runs_width_loads_into_timms_convnext(run, tmp_path):
    root, record = run
    assert use(root, "export", "--to", str(tmp_path / "timm.pt"), "--format", "timm") == 0
    model = record["config"]["model"]
    theirs = timm.models.convnext.ConvNeXt(depths=model["depths"], dims=model["widths"], num_classes=10).eval()
    theirs.load_state_dict(torch.load(tmp_path / "timm.pt", weights_only=True))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), load_kept(record, root / "weights")(x), atol=1e-5, rtol=1e-5)


def fake_run(root: Path, roadmap: str, step_id: str, classes: int = 10, **scale) -> torch.nn.Module:
    """A freshly built network (full size, unless `scale` says otherwise) saved as a complete run's weights, with
    its record."""
    cfg = build_run_config(roadmap, step_id, "paper", "synthetic", 0, {"scale": {"image_size": 64, **scale}})
    torch.manual_seed(0)
    net = build_model(cfg.model, classes).eval()
    for m in net.modules():  # not the init: make norms and layer scale matter in the comparison
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if getattr(m, "gamma", None) is not None:
            m.gamma.data.uniform_(0.5, 1.5)
    key = RunKey(roadmap, "paper", "synthetic", step_id, 0)
    write_record(root / "results", key, {
        "schema": SCHEMA_VERSION, "roadmap": roadmap, "step": step_id, "scale": "paper", "data": "synthetic",
        "seed": 0, "status": "complete", "config": json.loads(json.dumps(to_dict(cfg))),
        "classes": [f"class{i}" for i in range(classes)], **keep_weights(root / "weights", key, net)})
    return net


def test_full_width_convnext_t_exports_to_timm_create_model(tmp_path):
    ours = fake_run(tmp_path, "resnet50", STEP)
    assert use(tmp_path, "export", "--scale", "paper", "--to", str(tmp_path / "t.pt"), "--format", "timm") == 0
    theirs = timm.create_model("convnext_tiny", num_classes=10, checkpoint_path=str(tmp_path / "t.pt")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)


def test_step_0_exports_to_torchvisions_resnet50(tmp_path):
    ours = fake_run(tmp_path, "resnet50", "resnet50")
    assert cli.main(["export", "--step", "resnet50", "--scale", "paper", "--results", str(tmp_path / "results"),
                     "--to", str(tmp_path / "r.pt"), "--format", "torchvision"]) == 0
    theirs = torchvision.models.resnet50(num_classes=10).eval()
    theirs.load_state_dict(torch.load(tmp_path / "r.pt", weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("args,expect", [
    (["--format", "torchvision"], "not a torchvision model"),
    (["--step", "gelu", "--format", "timm"], "step gelu is not a timm model"),
    (["--seed", "7"], "no record of resnet50/separate_downsampling seed 7"),
    (["--step", "separate_downsamplin"], "did you mean 'separate_downsampling'"),
    (["--weights", "/no/such/folder"], "are missing"),
])
def test_export_mistakes_are_one_line_and_write_nothing(run, tmp_path, capsys, args, expect):
    root, _ = run
    capsys.readouterr()
    step = [] if "--step" in args else ["--step", STEP]
    assert cli.main(["export", *step, "--results", str(root / "results"), "--to", str(tmp_path / "out.pt"), *args]) == 2
    one_error_line(capsys, expect)
    assert not (tmp_path / "out.pt").exists()


def test_a_demo_width_resnet_cannot_be_torchvisions(tmp_path, capsys):
    fake_run(tmp_path, "resnet50", "resnet50", width_mult=0.125, stem_stride=2)   # as the demo scale trains it
    assert cli.main(["export", "--step", "resnet50", "--scale", "paper", "--results", str(tmp_path / "results"),
                     "--to", str(tmp_path / "r.pt"), "--format", "torchvision"]) == 2
    one_error_line(capsys, "torchvision's ResNet has widths (64, 128, 256, 512) and stem stride 4")
    assert not (tmp_path / "r.pt").exists()
