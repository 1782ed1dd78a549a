"""Export to Hugging Face: a run of a ConvNeXt (any width, any stem stride) as a folder that transformers loads
with every tensor in place and that computes the run's logits; other networks are refused in one line. Nothing is
downloaded: the folder is all transformers reads."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from roadmap import cli
from roadmap.config import DataConfig, ScaleConfig
from roadmap.data import build_data, read_eval_images
from roadmap.huggingface import HF_FILES
from roadmap.predict import evaluate
from roadmap.results import load_records
from roadmap.weights import load_kept

transformers = pytest.importorskip("transformers", reason="the huggingface extra (make test installs it)")

STEP = "separate_downsampling"   # = ConvNeXt-T; at the demo scale 1/4 width, stem stride 4, 32 px
RUN = ["--no-progress", "--set", "scale.epochs=1", "--set", "scale.batch_size=8", "--set", "scale.micro_batch=8",
       "--set", "data.workers=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, photos):
    """One tiny run of ConvNeXt-T on a folder of photos: (folder, its image folder, record)."""
    root = tmp_path_factory.mktemp("hf")
    folder = photos(root / "photos")
    assert cli.main(["run", "--step", STEP, "--data", f"imagefolder:{folder}", "--results", str(root / "results"),
                     "--checkpoints", str(root / "ckpt"), *RUN]) == 0
    (record,) = load_records(root / "results")
    return root, folder, record


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    root, _, _ = run
    out = tmp_path_factory.mktemp("export") / "my-convnext"
    assert export(root, STEP, out) == 0
    return out


def export(root: Path, step: str, out: Path, *args: str) -> int:
    return cli.main(["export", "--step", step, "--results", str(root / "results"), "--format", "huggingface",
                     "--to", str(out), *args])


def load_strictly(folder: Path):
    """transformers' model from the folder, after checking it found every tensor it has, and no other."""
    model, info = transformers.ConvNextForImageClassification.from_pretrained(folder, output_loading_info=True)
    assert all(not found for found in info.values()), info   # missing, unexpected, mismatched keys; errors
    return model.eval()


def eval_images(folder: Path, record: dict) -> torch.Tensor:
    scale = record["config"]["scale"]
    data = build_data(DataConfig(spec=f"imagefolder:{folder}", workers=0),
                      ScaleConfig(image_size=scale["image_size"], crop=scale["crop"]), batch_size=64, eval_only=True)
    return next(iter(data.eval_batches()))[0]


