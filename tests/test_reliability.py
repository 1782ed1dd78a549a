"""Reliability by class: non-finite and absurd values, empty paths, damaged dataset files, damaged results
and saved configs, output paths, checkpoints of another config (or planted, or damaged), interrupts and
stale (or planted) locks, 16-bit images.

Every user mistake is one line on stderr, exit 2, no traceback, nothing written; every damaged file a
program finds on its own is one warning that names it, and the program goes on."""
import gzip
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import typing
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import main, tiny
from roadmap import config, gpucheck, runs
from roadmap.config import SECTIONS, ConfigError, DataConfig, ScaleConfig, build_run_config, check_config, \
    parse_overrides, set_fields
from roadmap.data import DataError, build_data
from roadmap.data.folders import DEEP_GRAY_MODES, open_rgb
from roadmap.plan import RESUMABLE_CHANGES, config_fingerprint
from roadmap.runtime import rng_state, seed_global_rngs, set_rng_state
from roadmap.results import RunKey, RunLock, atomic_write_text, finished_status, load_records, lock_is_held, \
    read_record, write_record

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny()


def assert_refused(code, err, expect, folder: Path | None = None):
    """One line, exit 2, no traceback, no file written under `folder`."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expect in lines[0], lines[0]
    assert folder is None or not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


def float_keys():
    """(section, key) of every float config key, whatever its Optional wrapping."""
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if float in (typing.get_args(hints[f.name]) or (hints[f.name],)):
                out.append((section, f.name))
    return out


def write_idx(path: Path, array: np.ndarray) -> None:
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def fashion_files(root: Path, ext: str = ".gz", train: int = 24, test: int = 12) -> Path:
    """A tiny Fashion-MNIST in the idx format: random 28 x 28 images, labels 0..9."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n))
    return root


def build_fashion_mnist(root: Path, image_size: int = 16, in_memory: bool | None = None):
    return build_data(DataConfig(spec="fashion-mnist", root=str(root), workers=0, in_memory=in_memory),
                      ScaleConfig(image_size=image_size, crop="pad"), batch_size=8)


def good_record(step: str, seed: int = 0, **extra) -> dict:
    return {"schema": 1, "status": "complete", "reason": None, "divergence": None, "roadmap": "resnet50",
            "scale": "demo", "data": "synthetic", "step": step, "seed": seed, "top1": 50.0 + seed, "top5": 90.0,
            **extra}


def good_results(root: Path) -> Path:
    """Two complete runs of the demo scale on synthetic data."""
    for step in ("resnet50", "modern_recipe"):
        write_record(root, RunKey("resnet50", "demo", "synthetic", step, 0), good_record(step))
    return root


# ---------------------------------------------------------------------------- 1. non-finite and absurd values
@pytest.mark.parametrize("raw", [".nan", ".inf", "-.inf", "1e999", "-1e999"])
def test_every_float_key_refuses_non_finite_values(raw):
    keys = float_keys()
    assert ("recipe", "lr") in keys and ("scale", "width_mult") in keys and len(keys) >= 18
    for section, key in keys:
        overrides = parse_overrides([f"{section}.{key}={raw}"])
        with pytest.raises(ConfigError, match=f"{section}.{key} must be a finite number"):
            set_fields(SECTIONS[section](), overrides[section], section)


def test_a_nan_lr_never_reaches_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runs, "train_run", lambda *a, **k: pytest.fail("training was reached"))
    results = tmp_path / "results"
    code, err = main(capsys, "run", "--step", "gelu", *TINY, "--set", "recipe.lr=.nan", "--results", str(results))
    assert_refused(code, err, "recipe.lr must be a finite number", results)
    # Finite keys that multiply to infinity are caught where the recipe is resolved.
    code, err = main(capsys, "run", "--step", "gelu", *TINY, "--set", "recipe.lr=1e300", "--set", "scale.lr_mult=1e300",
                     "--results", str(results))
    assert_refused(code, err, "lr comes to inf", results)


def test_values_set_in_code_are_checked_too():
    cfg = build_run_config("resnet50", "gelu", "demo", "synthetic", 0, {})
    cfg.scale.batch_size = 0
    with pytest.raises(ConfigError, match="scale.batch_size must be >= 1, not 0"):
        check_config(cfg)


