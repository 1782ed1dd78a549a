"""The runner end to end at the demo scale: records, resume, divergence, crash isolation, DDP."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import tiny
from roadmap import cli, data, recipe, runs
from roadmap.results import RunKey, read_record, write_record

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny("scale.epochs=2", "scale.batch_size=32", "scale.micro_batch=32", "data.synthetic_size=128")


def run_cli(tmp_path, *args):
    return cli.main(["run", "--results", str(tmp_path / "results"), "--checkpoints", str(tmp_path / "ckpt"), *TINY,
                     *args])  # after TINY: a test's own --set wins


def record(tmp_path, step, seed=0, data="synthetic", scale="demo"):
    return read_record(RunKey("resnet50", scale, data, step, seed).record_path(tmp_path / "results"))


def comparable(rec):
    """A record without what legitimately differs between two runs of the same thing: timings."""
    timing = {"wall_s", "images_per_s", "epoch_s", "data_s", "data_time_share", "input_bound", "peak_mem_mb",
              "started", "finished", "git_commit", "command"}
    out = {k: v for k, v in rec.items() if k not in timing}
    out["epochs"] = [{k: v for k, v in e.items() if k not in timing} for e in rec["epochs"]]
    return out


def test_two_steps_end_to_end_on_synthetic_data(tmp_path, monkeypatch):
    opened = []
    load = data.load_source
    monkeypatch.setattr(data, "load_source", lambda *args, **kw: opened.append(args) or load(*args, **kw))
    assert run_cli(tmp_path, "--step", "resnet50", "separate_downsampling", "--data", "synthetic") == 0
    assert len(opened) == 1, "the dataset is opened once per invocation, not once more per run"
    for step in ("resnet50", "separate_downsampling"):
        rec = record(tmp_path, step)
        assert rec["status"] == "complete" and 0 <= rec["top1"] <= 100 and rec["top5"] >= rec["top1"]
        assert rec["params"] > 0 and rec["gflops"] > 0 and rec["images_per_s"] > 0 and rec["wall_s"] > 0
        assert rec["torch"] == torch.__version__ and rec["config"]["model"]["stem_stride"] == 2
        folder = RunKey("resnet50", "demo", "synthetic", step, 0).folder(tmp_path / "results")
        assert (folder / "seed0.csv").read_text().startswith("epoch,train_loss")
        assert (folder / "seed0.yaml").exists()
    assert len(record(tmp_path, "resnet50")["epochs"]) == 1           # classic recipe: classic_epochs
    assert len(record(tmp_path, "separate_downsampling")["epochs"]) == 2
    assert not list((tmp_path / "ckpt").rglob("*.pt")), "checkpoints of complete runs are removed"


def test_two_steps_on_fashion_mnist(tmp_path):
    assert run_cli(tmp_path, "--step", "resnet50", "modern_recipe", "--data", "fashion-mnist",
                   "--set", "scale.train_subset=256",
                   "--set", "scale.eval_subset=128") == 0
    for step in ("resnet50", "modern_recipe"):
        rec = record(tmp_path, step, data="fashion-mnist")
        assert rec["status"] == "complete" and rec["num_classes"] == 10 and rec["train_images"] == 256


def test_complete_runs_are_skipped(tmp_path, capsys):
    assert run_cli(tmp_path, "--step", "resnet50", "--data", "synthetic") == 0
    first = record(tmp_path, "resnet50")
    assert run_cli(tmp_path, "--step", "resnet50", "--data", "synthetic") == 0
    assert "already complete, skipped" in capsys.readouterr().err
    assert record(tmp_path, "resnet50") == first


def test_a_run_under_another_config_is_neither_skipped_nor_resumed(tmp_path, capsys):
    assert run_cli(tmp_path, "--step", "resnet50", "--data", "synthetic") == 0
    first = record(tmp_path, "resnet50")
    capsys.readouterr()
    assert run_cli(tmp_path, "--step", "resnet50", "--data", "synthetic", "--set", "recipe.lr=0.3") == 2
    err = capsys.readouterr().err
    assert "was run with recipe.lr=None, not 0.3" in err and err.count("\n") == 1
    assert record(tmp_path, "resnet50") == first
    assert run_cli(tmp_path, "--step", "resnet50", "--data", "synthetic", "--set", "data.workers=0") == 0  # harmless


def test_a_key_only_another_recipe_reads_is_not_another_config(tmp_path, capsys):
    """The classic recipe's epochs are no part of a modern-recipe run: one results folder holds a classic ResNet-50
    trained longer beside the modern steps, and the whole roadmap resumes there with one command."""
    assert run_cli(tmp_path, "--step", "modern_recipe", "--data", "synthetic") == 0
    modern = record(tmp_path, "modern_recipe")
    capsys.readouterr()
    assert run_cli(tmp_path, "--step", "resnet50", "modern_recipe", "--data", "synthetic",
                   "--set", "scale.classic_epochs=2") == 0
    assert "modern_recipe seed 0: already complete, skipped" in capsys.readouterr().err
    assert record(tmp_path, "modern_recipe") == modern and len(record(tmp_path, "resnet50")["epochs"]) == 2
    assert run_cli(tmp_path, "--step", "resnet50", "--data", "synthetic", "--set", "scale.classic_epochs=3") == 2
    assert "was run with scale.classic_epochs=2, not 3" in capsys.readouterr().err   # the classic run reads it


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    assert run_cli(tmp_path / "clean", "--step", "gelu", "--data", "synthetic") == 0
    original = runs.train_run.__globals__["Run"].train_epoch

    def crash_in_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt  # as a kill between epochs: the checkpoint of epoch 1 is on disk
        return original(self, epoch)

    monkeypatch.setattr(runs.train_run.__globals__["Run"], "train_epoch", crash_in_second_epoch)
    assert run_cli(tmp_path / "cut", "--step", "gelu", "--data", "synthetic") == 130  # interrupted
    assert record(tmp_path / "cut", "gelu") is None
    (checkpoint,) = (tmp_path / "cut" / "ckpt").rglob("seed0.pt")
    assert torch.load(checkpoint, weights_only=True)["state"]["epoch"] == 1   # tensors and plain values: no code
    monkeypatch.setattr(runs.train_run.__globals__["Run"], "train_epoch", original)
    assert run_cli(tmp_path / "cut", "--step", "gelu", "--data", "synthetic") == 0
    resumed, clean = record(tmp_path / "cut", "gelu"), record(tmp_path / "clean", "gelu")
    assert comparable(resumed) == comparable(clean)


def test_checkpoint_outlives_an_interruption_before_the_record_is_written(tmp_path, monkeypatch):
    def killed_while_writing(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.Record, "write", killed_while_writing)
    assert run_cli(tmp_path, "--step", "gelu", "--data", "synthetic") == 130
    assert list((tmp_path / "ckpt").rglob("seed0.pt")), "the finished run's checkpoint must survive until its record"


def test_divergence_is_recorded_and_the_roadmap_goes_on(tmp_path, monkeypatch):
    make_loss = recipe.make_loss

    def loss_that_explodes(rec, mixup):
        inner = make_loss(rec, mixup)
        calls = {"n": 0}

        def loss(logits, targets):
            calls["n"] += 1
            value = inner(logits, targets)
            return value * float("nan") if calls["n"] > 3 and rec.name == "classic" else value
        return loss

    monkeypatch.setattr(recipe, "make_loss", loss_that_explodes)
    assert run_cli(tmp_path, "--step", "resnet50", "modern_recipe", "--data", "synthetic",
                   "--set", "data.synthetic_size=512") == 0
    bad = record(tmp_path, "resnet50")
    assert bad["status"] == "diverged" and bad["divergence"]["step"] == 4 and bad["divergence"]["epoch"] == 1
    assert bad["divergence"]["last_finite_loss"] > 0
    assert record(tmp_path, "modern_recipe")["status"] == "complete"


def test_a_crashing_step_is_recorded_as_failed_and_the_next_runs(tmp_path, monkeypatch):
    build = runs.train_run.__globals__["build_model"]

    def broken_for_stage_ratio(model_cfg, num_classes=1000):
        if model_cfg.depths[2] == 3 and model_cfg.stem == "resnet":  # stage_ratio at the demo scale
            raise RuntimeError("simulated CUDA error")
        return build(model_cfg, num_classes)

    monkeypatch.setitem(runs.train_run.__globals__, "build_model", broken_for_stage_ratio)
    assert run_cli(tmp_path, "--step", "stage_ratio", "patchify_stem", "--data", "synthetic") == 1
    failed = record(tmp_path, "stage_ratio")
    assert failed["status"] == "failed" and "simulated CUDA error" in failed["reason"]
    assert record(tmp_path, "patchify_stem")["status"] == "complete"
    monkeypatch.setitem(runs.train_run.__globals__, "build_model", build)
    assert run_cli(tmp_path, "--step", "stage_ratio", "--data", "synthetic") == 0  # failed runs are retried
    assert record(tmp_path, "stage_ratio")["status"] == "complete"


@pytest.mark.skipif(not shutil.which("torchrun", path=str(Path(sys.executable).parent)), reason="no torchrun")
def test_ddp_with_two_gloo_processes_writes_one_result(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "runner.py"), "run",
         "--step", "separate_downsampling", "--data", "synthetic", "--device", "cpu",
         "--results", str(tmp_path / "results"), "--checkpoints", str(tmp_path / "ckpt"), *TINY],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list((tmp_path / "results").rglob("*.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "complete" and rec["world_size"] == 2
    assert proc.stderr.count("[1/1]") == 1 and proc.stderr.count("epoch 1/") == 1  # rank 0 alone reports


COUNT_ALL_REDUCES = """
import json, sys
sys.path.insert(0, {root!r})
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from roadmap.config import parse_overrides
from roadmap.data import open_source
from roadmap.plan import plan_runs, ready
from roadmap.runtime import init_distributed
from roadmap.train import Run

