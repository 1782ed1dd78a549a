"""Trained models are kept and usable: weights (safetensors) and classes in the record, export to roadmap / timm /
torchvision, predict and evaluate, fine-tuning from weights. One tiny run (trained once) serves most tests."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

from safetensors.torch import load_file

from conftest import tiny

from roadmap import cli
from roadmap.config import DataConfig, ModelConfig, ScaleConfig, load_step, set_fields
from roadmap.data import build_data, load_source, read_eval_images
from roadmap.data.sources import FASHION_MNIST_CLASSES
from roadmap.results import RunKey, read_record, write_record
from roadmap.predict import label_map
from roadmap.steps import build_model
from roadmap.weights import load_kept, load_native, read_state, sha256_of

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
# ConvNeXt at 1/8 width, stem stride 4 (timm's default patch size), 32 px, 64 synthetic images, one epoch.
TINY = tiny("scale.batch_size=32", "scale.micro_batch=32", "data.synthetic_size=64", "scale.image_size=32",
            "scale.stem_stride=4")
STEP = "separate_downsampling"


def train(root: Path, *args) -> int:
    return cli.main(["run", "--step", STEP, "--results", str(root / "results"), "--checkpoints", str(root / "ckpt"),
                     *TINY, *args])


def use(root: Path, command: str, *args) -> int:
    return cli.main([command, "--step", STEP, "--results", str(root / "results"), *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One complete tiny run: (folder, record); its weights are in folder/results/weights."""
    root = tmp_path_factory.mktemp("run")
    assert train(root) == 0
    return root, read_record(RunKey("resnet50", "demo", "synthetic", STEP, 0).record_path(root / "results"))