def test_an_image_size_no_memory_holds_is_refused_before_anything_is_allocated(tmp_path, capsys):
    results = tmp_path / "results"
    code, err = main(capsys, "run", "--step", "gelu", *TINY, "--set", "scale.image_size=100000",
                     "--results", str(results))
    assert_refused(code, err, "more than this machine's", results)


def test_synthetic_data_that_would_not_fit_is_refused_before_it_is_made(tmp_path, capsys, monkeypatch):
    # 640 images at 224 px: 96 MB made, held twice (as made, as the run's tensors); floats drawn a chunk at a time.
    monkeypatch.setattr("roadmap.data.checks.physical_memory", lambda: 150 * 2**20)
    results = tmp_path / "results"
    for dry_run in (["--dry-run"], []):
        code, err = main(capsys, "run", "--step", "gelu", "--scale", "paper", "--data", "synthetic", "--set",
                         "data.synthetic_size=512", "--no-progress", "--results", str(results), *dry_run)
        assert_refused(code, err, "224 px images need 0 GiB for 640 images held in memory, more than this machine's",
                       results)


def test_synthetic_data_is_made_in_chunks_without_changing_a_pixel(monkeypatch):
    import tracemalloc
    from roadmap.data import sources
    whole = sources.make_synthetic(48, 10, 16)
    monkeypatch.setattr(sources, "SYNTHETIC_CHUNK", 1000)   # 1 image a chunk
    chunked = sources.make_synthetic(48, 10, 16)
    for split in ("train", "eval"):
        assert (getattr(whole, split).pixels == getattr(chunked, split).pixels).all()
        assert (getattr(whole, split).targets == getattr(chunked, split).targets).all()
    monkeypatch.undo()
    tracemalloc.start()
    try:
        made = sources.make_synthetic(640, 10, 224)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    held = made.train.pixels.nbytes + made.eval.pixels.nbytes   # 96 MB; drawn at once, 16 times as much
    assert peak < held + 128 * 2**20, (peak, held)


@pytest.mark.parametrize("in_memory", [None, True, False])
def test_the_memory_estimate_covers_both_serving_paths(tmp_path, in_memory):
    root = fashion_files(tmp_path / "fm")
    with pytest.raises(DataError, match="lower scale.image_size"):
        build_fashion_mnist(root, image_size=100000, in_memory=in_memory)