compiled, real_compile = [], torch.compile


def compile_without_cxx(model, **kwargs):   # aot_eager: dynamo and AOTAutograd, without inductor's C++ build
    compiled.append(model)
    return real_compile(model, backend="aot_eager", **kwargs)


torch.compile = compile_without_cxx
info = init_distributed("cpu")
overrides = parse_overrides(["train.compile=true", "train.device=cpu", "scale.batch_size=24", "scale.micro_batch=4",
                             "data.synthetic_size=48", "scale.image_size=16", "scale.stem_stride=2"])
[plan] = plan_runs("resnet50", ["gelu"], "demo", "synthetic", [0], overrides, info.world_size)
plan = ready(plan, open_source(plan.cfg.data, plan.cfg.scale, rank=info.rank), info)
run = Run(plan, info, progress=False)
synced_passes = []   # one entry per backward pass whose gradients were all-reduced (at its last bucket)


def count(group, bucket):
    if bucket.is_last():
        synced_passes.append(bucket.index())
    return allreduce_hook(group, bucket)


run.ddp.register_comm_hook(None, count)
run.train_epoch(0)
if info.is_main:
    print(json.dumps({{"compiled": len(compiled), "accum": run.accum, "updates": run.updates_per_epoch,
                      "synced_passes": len(synced_passes)}}))