def test_transformers_loads_the_export_strictly_and_computes_the_runs_logits(run, exported):
    root, folder, record = run
    assert sorted(p.name for p in exported.iterdir()) == sorted(HF_FILES) == [
        "README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    theirs = load_strictly(exported)
    config = json.loads((exported / "config.json").read_text())
    assert config["layer_norm_eps"] == 1e-6 and config["patch_size"] == 4 and config["drop_path_rate"] == 0
    assert theirs.config.id2label == {0: "cat", 1: "dog", 2: "fox"} and theirs.config.label2id["fox"] == 2
    assert theirs.config.hidden_sizes == record["config"]["model"]["widths"]
    images = eval_images(folder, record)
    with torch.no_grad():
        difference = (theirs(pixel_values=images).logits - load_kept(record, root / "results" / "weights")(images))
    assert difference.abs().max() <= 1e-4


def test_the_image_processor_sees_an_image_as_the_runs_evaluation_did(run, exported):
    """Top-1 on the run's evaluation set both ways: our evaluation, and transformers' image processor and model
    on the same files. A square image becomes the same pixels either way; another shape does not quite: the
    processor resizes the shorter side, then crops, where ours crops the center square, then resizes."""
    root, folder, record = run
    processor = transformers.AutoImageProcessor.from_pretrained(exported)
    files = sorted((folder / "val").rglob("*.png"))
    labels = torch.tensor([record["classes"].index(f.parent.name) for f in files])
    pixels = processor(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
    ours_pixels, _, _ = read_eval_images(list(map(str, files)), 32, "pad", from_files=True)
    assert pixels.shape == ours_pixels.shape == (len(files), 3, 32, 32)
    square = [i for i, f in enumerate(files) if Image.open(f).size[0] == Image.open(f).size[1]]
    one_level = 1 / 255 / min(processor.image_std) + 1e-4   # one step of 8-bit rounding, normalised
    assert square and (pixels[square] - ours_pixels[square]).abs().max() <= one_level, "a square image: the same pixels"
    with torch.no_grad():
        theirs = load_strictly(exported)(pixel_values=pixels).logits.argmax(1)
    their_top1 = 100 * (theirs == labels).float().mean().item()
    ours = evaluate(load_kept(record, root / "results" / "weights"), record, f"imagefolder:{folder}", None,
                    torch.device("cpu"))
    assert ours["images"] == len(files)
    assert abs(their_top1 - ours["top1"]) <= 100 * 2 / len(files), (their_top1, ours["top1"])


def test_the_model_card_says_what_the_record_says(run, exported):
    """README.md: the Hub's YAML header (library, task, dataset, the record's top-1 as a metric), then the step,
    the paper, the size, the recipe and scale as resolved, the command, the commit, the classes, how to load it."""
    _, _, record = run
    text = (exported / "README.md").read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == "image-classification"
    assert header["datasets"] == [record["data"]] and STEP in header["tags"]
    (result,) = header["model-index"][0]["results"]
    top1 = next(m["value"] for m in result["metrics"] if m["name"].startswith("top-1"))
    assert top1 == record["top1"] and result["dataset"]["name"] == record["data"]
    body = text.split("---\n", 2)[2]
    resolved = yaml.safe_load(body.split("```yaml\n")[1].split("```")[0])
    assert resolved == {"model": record["config"]["model"], "recipe": record["recipe"],
                        "scale": record["config"]["scale"]}
    for fact in (f"step `{STEP}` of roadmap `resnet50`", record["title"], "arXiv:2201.03545",
                 f"| parameters | {record['params']:,} |", f"GFLOPs at {record['image_size']} px",
                 f"python {record['command']}", f"`{record['git_commit']}`", "0. cat\n1. dog\n2. fox",
                 "ConvNextForImageClassification.from_pretrained"):
        assert fact in body, fact


def test_an_export_never_replaces_a_file_a_record_names_inside_its_folder(run, exported, tmp_path, capsys):
    """A run fine-tuned from the folder's model.safetensors names that file: exporting it into the same folder
    is refused, every file of the folder (its card too) left as it was."""
    _, folder, _ = run
    assert cli.main(["run", "--step", STEP, "--data", f"imagefolder:{folder}", "--results", str(tmp_path / "results"),
                     "--checkpoints", str(tmp_path / "ckpt"), *RUN,
                     "--set", f"train.init_from={exported / 'model.safetensors'}"]) == 0
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    capsys.readouterr()
    assert export(tmp_path, STEP, exported) == 2
    assert "model.safetensors is the weights" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before


def test_fine_tuning_starts_from_a_hugging_face_convnext_file(run, exported, tmp_path):
    root, folder, record = run
    start = load_kept(record, root / "results" / "weights").state_dict()
    assert cli.main(["run", "--step", STEP, "--data", f"imagefolder:{folder}", "--results", str(tmp_path / "results"),
                     "--checkpoints", str(tmp_path / "ckpt"), *RUN, "--set", "recipe.lr=1e-12",
                     "--set", f"train.init_from={exported / 'model.safetensors'}"]) == 0
    (tuned,) = load_records(tmp_path / "results")
    assert tuned["init_from"]["head"] == "loaded"
    after = load_kept(tuned, tmp_path / "results" / "weights").state_dict()
    for name in ("stem.0.weight", "stages.3.blocks.0.pwconv1.weight", "head_norm.weight", "fc.weight"):
        torch.testing.assert_close(after[name], start[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("roadmap,step,scale", [
    ("convnext", "convnext_t", {"width_mult": 0.125, "depth_mult": 0.34, "stem_stride": 2}),
    ("reverse", "no_layer_scale", {"width_mult": 0.125, "depth_mult": 0.34}),       # no layer scale parameters
    ("resnet50", "official_init", {"width_mult": 0.25, "depth_mult": 0.34, "stem_stride": 1}),
])
def test_a_convnext_at_any_width_and_stem_stride_exports(roadmap, step, scale, tmp_path, fake_run):
    ours = fake_run(tmp_path, roadmap, step, classes=5, **scale)
    out = tmp_path / "hf"
    assert cli.main(["export", "--roadmap", roadmap, "--step", step, "--scale", "paper", "--results",
                     str(tmp_path / "results"), "--format", "huggingface", "--to", str(out)]) == 0
    theirs = load_strictly(out)
    assert theirs.config.patch_size == scale.get("stem_stride", 4)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (theirs(pixel_values=x).logits - ours(x)).abs().max() <= 1e-4


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("step,expect", [
    ("gelu", ["step gelu is not a ConvNeXt", "norm 'bn' (BatchNorm)", "downsample 'in_block' (in-block downsampling)"]),
    ("kernel5", ["kernel_size 5, not 7"]),
    ("resnet50", ["stem 'resnet' (the ResNet stem)", "act 'relu' (ReLU)"]),
])
def test_a_network_that_is_not_a_convnext_is_refused_in_one_line(step, expect, tmp_path, capsys):
    capsys.readouterr()
    assert export(tmp_path, step, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert all(part in line for part in expect) and "--format native" in line, line
    assert not (tmp_path / "out").exists()


def test_a_run_that_changed_the_kernel_is_refused(tmp_path, capsys, fake_run):
    fake_run(tmp_path, "resnet50", STEP, model={"kernel_size": 5}, width_mult=0.125, depth_mult=0.34)
    capsys.readouterr()
    assert export(tmp_path, STEP, tmp_path / "out", "--scale", "paper") == 2
    assert f"this run of {STEP} is not a ConvNeXt" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_an_export_folder_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "out").write_text("mine")
    capsys.readouterr()
    assert export(tmp_path, STEP, tmp_path / "out") == 2
    assert "writes a folder, and" in one_error_line(capsys)
    assert (tmp_path / "out").read_text() == "mine"
