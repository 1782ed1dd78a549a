"""`--set train.log=tensorboard`: event files beside the record, per-update and per-epoch scalars, a resumed
run that appends without doubling, and one line when the package is missing or the value unknown."""
import importlib.util
import sys

import pytest

from conftest import main, tiny
from roadmap.results import UMASK, RunKey, default_tensorboard, read_record
from roadmap.train import Run

# 48 images in batches of 16: 3 updates per epoch.
TINY = tiny("scale.epochs=2", "train.log=tensorboard")
KEY = RunKey("resnet50", "demo", "synthetic", "gelu", 0)
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tensorboard extra is not installed: pip install -e '.[dev]'")
EPOCH_TAGS = ["eval/top1", "eval/top5", "eval/loss", "train/images_per_s", "train/epoch_s"]


def run(capsys, results, *args) -> tuple[int, str]:
    """The tiny run of gelu with TensorBoard logging: (exit code, stderr)."""
    return main(capsys, "run", "--step", "gelu", *TINY, "--results", results, *args)


def scalars(results) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard reads the run's folder (hiding what a resumed run purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    folder = KEY.tensorboard_dir(default_tensorboard(results))
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@needs_tensorboard
def test_a_run_logs_every_update_and_every_epoch(tmp_path, capsys):
    code, err = run(capsys, tmp_path / "results")
    assert code == 0, err
    logged = scalars(tmp_path / "results")
    assert sorted(logged) == sorted(["train/loss", "train/lr", *EPOCH_TAGS])
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3, 4, 5, 6]   # the global update number
    assert [step for step, _ in logged["train/lr"]] == [1, 2, 3, 4, 5, 6]
    for tag in EPOCH_TAGS:
        assert [step for step, _ in logged[tag]] == [3, 6], tag                 # each epoch's last update
    epochs = read_record(KEY.record_path(tmp_path / "results"))["epochs"]
    for epoch, first in zip(epochs, (0, 3)):
        losses = [value for _, value in logged["train/loss"][first:first + 3]]
        assert sum(losses) / 3 == pytest.approx(epoch["train_loss"], rel=1e-6)
    assert [value for _, value in logged["eval/top1"]] == pytest.approx([e["eval_top1"] for e in epochs], rel=1e-6)
    files = list(KEY.tensorboard_dir(default_tensorboard(tmp_path / "results")).iterdir())
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents.")
    assert files[0].stat().st_mode & 0o777 == 0o666 & ~UMASK                      # readable by the team


@needs_tensorboard
def test_a_resumed_run_appends_without_logging_an_update_twice(tmp_path, capsys, monkeypatch):
    """Killed after epoch 2 was logged but before its checkpoint: the resumed session trains epoch 2 again,
    and what the first one logged of it is hidden (purge_step), not shown twice."""
    original = Run.save_checkpoint

    def killed_before_the_second_checkpoint(self, path):
        if self.state.epoch == 2:
            raise KeyboardInterrupt
        original(self, path)

    monkeypatch.setattr(Run, "save_checkpoint", killed_before_the_second_checkpoint)
    results = tmp_path / "results"
    assert run(capsys, results)[0] == 130
    assert [step for step, _ in scalars(results)["train/loss"]] == [1, 2, 3, 4, 5, 6]
    # A config saved before train.log existed lacks it; the key changes nothing a run computes, so it resumes.
    saved = KEY.config_path(results)
    saved.write_text("".join(line for line in saved.read_text().splitlines(True) if not line.startswith("  log:")))
    monkeypatch.setattr(Run, "save_checkpoint", original)
    code, err = run(capsys, results)
    assert code == 0 and "resuming gelu seed 0 after epoch 1" in err, err
    logged = scalars(results)
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in logged["eval/top1"]] == [3, 6]
    assert len(list(KEY.tensorboard_dir(default_tensorboard(results)).iterdir())) == 2   # one file a session


def assert_one_line(code, err, expect):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert expect in lines[0], lines[0]


def test_without_the_package_it_is_one_line_that_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)              # import tensorboard -> ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code, err = run(capsys, tmp_path / "results")
    assert_one_line(code, err, "train.log=tensorboard needs the tensorboard package")
    assert "pip install 'roadmap[tensorboard]'" in err
    assert not (tmp_path / "results").exists()                          # nothing written


@pytest.mark.parametrize("value, expect", [("wandb", "train.log must be one of none, tensorboard, not 'wandb'"),
                                           ("1", "train.log must be one of none, tensorboard, not 1")])
def test_an_unknown_log_is_one_line(tmp_path, capsys, value, expect):
    code, err = run(capsys, tmp_path / "results", "--set", f"train.log={value}")
    assert_one_line(code, err, expect)
    assert not (tmp_path / "results").exists()


@needs_tensorboard
@pytest.mark.parametrize("where", ["tensorboard", "run"])
def test_a_file_where_the_event_folder_goes_is_one_line_before_training(tmp_path, capsys, where):
    results = tmp_path / "results"
    blocker = default_tensorboard(results) if where == "tensorboard" else KEY.tensorboard_dir(default_tensorboard(results))
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file, not a folder")
    code, err = run(capsys, results)
    assert_one_line(code, err, f"{blocker} is a file where gelu seed 0 needs the folder")
    assert not KEY.record_path(results).exists() and not list(results.rglob("*.lock"))   # before any run began