dist.destroy_process_group()
"""


@pytest.mark.skipif(not shutil.which("torchrun", path=str(Path(sys.executable).parent)), reason="no torchrun")
def test_compiled_ddp_all_reduces_gradients_once_per_update_not_per_micro_batch(tmp_path):
    # torch.compile must wrap the bare model, inside DDP: compiling the DDP module hides no_sync from the loop.
    script = tmp_path / "count_all_reduces.py"
    script.write_text(COUNT_ALL_REDUCES.format(root=str(ROOT)))
    proc = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["compiled"] == 1 and counts["accum"] == 3 and counts["updates"] == 2, counts
    assert counts["synced_passes"] == counts["updates"], counts   # not updates x accum


def test_eval_every_two_epochs_completes_with_a_full_epoch_log(tmp_path):
    assert run_cli(tmp_path, "--step", "gelu", "--data", "synthetic", "--set", "train.eval_every=2",
                   "--set", "scale.epochs=3") == 0
    rec = record(tmp_path, "gelu")
    assert rec["status"] == "complete" and [("eval_top1" in e) for e in rec["epochs"]] == [False, True, True]
    log = RunKey("resnet50", "demo", "synthetic", "gelu", 0).log_path(tmp_path / "results").read_text().splitlines()
    assert "eval_top1" in log[0] and len(log) == 4


def test_record_holds_the_resolved_recipe_and_the_seed_trained(tmp_path):
    assert run_cli(tmp_path, "--step", "gelu", "--data", "synthetic", "--seed", "3") == 0
    rec = record(tmp_path, "gelu", seed=3)
    assert rec["seed"] == 3 and rec["config"]["train"]["seed"] == 3
    assert rec["recipe"]["lr"] > 0 and rec["recipe"]["epochs"] == 2 and rec["recipe"]["batch_size"] == 32
    assert rec["recipe"]["optimizer"] == "adamw" and rec["command"]
    assert rec["started"] <= rec["finished"] and rec["finished"].endswith("+00:00")
    assert record(tmp_path, "gelu", seed=0) is None


def denormals_survive() -> bool:
    return (torch.tensor([1e-39]) * 1.0).item() != 0.0   # a denormal float: zero while flushed (FTZ/DAZ)


def test_flush_denormal_is_each_runs_own_and_the_record_says_it(tmp_path):
    supported = torch.set_flush_denormal(False)   # x86 can flush; elsewhere the setting does nothing
    assert run_cli(tmp_path, "--step", "gelu", "--data", "synthetic", "--set", "train.flush_denormal=true") == 0
    assert record(tmp_path, "gelu")["flush_denormal"] is True
    assert denormals_survive() is not supported
    assert run_cli(tmp_path, "--step", "gelu", "--data", "synthetic", "--seed", "1") == 0   # the default: off
    assert record(tmp_path, "gelu", seed=1)["flush_denormal"] is False
    assert denormals_survive()


def test_train_seed_is_not_an_override(tmp_path, capsys):
    assert run_cli(tmp_path, "--step", "gelu", "--data", "synthetic", "--set", "train.seed=5") == 2
    assert "use --seed" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_dry_run_prints_every_run_and_writes_nothing(tmp_path, capsys):
    assert run_cli(tmp_path, "--all", "--data", "synthetic", "--seeds", "2", "--dry-run", "--json") == 0
    plans = json.loads(capsys.readouterr().out)
    assert len(plans) == 2 * 18 and [p["seed"] for p in plans[:2]] == [0, 0]
    gelu = next(p for p in plans if p["step"] == "gelu")
    assert gelu["batching"]["updates_per_epoch"] == 128 // 32 and gelu["batching"]["warmup_updates"] >= 0
    assert gelu["model"]["act"] == "gelu" and gelu["recipe"]["lr"] > 0 and gelu["scale"]["image_size"] == 16
    assert not (tmp_path / "results").exists() and not (tmp_path / "ckpt").exists()


def test_a_dry_run_makes_and_decodes_no_data(tmp_path, capsys, monkeypatch, photos):
    import tracemalloc
    # Made, 1280 images at 224 px would be 190 MB (and their float noise far more): a dry run only counts them.
    tracemalloc.start()
    try:
        assert cli.main(["run", "--all", "--scale", "paper", "--data", "synthetic", "--set", "data.synthetic_size=1024",
                         "--set", "scale.batch_size=64", "--set", "scale.classic_batch_size=64", "--results", str(tmp_path / "results"), "--dry-run", "--json"]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    plans = json.loads(capsys.readouterr().out)
    assert plans[0]["batching"]["train_images"] == 1024 and peak < 64 * 2**20, peak
    monkeypatch.setattr(data.serving, "decode_files", lambda *a: pytest.fail("a dry run decoded images"))
    folder = photos(tmp_path / "photos")
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{folder}", "--set", "data.in_memory=true",
                   "--set", "scale.batch_size=8", "--set", "scale.micro_batch=8", "--dry-run") == 0
    assert not (tmp_path / "results").exists()


def test_a_size_the_total_stride_does_not_divide_is_refused(tmp_path, capsys):
    assert run_cli(tmp_path, "--step", "gelu", "--data", "synthetic", "--set", "scale.image_size=24") == 2
    assert "not a multiple of the network's total stride 16" in capsys.readouterr().err


def make_folder(root: Path, per_class: int) -> Path:
    for split, n in (("train", per_class), ("test", 4)):
        for c, color in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (16, 16), color).save(folder / f"{i}.png")
    return root


def test_moved_data_finds_its_results_and_other_data_under_the_name_is_refused(tmp_path, capsys):
    first = make_folder(tmp_path / "a" / "shapes", 16)
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{first}/") == 0
    moved = tmp_path / "b" / "shapes"
    moved.parent.mkdir()
    first.rename(moved)
    capsys.readouterr()
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{moved}") == 0
    assert "already complete, skipped" in capsys.readouterr().err
    shutil.rmtree(moved)
    make_folder(moved, 24)                                       # other images under the same name
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{moved}") == 2
    assert "was other data" in capsys.readouterr().err


def test_the_plan_line_names_the_classic_recipes_own_batch(tmp_path):
    planned = runs.plan_runs("resnet50", ["resnet50", "gelu"], "paper", "synthetic", [0], {})
    line = runs.describe_plan(planned, tmp_path)
    assert "batch 256 / 4096" in line and "2 step(s) x 1 seed(s)" in line


def test_copied_data_is_the_same_and_one_changed_image_makes_it_other_data(tmp_path, capsys):
    first = make_folder(tmp_path / "a" / "shapes", 16)
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{first}") == 0
    copy = shutil.copytree(first, tmp_path / "b" / "shapes")
    capsys.readouterr()
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{copy}") == 0
    assert "already complete, skipped" in capsys.readouterr().err
    image = copy / "train" / "class0" / "3.png"
    image.rename(image.with_name("3b.png"))                                   # renamed: same counts
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{copy}") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "was other data" in lines[0] and "data_fingerprint was" in lines[0], lines
    image.with_name("3b.png").rename(image)
    Image.new("RGB", (20, 20), (9, 9, 9)).save(image)                         # replaced: same name, same counts
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{copy}") == 2
    assert "data_fingerprint was" in capsys.readouterr().err


def test_a_record_from_before_fingerprints_is_judged_by_its_counts(tmp_path, capsys):
    folder = make_folder(tmp_path / "shapes", 16)
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{folder}") == 0
    key = RunKey("resnet50", "demo", f"imagefolder:{folder}", "gelu", 0)
    old = read_record(key.record_path(tmp_path / "results"))
    assert len(old.pop("data_fingerprint")) == 16
    write_record(tmp_path / "results", key, old)
    capsys.readouterr()
    assert run_cli(tmp_path, "--step", "gelu", "--data", f"imagefolder:{folder}") == 0
    assert "already complete, skipped" in capsys.readouterr().err


def test_a_record_is_its_dataclass_checked_as_configs_are(tmp_path):
    from roadmap.config import ConfigError
    from roadmap.results import Record, record_problem
    failed = Record(schema=1, status="failed", roadmap="resnet50", scale="demo", data="synthetic", step="gelu",
                    seed=0, reason="RuntimeError: x", epochs=[], params=5)
    assert "params" not in failed.to_json() and failed.to_json()["reason"] == "RuntimeError: x"   # complete runs' only
    failed.write(tmp_path)
    assert read_record(failed.key.record_path(tmp_path)) == failed.to_json()
    with pytest.raises(ConfigError, match="record.top1 must be float"):
        Record(**{**failed.to_json(), "status": "complete", "top1": "50"}).write(tmp_path)
    path = failed.key.record_path(Path())
    assert "record.top1 must be float" in record_problem({**failed.to_json(), "top1": "50"}, path)  # JSON: no text numbers
    assert "record.status must be one of" in record_problem({**failed.to_json(), "status": "done"}, path)
    assert record_problem({**failed.to_json(), "a_later_key": 1}, path) is None   # a later runner's field is no damage


def test_the_total_eta_corrects_plans_estimate_by_the_ratio_measured_and_counts_runs_in_progress():
    from roadmap.eta import TotalEta
    now = [0.0]
    eta = TotalEta({3: 100.0, 4: 200.0, 5: 300.0}, jobs=2, clock=lambda: now[0])
    assert eta.left() == [3, 4, 5] and eta.rest_s() == 400.0   # 3 then 5 in one process, 4 in the other
    eta.start(3), eta.start(4)
    now[0] = 150.0
    eta.end(3, 150.0)   # took 1.5x its plan: so should the rest; run 4 has 1.5 x 200 - 150 s to go
    assert eta.ratio == 1.5 and eta.rest_s() == 450.0
    assert eta.line() == "2 run(s) left, about 7.5 min (plan's estimate x1.50, the ratio measured on 1 complete run(s))"
    eta.start(5)
    now[0] = 200.0
    eta.end(4, None)   # failed: counts as ended, teaches nothing about speed
    assert eta.ratio == 1.5 and eta.left() == [5] and eta.rest_s() == 1.5 * 300 - 50
    assert eta.short() == "1 run(s) left, about 6.7 min"


def eta_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " run(s) left, about " in line]


def test_several_runs_say_as_each_ends_how_many_are_left_and_the_time_the_rest_should_take(tmp_path, capsys):
    assert run_cli(tmp_path, "--step", "resnet50", "gelu", "layernorm", "--data", "synthetic") == 0
    lines = eta_lines(capsys.readouterr().err)
    assert [line.split()[0] for line in lines] == ["2", "1"], lines
    assert all("(plan's estimate x" in line and "measured on" in line for line in lines), lines
    assert run_cli(tmp_path, "--step", "resnet50", "gelu", "layernorm", "kernel5", "--data", "synthetic") == 0
    assert eta_lines(capsys.readouterr().err) == []   # one run to train, before three done: its own ETA says it


def test_runs_in_jobs_say_it_too(tmp_path):
    from conftest import runner_argv
    proc = subprocess.run(runner_argv("run", "--results", tmp_path / "results", "--checkpoints", tmp_path / "ckpt",
                                      *TINY, "--step", "resnet50", "gelu", "layernorm", "--jobs", "2"),
                          env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split()[0] for line in eta_lines(proc.stderr)] == ["2", "1"], proc.stderr[-2000:]