def one_error_line(capsys, expect: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err


# ---------------------------------------------------------------------------- kept weights
def is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte header length, that many bytes of JSON, then raw tensor bytes (no room for
    pickled code)."""
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    return data[8:9] == b"{" and isinstance(json.loads(data[8:8 + header]), dict)


def test_a_complete_run_keeps_its_weights_and_names_them_in_its_record(run):
    root, record = run
    path = root / "results" / "weights" / record["weights"]
    assert record["weights"] == f"resnet50/demo/synthetic/{STEP}/seed0.safetensors" and path.is_file()
    assert is_safetensors(path) and sha256_of(path) == record["weights_sha256"]
    assert record["classes"] == [f"class{i}" for i in range(10)] and record["init_from"] is None
    state = load_file(path)
    network = set_fields(ModelConfig(), record["config"]["model"], "model")
    assert set(state) == set(build_model(network, 10).state_dict())
    assert not list((root / "ckpt").rglob("*.pt")), "the checkpoint goes, the weights stay"


def test_weights_kept_before_as_pt_files_still_load(run, tmp_path):
    """Runs kept before safetensors wrote seed<k>.pt (torch.save); their records name that file."""
    root, record = run
    kept = load_kept(record, root / "results" / "weights")
    old = tmp_path / "weights" / Path(record["weights"]).with_suffix(".pt")
    old.parent.mkdir(parents=True)
    torch.save(kept.state_dict(), old)
    before = {**record, "weights": Path(record["weights"]).with_suffix(".pt").as_posix(),
              "weights_sha256": sha256_of(old)}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_kept(before, tmp_path / "weights")(x), kept(x), atol=0, rtol=0)


def test_a_rerun_warns_when_a_complete_runs_weights_are_missing(run, capsys):
    root, record = run
    capsys.readouterr()
    assert train(root, "--weights", str(root / "elsewhere")) == 0
    err = capsys.readouterr().err
    assert "already complete, skipped" in err and "warning:" in err and "weights" in err and "missing" in err
    assert read_record(RunKey("resnet50", "demo", "synthetic", STEP, 0).record_path(root / "results")) == record
    assert not (root / "elsewhere" / record["weights"]).exists(), "a warning, not a silent retraining"


def test_every_source_knows_its_class_names(tmp_path):
    assert load_source(DataConfig(spec="synthetic", synthetic_size=8, synthetic_classes=3), 16).classes == \
        ["class0", "class1", "class2"]
    for split in ("train", "val"):
        for name in ("dog", "cat"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "0.png")
    assert load_source(DataConfig(spec=f"imagefolder:{tmp_path}"), 16).classes == ["cat", "dog"]
    if FASHION_MNIST.exists():
        assert load_source(DataConfig(spec="fashion-mnist"), 28).classes == list(FASHION_MNIST_CLASSES)
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[-1] == "Ankle boot"


# ---------------------------------------------------------------------------- export
def test_native_export_rebuilds_the_exact_network(run, tmp_path):
    root, record = run
    assert use(root, "export", "--to", str(tmp_path / "native.safetensors")) == 0
    assert is_safetensors(tmp_path / "native.safetensors")
    model, config, classes = load_native(tmp_path / "native.safetensors")
    assert classes == record["classes"] and config == record["config"]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), load_kept(record, root / "results" / "weights")(x), atol=0, rtol=0)


def test_a_native_export_written_before_by_torch_save_still_loads(run, tmp_path):
    root, record = run
    kept = load_kept(record, root / "results" / "weights")
    torch.save({"state_dict": kept.state_dict(), "config": record["config"], "classes": record["classes"]},
               tmp_path / "old.pt")
    model, config, classes = load_native(tmp_path / "old.pt")
    assert classes == record["classes"] and config == record["config"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), kept(x), atol=0, rtol=0)


@pytest.mark.parametrize("metadata,expect", [
    ({"config": "{not json", "classes": "[\"a\"]"}, "no readable 'config' in its metadata"),
    ({"config": "{\"model\": {}}"}, "no readable 'classes' in its metadata"),
    ({"config": "[1, 2]", "classes": "[\"a\"]"}, "its config has no model section"),
    ({"config": "{\"model\": {}}", "classes": "{\"a\": 1}"}, "its classes are not a list of class names"),
])
def test_a_native_export_with_damaged_metadata_is_one_error_naming_it(run, tmp_path, metadata, expect):
    from roadmap.config import ConfigError
    from roadmap.weights import NATIVE, safetensors_bytes
    root, record = run
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(safetensors_bytes(load_kept(record, root / "results" / "weights").state_dict(),
                                       {**NATIVE, **metadata}))
    with pytest.raises(ConfigError, match="damaged native export") as err:
        load_native(path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_another_steps_weights_under_a_records_name_are_one_line_naming_the_first_tensor(run, tmp_path, capsys):
    import shutil
    from roadmap.weights import safetensors_bytes
    root, record = run
    shutil.copytree(root / "results", tmp_path / "results")
    path = tmp_path / "results" / "weights" / record["weights"]
    cfg = set_fields(ModelConfig(), record["config"]["model"], "model")
    other = build_model(dataclasses.replace(cfg, widths=tuple(2 * w for w in cfg.widths)), len(record["classes"]))
    path.write_bytes(safetensors_bytes(other.state_dict()))   # planted, its sha256 written into the record
    write_record(tmp_path / "results", RunKey("resnet50", "demo", "synthetic", STEP, 0),
                 {**record, "weights_sha256": sha256_of(path)})
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(image)
    capsys.readouterr()
    assert use(tmp_path, "predict", str(image)) == 2
    one_error_line(capsys, f"{path} does not fit the network its run trained: its tensor 'stem.0.weight' has shape")


def test_a_native_export_is_a_safetensors_file_or_nothing(run, tmp_path, capsys):
    root, _ = run
    capsys.readouterr()
    assert use(root, "export", "--to", str(tmp_path / "native.pt")) == 2
    one_error_line(capsys, f"name it {tmp_path / 'native.safetensors'}")
    assert not (tmp_path / "native.pt").exists()


def test_timm_export_at_the_runs_width_loads_into_timms_convnext(run, tmp_path):
    root, record = run
    assert use(root, "export", "--to", str(tmp_path / "timm.pt"), "--format", "timm") == 0
    model = record["config"]["model"]
    theirs = timm.models.convnext.ConvNeXt(depths=model["depths"], dims=model["widths"], num_classes=10).eval()
    theirs.load_state_dict(torch.load(tmp_path / "timm.pt", weights_only=True))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), load_kept(record, root / "results" / "weights")(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 8])
def test_timm_export_loads_into_timms_convnext_at_every_stem_stride_timm_can_express(tmp_path, capsys, fake_run,
                                                                                       stride):
    ours = fake_run(tmp_path, "resnet50", STEP, width_mult=0.125, depth_mult=0.34, stem_stride=stride)
    to = tmp_path / "t.safetensors"
    capsys.readouterr()
    code = use(tmp_path, "export", "--scale", "paper", "--to", str(to), "--format", "timm")
    if stride in (2, 8):   # timm's stage 0 then downsamples as well; its last stages dilate (README)
        assert code == 2 and not to.exists()
        one_error_line(capsys, f"timm's ConvNeXt computes this network at stem stride 1, 3 or 4 alone, not {stride}")
        return
    assert code == 0
    theirs = timm.models.convnext.ConvNeXt(depths=[1, 1, 3, 1], dims=[12, 24, 48, 96], num_classes=10,
                                           patch_size=stride).eval()
    theirs.load_state_dict(load_file(to))
    x = torch.randn(2, 3, 16 * stride, 16 * stride)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)


def test_full_width_convnext_t_exports_to_timm_create_model(tmp_path, fake_run):
    ours = fake_run(tmp_path, "resnet50", STEP)
    assert use(tmp_path, "export", "--scale", "paper", "--to", str(tmp_path / "t.safetensors"), "--format", "timm") == 0
    assert is_safetensors(tmp_path / "t.safetensors")
    theirs = timm.create_model("convnext_tiny", num_classes=10, checkpoint_path=str(tmp_path / "t.safetensors")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)


def test_step_0_exports_to_torchvisions_resnet50(tmp_path, fake_run):
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
    to = tmp_path / "out.safetensors"
    assert cli.main(["export", *step, "--results", str(root / "results"), "--to", str(to), *args]) == 2
    one_error_line(capsys, expect)
    assert not to.exists()


# ---------------------------------------------------------------------------- files a record names
@pytest.mark.parametrize("target", ["weights", "record"])
def test_export_never_overwrites_a_file_a_record_names(run, capsys, target):
    root, record = run
    key = RunKey("resnet50", "demo", "synthetic", STEP, 0)
    to = root / "results" / "weights" / record["weights"] if target == "weights" else key.record_path(root / "results")
    before = to.read_bytes()
    capsys.readouterr()
    assert use(root, "export", "--to", str(to)) == 2
    # The record is no .safetensors file, which a native export is refused before anything else.
    one_error_line(capsys, f"--to {to} is the kept weights of {STEP} seed 0" if target == "weights" else str(to))
    assert to.read_bytes() == before
    assert sha256_of(root / "results" / "weights" / record["weights"]) == record["weights_sha256"]


@pytest.mark.parametrize("option", ["--csv", "--plot"])
def test_evaluate_never_writes_its_report_over_a_file_a_record_names(run, capsys, option):
    root, record = run
    to = root / "results" / "weights" / record["weights"]
    before = to.read_bytes()
    capsys.readouterr()
    assert use(root, "evaluate", "--data", "synthetic", option, str(to)) == 2
    one_error_line(capsys, f"{option} {to} is the kept weights of {STEP} seed 0")
    assert to.read_bytes() == before


def test_checkpoints_and_weights_in_one_folder_are_refused_before_anything_is_written(tmp_path, capsys):
    shared = tmp_path / "shared"
    capsys.readouterr()
    assert train(tmp_path, "--checkpoints", str(shared), "--weights", str(shared)) == 2
    one_error_line(capsys, f"--checkpoints and --weights are one folder ({shared})")
    assert not shared.exists() and not (tmp_path / "results").exists()


def test_a_checkpoint_clean_up_spares_the_weights_a_record_names(run, capsys):
    root, record = run
    kept = root / "results" / "weights" / record["weights"]
    # The weights folder named as the checkpoints folder of a later command: the finished run's "checkpoint"
    # there is its kept weights, which the skip's clean-up must not delete.
    assert train(root, "--checkpoints", str(root / "results" / "weights"), "--weights", str(root / "other")) == 0
    assert "already complete, skipped" in capsys.readouterr().err
    assert kept.is_file() and sha256_of(kept) == record["weights_sha256"]


def test_a_demo_width_resnet_cannot_be_torchvisions(tmp_path, capsys, fake_run):
    fake_run(tmp_path, "resnet50", "resnet50", width_mult=0.125, stem_stride=2)   # as the demo scale trains it
    assert cli.main(["export", "--step", "resnet50", "--scale", "paper", "--results", str(tmp_path / "results"),
                     "--to", str(tmp_path / "r.pt"), "--format", "torchvision"]) == 2
    one_error_line(capsys, "torchvision's ResNet has widths (64, 128, 256, 512) and stem stride 4")
    assert not (tmp_path / "r.pt").exists()


# ---------------------------------------------------------------------------- predict and evaluate
def test_predict_sees_an_image_as_the_runs_evaluation_did(run, tmp_path, capsys):
    root, record = run
    data = build_data(DataConfig(spec="synthetic", workers=0, synthetic_size=64), ScaleConfig(image_size=32, crop="pad"),
                      batch_size=8, eval_only=True)
    images, _ = next(iter(data.eval_batches()))
    (tmp_path / "imgs").mkdir()
    Image.fromarray(data.eval_images[0].permute(1, 2, 0).contiguous().numpy()).save(tmp_path / "imgs" / "a.png")
    Image.fromarray(np.full((40, 30), 128, np.uint8), "L").save(tmp_path / "imgs" / "gray.png")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    capsys.readouterr()
    assert use(root, "predict", "--json", str(tmp_path / "imgs")) == 0
    out = capsys.readouterr()
    predictions = {Path(p["image"]).name: p["top5"] for p in json.loads(out.out)}
    assert set(predictions) == {"a.png", "gray.png"}
    assert out.err.count("warning:") == 1 and "broken.jpg" in out.err
    with torch.no_grad():
        expected = load_kept(record, root / "results" / "weights")(images[:1]).softmax(1)[0]
    top = expected.topk(5)
    assert [c["class"] for c in predictions["a.png"]] == [record["classes"][i] for i in top.indices]
    assert [c["prob"] for c in predictions["a.png"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert use(root, "predict", str(tmp_path / "imgs" / "gray.png")) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(tmp_path / "imgs" / "gray.png") + ": class") and line.count("%") == 5


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_a_file_is_resized_as_an_array_datasets_eval_path_resizes(tmp_path):
    data = build_data(DataConfig(spec="fashion-mnist", workers=0), ScaleConfig(image_size=32, crop="pad", eval_subset=4),
                      batch_size=4, eval_only=True)
    images, _ = next(iter(data.eval_batches()))
    raw = load_source(DataConfig(spec="fashion-mnist"), 32).eval.subset(4).pixels[0, ..., 0]   # 28 x 28, as stored
    Image.fromarray(np.ascontiguousarray(raw), "L").save(tmp_path / "item.png")
    ours, read, failures = read_eval_images([str(tmp_path / "item.png")], 32, "pad", from_files=False)
    assert read == [str(tmp_path / "item.png")] and not failures
    torch.testing.assert_close(ours, images[:1], atol=0, rtol=0)


def test_a_file_is_resized_as_an_image_folders_eval_path_resizes(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(tmp_path / split / name / "0.png")
    data = build_data(DataConfig(spec=f"imagefolder:{tmp_path}", workers=0), ScaleConfig(image_size=16, crop="rrc"),
                      batch_size=2, eval_only=True)
    images, _ = next(iter(data.eval_batches()))
    ours, _, _ = read_eval_images([str(tmp_path / "val" / "a" / "0.png")], 16, "rrc", from_files=True)
    torch.testing.assert_close(ours, images[:1], atol=0, rtol=0)


def test_evaluate_gives_the_runs_own_accuracy_on_its_own_data(run, capsys):
    root, record = run
    capsys.readouterr()
    assert use(root, "evaluate", "--data", "synthetic", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    one_image = 100 / record["eval_images"]
    assert result["images"] == record["eval_images"]
    assert result["top1"] == pytest.approx(record["top1"], abs=one_image)
    assert result["top5"] == pytest.approx(record["top5"], abs=one_image)


def test_evaluate_refuses_data_with_other_classes(run, tmp_path, capsys):
    root, _ = run
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "0.png")
    capsys.readouterr()
    assert use(root, "evaluate", "--data", f"imagefolder:{tmp_path}") == 2
    one_error_line(capsys, "other classes than the run was trained on")


def test_evaluate_matches_classes_by_name():
    record = {"classes": ["T-shirt/top", "Trouser", "Bag"]}
    assert label_map(record, "imagefolder:x", ["Bag", "T-shirt_top", "Trouser"]).tolist() == [2, 0, 1]


@pytest.mark.parametrize("command", ["predict", "export", "evaluate"])
@pytest.mark.parametrize("field", ["classes", "weights_sha256", "config"])
def test_a_record_that_lacks_what_its_weights_need_is_one_line(run, tmp_path, capsys, command, field):
    root, record = run
    results = tmp_path / "results"
    write_record(results, RunKey("resnet50", "demo", "synthetic", STEP, 0),
                 {k: v for k, v in record.items() if k != field})
    image = tmp_path / "shoe.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    args = {"predict": [str(image)], "export": ["--to", str(tmp_path / "out.safetensors")], "evaluate": ["--data", "synthetic"]}
    capsys.readouterr()
    assert cli.main([command, "--step", STEP, "--results", str(results), "--weights", str(root / "results" / "weights"),
                     *args[command]]) == 2
    one_error_line(capsys, f"its record has no usable {field}")
    assert not (tmp_path / "out.safetensors").exists()


# ---------------------------------------------------------------------------- fine-tuning
def test_fine_tuning_from_a_timm_state_dict_reinitialises_a_head_of_another_size(run, tmp_path):
    root, _ = run
    assert use(root, "export", "--to", str(tmp_path / "timm.pt"), "--format", "timm") == 0
    start = torch.load(tmp_path / "timm.pt", weights_only=True)
    assert train(tmp_path, "--set", f"train.init_from={tmp_path / 'timm.pt'}", "--set", "data.synthetic_classes=4",
                 "--set", "recipe.lr=1e-12") == 0   # a step too small to move the weights
    record = read_record(RunKey("resnet50", "demo", "synthetic", STEP, 0).record_path(tmp_path / "results"))
    assert record["init_from"]["path"] == str(tmp_path / "timm.pt")
    assert record["init_from"]["head"].startswith("re-initialised (10 classes in the file, 4 here)")
    tuned = read_state(tmp_path / "results" / "weights" / record["weights"])
    torch.testing.assert_close(tuned["stem.0.weight"], start["stem.0.weight"], atol=1e-6, rtol=0)
    assert tuned["fc.weight"].shape[0] == 4


def test_fine_tuning_from_a_native_safetensors_export(run, tmp_path):
    root, _ = run
    assert use(root, "export", "--to", str(tmp_path / "mine.safetensors")) == 0
    start = read_state(tmp_path / "mine.safetensors")
    assert train(tmp_path, "--set", f"train.init_from={tmp_path / 'mine.safetensors'}", "--set", "recipe.lr=1e-12") == 0
    record = read_record(RunKey("resnet50", "demo", "synthetic", STEP, 0).record_path(tmp_path / "results"))
    assert record["init_from"]["head"] == "loaded" and record["init_from"]["sha256"] == sha256_of(
        tmp_path / "mine.safetensors")
    tuned = read_state(tmp_path / "results" / "weights" / record["weights"])
    torch.testing.assert_close(tuned["fc.weight"], start["fc.weight"], atol=1e-6, rtol=0)


def test_weights_that_do_not_fit_the_step_stop_before_anything_is_written(tmp_path, capsys):
    wrong, resnet = tmp_path / "resnet.pt", load_step("resnet50", "resnet50").model
    torch.save(build_model(dataclasses.replace(resnet, widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)), 10).state_dict(),
               wrong)
    capsys.readouterr()
    assert train(tmp_path, "--set", f"train.init_from={wrong}") == 2
    one_error_line(capsys, "train.init_from")
    assert not (tmp_path / "results").exists() and not (tmp_path / "results" / "weights").exists()


def test_weights_of_the_same_step_at_another_width_name_the_first_tensor(tmp_path, capsys):
    step = load_step("resnet50", STEP)
    wide = build_model(dataclasses.replace(step.model, widths=(16, 32, 64, 128), depths=(1, 1, 3, 1)), 10)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    capsys.readouterr()
    assert train(tmp_path, "--set", f"train.init_from={tmp_path / 'wide.pt'}") == 2
    one_error_line(capsys, "tensor 'stem.0.weight' has shape (16, 3, 4, 4)")
    assert not (tmp_path / "results").exists()


def test_weights_to_start_from_that_are_a_folder_say_so(tmp_path, capsys):
    capsys.readouterr()
    assert train(tmp_path, "--set", f"train.init_from={tmp_path}") == 2
    one_error_line(capsys, f"weights file {tmp_path} is a folder, not a file")
    assert not (tmp_path / "results").exists()