# ---------------------------------------------------------------------------- 2. empty and missing paths
@pytest.mark.parametrize("args", [
    ["run", "--step", "gelu", "--results", ""], ["run", "--step", "gelu", "--checkpoints", " "],
    ["table", "--out", ""], ["table", "--results", ""], ["plot", "--out", ""], ["list", "--readme", ""],
    ["bench", "--out", ""],
])
def test_an_empty_path_is_one_line(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # '' would have meant this folder
    code, err = main(capsys, *args)
    assert_refused(code, err, "an empty path names nothing", tmp_path)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_steps_dir_that_is_not_a_folder_is_one_line(kind, tmp_path, capsys, monkeypatch):
    target = tmp_path / "steps"
    if kind == "file":
        target.write_text("not a folder")
    monkeypatch.setenv("ROADMAP_STEPS_DIR", str(target))
    code, err = main(capsys, "list")
    assert_refused(code, err, f"ROADMAP_STEPS_DIR={target}")


# ---------------------------------------------------------------------------- 3. damaged dataset files
def cut(path: Path, keep: float) -> None:
    path.write_bytes(path.read_bytes()[:int(len(path.read_bytes()) * keep)])


def flip_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


DAMAGE = {  # name: (extension, file, how, what the message says)
    "truncated gzip": (".gz", "train-images-idx3-ubyte", lambda p: cut(p, 0.5), "cannot be read"),
    "corrupt gzip": (".gz", "train-images-idx3-ubyte", flip_middle, "cannot be read"),
    "truncated raw": ("", "train-images-idx3-ubyte", lambda p: cut(p, 0.7), "truncated"),
    "trailing bytes": ("", "t10k-images-idx3-ubyte", lambda p: p.write_bytes(p.read_bytes() + b"xx"), "trailing"),
    "empty": ("", "t10k-labels-idx1-ubyte", lambda p: p.write_bytes(b""), "too short"),
    "bad magic": ("", "train-labels-idx1-ubyte", lambda p: p.write_bytes(b"\0\0\x09" + p.read_bytes()[3:]),
                  "wrong magic"),
    "labels as images": (".gz", "train-labels-idx1-ubyte",
                         lambda p: write_idx(p, np.zeros((24, 2, 2))), "3 dimensions where 1 belong"),
    "fewer labels": (".gz", "train-labels-idx1-ubyte", lambda p: write_idx(p, np.zeros(20)), "20 labels for the 24"),
    "label out of range": ("", "t10k-labels-idx1-ubyte", lambda p: write_idx(p, np.full(12, 10)), "label 10"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_idx_file_is_one_line_that_names_it(name, tmp_path):
    ext, stem, damage, expect = DAMAGE[name]
    root = fashion_files(tmp_path / "fm", ext)
    assert build_fashion_mnist(root).train_size == 24   # intact, it loads
    damage(root / f"{stem}{ext}")
    with pytest.raises(DataError) as err:
        build_fashion_mnist(root)
    message = str(err.value)
    assert f"{stem}{ext}" in message and expect in message and "\n" not in message, message


def test_a_damaged_idx_file_through_the_cli(tmp_path, capsys):
    root = fashion_files(tmp_path / "fm")
    cut(root / "t10k-images-idx3-ubyte.gz", 0.5)
    results = tmp_path / "results"
    args = [a for a in TINY if a not in ("--data", "synthetic")]
    code, err = main(capsys, "run", "--step", "gelu", *args, "--set", f"data.root={root}", "--results", str(results))
    assert_refused(code, err, "t10k-images-idx3-ubyte.gz", results)


# ---------------------------------------------------------------------------- 4. damaged results and state
DAMAGED_RECORDS = {  # step: the bytes of its record
    "kernel9": json.dumps(good_record("kernel9", scale="../demo")).encode(),   # a name that is no folder's
    "stage_ratio": b"[1, 2, 3]\n",
    "patchify_stem": b'{"schema": 1, "step": "\xff\xfe"}',
    "depthwise": b'{"schema": 1, "status": "complete", "roadmap": "resnet50"',
    "widen": json.dumps({k: v for k, v in good_record("widen").items() if k != "seed"}).encode(),
    "inverted_bottleneck": json.dumps(good_record("inverted_bottleneck", schema=2)).encode(),
    "move_up_dwconv": json.dumps(good_record("kernel7")).encode(),   # another run than its path
    "kernel7": json.dumps(good_record("kernel7", top1="high")).encode(),
    "gelu": json.dumps(good_record("gelu", top1=None)).encode(),
    "layernorm": json.dumps(good_record("layernorm", status="finished")).encode(),
    "kernel5": b"[" * 100_000 + b"]" * 100_000,   # deep enough to exhaust the JSON parser's stack
}


def damaged_results(root: Path) -> Path:
    good_results(root)
    for step, raw in DAMAGED_RECORDS.items():
        path = RunKey("resnet50", "demo", "synthetic", step, 0).record_path(root)
        path.parent.mkdir(parents=True)
        path.write_bytes(raw)
    return root


def test_one_judge_decides_whether_a_record_counts(tmp_path, capsys):
    root = damaged_results(tmp_path / "results")
    assert {r["step"] for r in load_records(root)} == {"resnet50", "modern_recipe"}
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(DAMAGED_RECORDS)
    assert all(any(f"/{step}/seed0.json" in w for w in warnings) for step in DAMAGED_RECORDS)
    for step in DAMAGED_RECORDS:  # what `table` cannot show, `run` does not count as finished
        assert finished_status(root, RunKey("resnet50", "demo", "synthetic", step, 0)) is None
    assert finished_status(root, RunKey("resnet50", "demo", "synthetic", "resnet50", 0)) == "complete"


def test_table_reports_damaged_records_and_goes_on(tmp_path, capsys):
    root = damaged_results(tmp_path / "results")
    code, err = main(capsys, "table", "--data", "synthetic", "--results", str(root), "--out", str(tmp_path / "out"))
    assert code == 0 and "Traceback" not in err, err
    assert err.count("is damaged") == len(DAMAGED_RECORDS)
    table = (tmp_path / "out" / "resnet50-demo-synthetic.md").read_text()
    assert "| gelu |" in table and "| missing |" in table


def test_run_redoes_a_damaged_record_and_survives_a_damaged_config(tmp_path, capsys):
    results = tmp_path / "results"
    key = RunKey("resnet50", "demo", "synthetic", "gelu", 0)
    key.record_path(results).parent.mkdir(parents=True)
    key.record_path(results).write_text(json.dumps(good_record("gelu", schema=99)))
    key.config_path(results).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, err = main(capsys, "run", "--step", "gelu", *TINY, "--results", str(results))
    assert code == 0, err
    assert f"{key.record_path(results)} is damaged (schema 99" in err
    assert f"{key.config_path(results)} is damaged (not UTF-8" in err
    assert read_record(key.record_path(results))["status"] == "complete"
    assert config.read_yaml(key.config_path(results))["model"]["act"] == "gelu"   # rewritten
    for text in ("- a list\n", "model: [1, 2]\n", "key: [unclosed\n",
                 "model: " + "[" * 100_000 + "]" * 100_000):
        key.config_path(results).write_text(text)
        assert runs.saved_config(key.config_path(results)) is None


# ---------------------------------------------------------------------------- 5. output paths
def test_table_into_an_unwritable_place_is_one_line(tmp_path, capsys):
    root = good_results(tmp_path / "results")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for command in ("table", "plot"):
        code, err = main(capsys, command, "--data", "synthetic", "--results", str(root), "--out", str(blocker / "out"))
        assert_refused(code, err, "cannot be written (Not a directory); pass another --out")


def test_readme_without_markers_is_one_line_and_nothing_is_written(tmp_path, capsys):
    root = good_results(tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    out = tmp_path / "out"
    code, err = main(capsys, "table", "--data", "synthetic", "--results", str(root), "--out", str(out),
                     "--readme", str(readme))
    assert_refused(code, err, "results-resnet50:begin", out)
    assert readme.read_text() == "# no markers here\n"
    code, err = main(capsys, "list", "--readme", str(readme))
    assert_refused(code, err, "steps-resnet50:begin")
    code, err = main(capsys, "list", "--readme", str(tmp_path / "missing.md"))
    assert_refused(code, err, "cannot be read")


@pytest.mark.parametrize("linked", ["resnet50", "checkpoints/resnet50/demo"])
def test_a_link_inside_the_results_folder_that_leads_out_is_refused(tmp_path, capsys, linked):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (results / linked).parent.mkdir(parents=True)
    (results / linked).symlink_to(elsewhere)   # planted in a shared results folder
    code, err = main(capsys, "run", "--step", "gelu", *TINY, "--results", str(results))
    assert_refused(code, err, "leads out of")
    assert not any(elsewhere.iterdir())


# ---------------------------------------------------------------------------- 6. checkpoints not to resume
def test_the_fingerprint_ignores_exactly_the_resumable_keys():
    base = build_run_config("resnet50", "gelu", "demo", "synthetic", 0, {})
    changes = {"compile": True, "channels_last": True, "device": "cpu", "workers": 0, "root": "/elsewhere",
               "log": "tensorboard", "flush_denormal": True}
    overrides = {}
    for section, key in RESUMABLE_CHANGES:
        overrides.setdefault(section, {})[key] = changes[key]
    same = build_run_config("resnet50", "gelu", "demo", "synthetic", 0, overrides)
    assert config_fingerprint(base) == config_fingerprint(same)
    for pair in ("recipe.lr=0.3", "scale.epochs=7", "model.kernel_size=5"):
        other = build_run_config("resnet50", "gelu", "demo", "synthetic", 0, parse_overrides([pair]))
        assert config_fingerprint(other) != config_fingerprint(base), pair
    assert config_fingerprint(build_run_config("resnet50", "gelu", "demo", "synthetic", 1, {})) != \
        config_fingerprint(base)


def test_the_fingerprint_knows_data_by_what_it_holds_not_by_its_path():
    def fingerprint(folder: str, listing: str | None) -> str:
        cfg = build_run_config("resnet50", "gelu", "demo", f"imagefolder:{folder}", 0, {})
        return config_fingerprint(cfg, {"num_classes": 2, "train_images": 8, "eval_images": 4,
                                        "data_fingerprint": listing})
    assert fingerprint("/old/shoes", "ab12") == fingerprint("/new/place/shoes", "ab12")   # moved: resumes
    assert fingerprint("/old/shoes", "ab12") != fingerprint("/old/shoes", "cd34")         # other images: restarts
    assert fingerprint("/old/shoes", "ab12") != fingerprint("/old/boots", "ab12")         # another dataset's name


def test_the_fingerprint_of_a_config_stays_what_it_was():
    """Checkpoints saved before resume by this value: a change to how it is computed starts every run over."""
    cfg = build_run_config("resnet50", "gelu", "demo", "imagefolder:/data/shoes", 0, {})
    data = {"num_classes": 2, "train_images": 8, "eval_images": 4, "data_fingerprint": "ab12"}
    assert config_fingerprint(cfg, data) == "352be6016b1b77d1f51e7333f6ab3eba028fe18a1c247172221e9752c5f02929"


def interrupted_after_epoch_1(capsys, monkeypatch, results: Path) -> tuple[list[str], RunKey]:
    """A 2-epoch gelu run stopped by Ctrl-C as its second epoch begins: its checkpoint holds epoch 1.
    Returns the command (to run again, now uninterrupted) and the run's key."""
    run_class = runs.train_run.__globals__["Run"]
    original = run_class.train_epoch

    def interrupted_in_epoch_2(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(run_class, "train_epoch", interrupted_in_epoch_2)
    args = ["run", "--step", "gelu", *TINY, "--set", "scale.epochs=2", "--results", str(results)]
    assert main(capsys, *args)[0] == 130
    monkeypatch.setattr(run_class, "train_epoch", original)
    return args, RunKey("resnet50", "demo", "synthetic", "gelu", 0)


def test_a_checkpoint_of_another_config_is_never_resumed(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    args, key = interrupted_after_epoch_1(capsys, monkeypatch, results)
    checkpoint = key.checkpoint_path(results / "checkpoints")   # by default inside the results folder
    assert checkpoint.is_file() and key.config_path(results).is_file()
    # The saved config is gone (as after a cleanup), so only the checkpoint knows what it was trained under.
    key.config_path(results).unlink()
    code, err = main(capsys, *args, "--set", "recipe.lr=0.01")
    assert code == 0, err
    assert f"checkpoint {checkpoint} was saved under another config; starting gelu over" in err
    assert "resuming" not in err
    assert len(read_record(key.record_path(results))["epochs"]) == 2


def test_the_rng_state_is_plain_data_that_restores_every_stream():
    seed_global_rngs(7)
    random.gauss(0, 1)   # python's cached Gaussian is part of its state
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    draws = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist())
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))   # no pickled object: numpy's keys are a list
    assert (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist()) == draws


class Planted:
    """What someone who can write into a shared checkpoints folder might leave there: loading it runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")   # unpickling it creates the marker file


def test_a_checkpoint_that_would_run_code_is_refused_and_the_run_starts_over(tmp_path, capsys):
    results, marker = tmp_path / "results", tmp_path / "marker"
    key = RunKey("resnet50", "demo", "synthetic", "gelu", 0)
    checkpoint = key.checkpoint_path(results / "checkpoints")
    checkpoint.parent.mkdir(parents=True)
    torch.save({"fingerprint": "whatever", "state": Planted(marker)}, checkpoint)
    code, err = main(capsys, "run", "--step", "gelu", *TINY, "--results", str(results))
    assert code == 0, err
    assert not marker.exists(), "the planted pickle ran"
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: checkpoint {checkpoint} holds pickled objects, which are never loaded (they could "
                        f"run code: an older runner's checkpoint, or a planted file); starting gelu over"], err
    assert "resuming" not in err and read_record(key.record_path(results))["status"] == "complete"


def test_a_checkpoint_of_this_config_that_does_not_restore_it_starts_the_run_over(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    args, key = interrupted_after_epoch_1(capsys, monkeypatch, results)
    checkpoint = key.checkpoint_path(results / "checkpoints")
    damaged = torch.load(checkpoint, weights_only=True)   # what the runner saves is plain data
    damaged["rng"]["numpy"]["keys"] = [1, 2, 3]   # its own fingerprint, but a state no generator takes
    torch.save(damaged, checkpoint)
    code, err = main(capsys, *args)
    assert code == 0, err
    assert f"warning: checkpoint {checkpoint} does not restore this run (IndexError); starting gelu over" in err
    assert "resuming" not in err
    assert [e["epoch"] for e in read_record(key.record_path(results))["epochs"]] == [1, 2]


def test_every_torch_file_is_read_without_unpickling_objects():
    # Checkpoints, kept weights, exports, init_from: a file someone else wrote must not be able to run code.
    loads = [(path.name, line.strip()) for path in (ROOT / "roadmap").rglob("*.py")
             for line in path.read_text().splitlines() if "torch.load(" in line]
    assert loads and all("weights_only=True" in line for _, line in loads), loads


# ---------------------------------------------------------------------------- 7. interrupts and stale locks
def test_ctrl_c_while_starting_up_exits_130_without_a_traceback(tmp_path):
    # -X importtime reports each import as it ends: once roadmap.fields is in, roadmap.model imports torch (seconds).
    # A shell's background job (nohup ... &) ignores SIGINT, and so would the child: give it the default, as a terminal does.
    proc = subprocess.Popen([sys.executable, "-X", "importtime", str(ROOT / "runner.py"), "table"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.split("|")[-1].strip() == "roadmap.fields":   # nested imports are indented
            proc.send_signal(signal.SIGINT)
            break
    err = "".join(seen) + proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-2000:]
    assert "| torch\n" not in "".join(seen)   # the interrupt came before torch was in


def test_a_lock_file_that_no_process_holds_is_free(tmp_path):
    # Lock files stay after release, and an older runner wrote its holder's host and pid in them: only an flock counts.
    key = RunKey("resnet50", "demo", "synthetic", "gelu", 0)
    for left_behind in ("", "some-other-node 4242 8811\n"):
        atomic_write_text(key.folder(tmp_path) / "seed0.lock", left_behind)
        with RunLock(tmp_path, key) as lock:
            assert lock_is_held(lock.path)


def test_a_lock_file_that_is_a_link_is_refused_and_what_it_points_to_untouched(tmp_path, capsys):
    results, precious = tmp_path / "results", tmp_path / "precious.txt"
    precious.write_text("keep me")
    lock = RunLock(results, RunKey("resnet50", "demo", "synthetic", "gelu", 0)).path
    lock.parent.mkdir(parents=True)
    lock.symlink_to(precious)
    code, err = main(capsys, "run", "--step", "gelu", *TINY, "--results", str(results))
    assert_refused(code, err, f"lock file {lock} is a symbolic link")
    assert precious.read_text() == "keep me"
    assert not [p for p in results.rglob("*") if p.is_file() and not p.is_symlink()]


# ---------------------------------------------------------------------------- 8. 16-bit images
@pytest.mark.parametrize("fmt,mode", [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I")])
def test_deep_grayscale_is_scaled_by_its_own_range(tmp_path, fmt, mode):
    ramp = np.linspace(1000, 3000, 64).round().astype(np.uint16 if mode == "I;16" else np.int32)
    path = tmp_path / f"scan.{fmt.lower()}"
    image = Image.fromarray(np.tile(ramp, (8, 1)))
    image.save(path, fmt)
    with Image.open(path) as saved:
        assert saved.mode in DEEP_GRAY_MODES
    pixels = np.asarray(open_rgb(str(path)))
    assert pixels.shape == (8, 64, 3) and (pixels[..., 0] == pixels[..., 2]).all()
    row = pixels[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all() and 120 <= row[32] <= 135


def test_a_flat_16_bit_image_is_black_not_white(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(path)
    assert np.asarray(open_rgb(str(path))).max() == 0


# ---------------------------------------------------------------------------- 9. a refusal writes nothing
def test_a_refusal_in_the_first_epoch_leaves_no_file(tmp_path, capsys):
    root = tmp_path / "folder"
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (16, 16), (60 * i, 90, 10)).save(root / split / name / f"{i}.png")
    for name in ("a", "b"):  # 8 training images in batches of 4: the first epoch reads every one
        (root / "train" / name / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    results = tmp_path / "results"
    args = [a for a in TINY if a not in ("--data", "synthetic")]
    code, err = main(capsys, "run", "--step", "gelu", *args, "--data", f"imagefolder:{root}", "--set",
                     "data.strict=true", "--set", "data.in_memory=false", "--set", "data.workers=0",
                     "--set", "scale.batch_size=4", "--set", "scale.micro_batch=4", "--results", str(results))
    assert code == 2 and "broken.jpg" in err.strip().splitlines()[-1] and "Traceback" not in err, err
    # The run's lock file stays by design (RunLock), free: no record, config, log or checkpoint is left.
    locks = list(results.rglob("*.lock"))
    assert locks and not any(lock_is_held(p) for p in locks)
    assert not [p for p in results.rglob("*") if p.is_file() and p.suffix != ".lock"], list(results.rglob("*"))


# The planted failure make gpu-check runs on a GPU: rank 1 raises in its second epoch.
FAILING_RANK = gpucheck.FAILING_RANK


@pytest.mark.skipif(not (Path(sys.executable).parent / "torchrun").exists(), reason="no torchrun")
def test_one_failing_rank_ends_every_rank_and_the_run_is_recorded_failed_once(tmp_path):
    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK.format(root=str(ROOT)))
    results = tmp_path / "results"
    start = time.monotonic()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script), "run",
         "--step", "gelu", "layernorm", "--device", "cpu", "--results", str(results), *TINY,
         "--set", "scale.epochs=2"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode != 0 and time.monotonic() - start < 240, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in results.rglob("seed*.json")]
    assert [(r["step"], r["status"]) for r in records] == [("gelu", "failed")], proc.stderr[-3000:]
    assert proc.stderr.count(": FAILED (") == 1 and "stopping" in proc.stderr   # rank 0 alone reports


# ---------------------------------------------------------------------------- 10. a filesystem that fails under a run
@pytest.fixture
def small_fs(tmp_path):
    """A 16 MiB tmpfs (root only): a disk that can fill up, be made read-only, or hold immutable files."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs failed here (a container without the capability)")
    try:
        yield mount
    finally:
        subprocess.run(["chattr", "-R", "-i", str(mount)], capture_output=True)
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fs_command(mount: Path, *args: str) -> list[str]:
    return ["run", *TINY, "--results", str(mount / "results"), *args]


def assert_stopped_in_one_line(code, err, *expect):
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err and errors == [err.strip().splitlines()[-1]], err
    assert all(part in errors[0] for part in expect), errors[0]


def fill(mount: Path) -> Path:
    filler = mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_under_a_run_is_one_line_and_the_same_command_then_succeeds(small_fs, capsys):
    assert main(capsys, *fs_command(small_fs, "--step", "gelu"))[0] == 0   # an earlier record
    earlier = RunKey("resnet50", "demo", "synthetic", "gelu", 0).record_path(small_fs / "results")
    before = earlier.read_bytes()
    filler = fill(small_fs)
    code, err = main(capsys, *fs_command(small_fs, "--step", "layernorm"))
    assert_stopped_in_one_line(code, err, "cannot write", str(small_fs / "results"), "No space left on device")
    assert earlier.read_bytes() == before and not list(small_fs.rglob("*.tmp"))
    filler.unlink()
    code, err = main(capsys, *fs_command(small_fs, "--step", "layernorm"))
    assert code == 0, err
    assert finished_status(small_fs / "results", RunKey("resnet50", "demo", "synthetic", "layernorm", 0))


@pytest.mark.parametrize("suffix", [".yaml", ".pt", ".safetensors", ".json"])
def test_a_file_of_a_run_that_cannot_be_written_stops_it_in_one_line(tmp_path, capsys, monkeypatch, suffix):
    """ENOSPC at each file a run writes: its config, its checkpoint, its kept weights, its record."""
    from roadmap import results as results_module
    write = results_module.write_and_rename

    def full_disk(path, data):
        if path.suffix == suffix:
            raise OSError(28, "No space left on device")
        write(path, data)

    results = tmp_path / "results"
    assert main(capsys, *fs_command(tmp_path, "--step", "gelu"))[0] == 0
    earlier = RunKey("resnet50", "demo", "synthetic", "gelu", 0).record_path(results)
    before = earlier.read_bytes()
    monkeypatch.setattr(results_module, "write_and_rename", full_disk)
    code, err = main(capsys, *fs_command(tmp_path, "--step", "layernorm"))
    assert_stopped_in_one_line(code, err, "cannot write", f"seed0{suffix} (No space left on device)")
    assert earlier.read_bytes() == before
    assert finished_status(results, RunKey("resnet50", "demo", "synthetic", "layernorm", 0)) is None
    monkeypatch.undo()
    code, err = main(capsys, *fs_command(tmp_path, "--step", "layernorm"))
    assert code == 0, err
    assert read_record(RunKey("resnet50", "demo", "synthetic", "layernorm", 0).record_path(results))["top1"] >= 0


@pytest.mark.parametrize("what,expect", [("run folder", "Operation not permitted"),
                                         ("failed record", "Operation not permitted"),
                                         ("filesystem", "Read-only file system")])
def test_an_immutable_folder_or_record_or_a_read_only_disk_is_refused_before_training(small_fs, capsys, monkeypatch,
                                                                                      what, expect):
    key = RunKey("resnet50", "demo", "synthetic", "gelu", 0)
    results = small_fs / "results"
    write_record(results, key, {**good_record("gelu"), "status": "failed", "top1": None, "reason": "OSError: x"})
    target = key.folder(results) if what == "run folder" else key.record_path(results)
    lock, unlock = (["mount", "-o", "remount,ro", str(small_fs)], ["mount", "-o", "remount,rw", str(small_fs)]) \
        if what == "filesystem" else (["chattr", "+i", str(target)], ["chattr", "-i", str(target)])
    subprocess.run(lock, check=True)
    monkeypatch.setattr(runs, "train_run", lambda *a, **k: pytest.fail("training was reached"))
    code, err = main(capsys, *fs_command(small_fs, "--step", "gelu"))
    assert_stopped_in_one_line(code, err, "cannot be written" if what == "filesystem" else "cannot write",
                               str(results), expect)
    monkeypatch.undo()
    subprocess.run(unlock, check=True)
    assert main(capsys, *fs_command(small_fs, "--step", "gelu"))[0] == 0
    assert finished_status(results, key) == "complete"


@pytest.mark.parametrize("how", ["immutable", "deleted"])
def test_a_results_folder_that_goes_away_under_a_run(small_fs, capsys, monkeypatch, how):
    """The run's folder made immutable, or the results folder deleted, once the first epoch is trained: one line,
    or a run that puts its folders back; never a traceback or a half-written file, and the same command then
    succeeds. (A remount read-only waits for the files open for writing, the lock among them.)"""
    import shutil
    run_class = runs.train_run.__globals__["Run"]
    original = run_class.train_epoch
    folder = RunKey("resnet50", "demo", "synthetic", "gelu", 0).folder(small_fs / "results")

    def then_the_folder_goes(self, epoch):
        stats = original(self, epoch)
        if how == "immutable":
            subprocess.run(["chattr", "+i", str(folder)], check=True)
        else:
            shutil.rmtree(small_fs / "results")
        return stats

    monkeypatch.setattr(run_class, "train_epoch", then_the_folder_goes)
    code, err = main(capsys, *fs_command(small_fs, "--step", "gelu"))
    monkeypatch.undo()
    if how == "immutable":
        assert_stopped_in_one_line(code, err, f"cannot write {folder}", "Operation not permitted")
        subprocess.run(["chattr", "-i", str(folder)], check=True)
        code, err = main(capsys, *fs_command(small_fs, "--step", "gelu"))
    assert code == 0 and "Traceback" not in err, err
    assert finished_status(small_fs / "results", RunKey("resnet50", "demo", "synthetic", "gelu", 0)) == "complete"
    assert not list(small_fs.rglob("*.tmp"))


# ---------------------------------------------------------------------------- 11. own image folders
def test_names_that_are_not_utf8_train_and_report_as_any_other(tmp_path, photos):
    """Latin-1 names from an old archive (a folder, a class, a file): trained on in memory and streaming, predicted,
    evaluated, tabled and plotted, on a terminal whose encoding refuses what is not UTF-8."""
    from conftest import runner_argv
    latin1 = os.fsdecode(b"caf\xe9")
    folder = photos(tmp_path / os.fsdecode(b"ph\xf6tos"), classes=("cat", latin1, "fox"))
    os.rename(folder / "train" / "cat" / "0.png", folder / "train" / "cat" / f"{latin1}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}   # utf-8, strict

    def run(*args) -> str:
        proc = subprocess.run(runner_argv(*args), capture_output=True, env=env, timeout=300)
        out, err = (proc.stdout.decode(errors="surrogateescape"), proc.stderr.decode(errors="surrogateescape"))
        assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
        return out

    results = tmp_path / "results"
    for in_memory in ("true", "false"):
        run("run", "--step", "gelu", "--data", f"imagefolder:{folder}", "--no-progress", "--set", "scale.epochs=1",
            "--set", "scale.batch_size=8", "--set", "scale.micro_batch=8", "--set", "data.workers=0",
            "--set", f"data.in_memory={in_memory}", "--results", results / in_memory)
    done = results / "true"
    assert f"{latin1}.png: " in run("predict", "--step", "gelu", "--results", done, folder / "train" / "cat")
    assert latin1 in run("evaluate", "--step", "gelu", "--results", done, "--data", f"imagefolder:{folder}",
                         "--csv", tmp_path / "perclass.csv", "--plot", tmp_path / "perclass.png")
    assert (tmp_path / "perclass.csv").read_text().splitlines()[1].startswith("caf\\udce9,")
    run("table", "--results", done, "--out", tmp_path / "report")
    run("plot", "--results", done, "--out", tmp_path / "report")
