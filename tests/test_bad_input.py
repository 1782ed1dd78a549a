"""A catalogue of user mistakes: each is ONE line on stderr, exit 2, no traceback, nothing written.

The one home of a bad input case: a wrong value, key, type, flag or dataset is a line of CASES (or a test here),
whichever module refuses it."""
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import main, runner

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--no-progress", "--set", "scale.classic_epochs=1"]


def image_folder(root: Path, splits=("train", "val"), classes=("a", "b"), per_class=2) -> Path:
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (12, 12), (40 * i, 90, 10)).save(root / split / name / f"{i}.png")
    return root


def run_in_process(capsys, args, results):
    """main, a run writing to `results` (where nothing may be written): (exit code, stderr)."""
    return main(capsys, *args, *(["--results", results] if args and args[0] == "run" else []))


def assert_one_clear_line(code, err, expect, results: Path):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*")), list(results.rglob("*"))


def broken_steps(tmp_path, name, text):
    steps = tmp_path / "steps"
    shutil.copytree(ROOT / "steps", steps)
    (steps / "resnet50" / name).write_text(text)
    return steps


CASES = {
    "unknown step": (["run", "--step", "kernal7"], "did you mean 'kernel7'"),
    "unknown roadmap": (["run", "--all", "--roadmap", "resnet34"], "unknown roadmap 'resnet34'"),
    "unknown scale": (["run", "--all", "--scale", "tiny"], "unknown scale 'tiny'"),
    "unknown key": (["run", "--step", "gelu", "--set", "model.kernal_size=5"], "did you mean 'kernel_size'"),
    "unknown section": (["run", "--step", "gelu", "--set", "modle.kernel_size=5"], "did you mean 'model'"),
    "wrong type": (["run", "--step", "gelu", "--set", "scale.batch_size=two"], "scale.batch_size must be int"),
    "wrong list type": (["run", "--step", "gelu", "--set", "model.depths=[1,x,1,1]"], "model.depths[1] must be int"),
    "set without =": (["run", "--step", "gelu", "--set", "model.kernel_size"], "--set needs section.key=value"),
    "bad choice": (["run", "--step", "gelu", "--set", "model.act=swish"], "model.act must be one of"),
    "seeds 0": (["run", "--step", "gelu", "--seeds", "0"], "--seeds must be 1 or more"),
    "negative seeds": (["run", "--step", "gelu", "--seeds", "-2"], "--seeds must be 1 or more"),
    "jobs 0": (["run", "--step", "gelu", "--jobs", "0"], "--jobs must be 1 or more"),
    "seed of hundreds of digits": (["run", "--step", "gelu", "--seed", "7" * 300], "train.seed must be >= 0 and <="),
    "seeds beyond what a command plans": (["run", "--step", "gelu", "--seeds", str(10**12), "--dry-run"],
                                          "1000000000000 seeds in one command; at most 1000"),
    "plan seeds beyond what a command plans": (["plan", "--seeds", str(10**12)], "seeds in one command; at most"),
    "a network wider than any": (["run", "--step", "gelu", "--set", "scale.width_mult=1e6"],
                                 "must stay within 1000 blocks and 65536 channels"),
    "a network deeper than any": (["run", "--step", "gelu", "--set", "scale.depth_mult=1e30"],
                                  "must stay within 1000 blocks and 65536 channels"),
    "a network whose training would not fit": (["run", "--step", "gelu", "--set", "scale.width_mult=60"],
                                               "GiB to train here, more than this machine's"),
    "a bench batch no memory holds": (["bench", "--steps", "gelu", "--batch", str(10**12), "--no-reference"],
                                      "for a batch of 1000000000000, more than this machine's"),
    "more synthetic classes than images": (["run", "--step", "gelu", "--data", "synthetic", "--set",
                                            f"data.synthetic_classes={10**30}"], "data.synthetic_classes from 2"),
    "image smaller than stride": (["run", "--step", "gelu", "--set", "scale.image_size=8"], "total stride 32"),
    "batch larger than the data": (["run", "--step", "gelu", "--data", "synthetic", "--set", "scale.batch_size=4096",
                                    "--set", "scale.micro_batch=4096"], "batch"),
    "missing dataset path": (["run", "--step", "gelu", "--data", "imagefolder:/no/such/folder"], "/no/such/folder"),
    "unknown dataset": (["run", "--step", "gelu", "--data", "imagenet"], "imagenet"),
    "zero batch": (["run", "--step", "gelu", "--set", "scale.batch_size=0"], "scale.batch_size must be >= 1"),
    "negative width": (["run", "--step", "gelu", "--set", "scale.width_mult=-1"], "scale.width_mult must be > 0"),
    "drop path above 1": (["run", "--step", "gelu", "--set", "model.drop_path=1.5"], "model.drop_path must be"),
    "unknown device": (["run", "--step", "gelu", "--set", "train.device=tpu"], "train.device must be one of auto, cpu, cuda, not 'tpu'"),
    "unknown amp": (["run", "--step", "gelu", "--set", "train.amp=fp8"], "train.amp must be"),
    "unknown recipe": (["run", "--step", "gelu", "--set", "recipe.name=fancy"], "recipe.name must be one of"),
    "unknown crop": (["run", "--step", "gelu", "--set", "scale.crop=zoom"], "scale.crop must be"),
    "momentum above 1": (["run", "--step", "gelu", "--set", "recipe.momentum=1.5"], "recipe.momentum must be"),
    "zero step gamma": (["run", "--step", "gelu", "--set", "recipe.step_gamma=0"], "recipe.step_gamma must be"),
    "zero lr batch": (["run", "--step", "gelu", "--set", "recipe.lr_batch=0"], "recipe.lr_batch must be"),
    "zero recipe epochs": (["run", "--step", "gelu", "--set", "recipe.epochs=0"], "recipe.epochs must be"),
    "wrong type of epochs": (["run", "--step", "kernel7", "--set", "scale.epochs=two"], "scale.epochs must be int"),
    "no subcommand option": (["run"], "one of the arguments --step --all is required"),
    "unknown flag": (["run", "--all", "--epochs", "3"], "unrecognized arguments: --epochs"),
    "scale name that is a path": (["run", "--step", "gelu", "--set", "scale.name=../../outside"],
                                  "scale name '../../outside' is not a plain name"),
    "check-rerun without fresh runs": (["check-rerun", "cpu/fashion-mnist", "--fresh", "/no/such/results"],
                                       "no results for roadmap resnet50, scale cpu, data fashion-mnist"),
    "check-rerun of the committed runs alone": (["check-rerun", "cpu/fashion-mnist", "--fresh", "results"],
                                                "is a copy of one under results"),
    "check-rerun set without data": (["check-rerun", "cpu", "--fresh", "results"], "a result set is SCALE/DATA"),
    "scale given as a file": (["run", "--step", "gelu", "--scale", "steps/scales/demo.yaml"],
                              "scale 'steps/scales/demo.yaml' is not a plain name"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cli_mistakes(name, tmp_path, capsys):
    args, expect = CASES[name]
    results = tmp_path / "results"
    code, err = run_in_process(capsys, args + FAST if args[0] == "run" and len(args) > 1 else args, results)
    assert_one_clear_line(code, err, expect, results)


@pytest.mark.parametrize("layout,expect", [
    ("no val", "val"),
    ("empty class", "train/c has no images"),
    ("no images", "no images"),
    ("class mismatch", "class"),
])
def test_image_folder_mistakes(layout, expect, tmp_path, capsys):
    root = tmp_path / "folder"
    if layout == "no val":
        image_folder(root, splits=("train",))
    elif layout == "empty class":
        image_folder(root)
        (root / "train" / "c").mkdir()
        (root / "val" / "c").mkdir()
    elif layout == "no images":
        for split in ("train", "val"):
            (root / split / "a").mkdir(parents=True)
            (root / split / "a" / "notes.txt").write_text("x")
    else:
        image_folder(root)
        image_folder(root, splits=("val",), classes=("c",))
    results = tmp_path / "results"
    code, err = run_in_process(capsys, ["run", "--step", "gelu", "--data", f"imagefolder:{root}", *FAST], results)
    assert_one_clear_line(code, err, expect, results)


@pytest.mark.parametrize("text,expect", [
    ("base: gelu\ntitle: [oops\n", "malformed YAML"),
    ("base: gelu\ntitle: t\nmodel: {kernal_size: 3}\n", "did you mean 'kernel_size'"),
    ("base: nothere\ntitle: t\n", "base 'nothere' is not a step"),
    ("base: mine\ntitle: t\n", "base cycle"),
    pytest.param("base: gelu\ntitle: t\nmodel: {depths: " + "[" * 100_000 + "]" * 100_000 + "}\n",
                 "nested too deeply to read", id="nested too deeply"),
])
def test_step_file_mistakes_through_the_cli(text, expect, tmp_path, capsys, monkeypatch):
    steps = broken_steps(tmp_path, "99_mine.yaml", text)
    monkeypatch.setattr("roadmap.config.STEPS_DIR", steps)
    results = tmp_path / "results"
    code, err = run_in_process(capsys, ["run", "--step", "mine", *FAST], results)
    assert_one_clear_line(code, err, expect, results)


def test_a_step_file_whose_id_is_not_a_plain_name_is_one_line(tmp_path, capsys, monkeypatch):
    steps = broken_steps(tmp_path, "99_...yaml", "base: gelu\ntitle: one folder up\n")   # its id would be '..'
    monkeypatch.setattr("roadmap.config.STEPS_DIR", steps)
    results = tmp_path / "results"
    code, err = run_in_process(capsys, ["run", "--all", *FAST], results)
    assert_one_clear_line(code, err, "99_...yaml: step id '..' is not a plain name", results)
    assert not list(tmp_path.rglob("*.json"))


def test_strict_mode_refuses_a_corrupt_image_before_training(tmp_path, capsys):
    root = image_folder(tmp_path / "folder", per_class=4)
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    results = tmp_path / "results"
    code, err = run_in_process(capsys, ["run", "--step", "gelu", "--data", f"imagefolder:{root}",
                                        "--set", "data.strict=true", "--set", "scale.batch_size=4",
                                        "--set", "scale.micro_batch=4", *FAST], results)
    assert_one_clear_line(code, err, "broken.jpg", results)


def test_jobs_under_torchrun_is_refused(tmp_path, capsys, monkeypatch):
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)   # what torchrun sets; the refusal comes before its process group
    results = tmp_path / "results"
    code, err = run_in_process(capsys, ["run", "--step", "gelu", "--data", "synthetic", "--jobs", "2", *FAST],
                               results)
    assert_one_clear_line(code, err, "--jobs does not go with torchrun", results)


def test_unwritable_results_folder(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = run_in_process(capsys, ["run", "--step", "gelu", "--data", "synthetic", *FAST], blocker / "results")
    assert code == 2 and "cannot be written" in err and err.strip().count("\n") == 0


def test_a_real_subprocess_prints_one_line_for_a_broken_step_file(tmp_path):
    steps = broken_steps(tmp_path, "99_mine.yaml", "base: gelu\ntitle: t\nmodel: {kernel_size: 4}\n")
    env = {"ROADMAP_STEPS_DIR": str(steps)}
    proc = runner("run", "--step", "mine", "--results", tmp_path / "results", *FAST, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "kernel_size must be odd" in proc.stderr
    assert not (tmp_path / "results").exists()
