"""The compute planner: FLOPs from counted MACs, images and epochs; speed from bench records or datasheets."""
import json

import pytest

from roadmap import cli
from roadmap.compute import TRAIN_FLOPS_PER_FORWARD_MAC, plan_costs
from roadmap.config import ConfigError
from roadmap.plan import plan_runs


def plans(scale="paper", data="imagefolder:/nowhere/imagenet", steps=("resnet50", "separate_downsampling"), seeds=(0,)):
    return plan_runs("resnet50", list(steps), scale, data, list(seeds), {})


def test_paper_scale_on_h100s_from_the_datasheet():
    costs = plan_costs(plans(seeds=(0, 1, 2)), "H100", 8, "bf16", 0.4)
    assert len(costs["runs"]) == 6 and "datasheet peak" in costs["source"] and "40%" in costs["source"]
    assert "ImageNet-1k's sizes assumed" in costs["data_note"]
    classic = costs["runs"][0]
    # ResNet-50: 4.09 GMACs; 90 epochs of the 1,281,167 images in full batches of 256, 6 FLOPs per MAC.
    images = 1_281_167 // 256 * 256 * 90
    assert classic["train_images"] == images
    assert classic["flops"] == pytest.approx(classic["gmacs"] * 1e9 * (6 * images + 2 * 50_000 * 90))
    assert classic["seconds"] == pytest.approx(classic["flops"] / (989e12 * 0.4 * 8))
    assert classic["device_hours"] == pytest.approx(classic["seconds"] * 8 / 3600)
    assert costs["total"]["device_hours"] == pytest.approx(sum(r["device_hours"] for r in costs["runs"]))


def test_a_bench_record_of_the_device_gives_the_speed_step_by_step(tmp_path):
    record = {"device": "cpu (x86_64, 2 threads)", "date": "2026-11-25",
              "settings": {"scale": "cpu", "batch": 128, "image_size": 32, "dtype": "fp32"},
              "rows": [{"id": "resnet50", "kind": "step", "images_per_s_median": 1000.0, "gflops": 0.01},
                       {"id": "separate_downsampling", "kind": "step", "images_per_s_median": 2000.0, "gflops": 0.01},
                       {"id": "timm/resnet50", "kind": "timm", "images_per_s_median": 5.0, "gflops": 4.0}]}
    (tmp_path / "cpu-2026-11-25.json").write_text(json.dumps(record))
    costs = plan_costs(plans("cpu", "fashion-mnist"), "cpu", 1, "fp32", 0.4, bench_dir=tmp_path)
    assert "bench record cpu-2026-11-25.json" in costs["source"]
    by_step = {r["step"]: r for r in costs["runs"]}
    assert by_step["resnet50"]["seconds"] == pytest.approx(
        by_step["resnet50"]["flops"] / (1000.0 * TRAIN_FLOPS_PER_FORWARD_MAC * 0.01e9))
    assert by_step["separate_downsampling"]["seconds"] == pytest.approx(
        by_step["separate_downsampling"]["flops"] / (2000.0 * TRAIN_FLOPS_PER_FORWARD_MAC * 0.01e9))


def test_a_device_without_record_or_peak_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no bench record of 'tpu'"):
        plan_costs(plans(), "tpu", 1, "bf16", 0.4, bench_dir=tmp_path)
    with pytest.raises(ConfigError, match="--devices must be 1 or more"):
        plan_costs(plans(), "H100", 0, "bf16", 0.4, bench_dir=tmp_path)


def test_cli_plan_prints_device_hours_per_step_and_in_total(capsys):
    assert cli.main(["plan", "--scale", "paper", "--data", "imagefolder:/nowhere/imagenet", "--device", "H100",
                     "--devices", "8", "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "| separate_downsampling | 2 |" in out and "| total |" in out and "device-hours" in out
    assert "On 8 x H100" in out


def test_plan_refuses_an_unknown_dtype_in_one_line(capsys):
    code = cli.main(["plan", "--scale", "demo", "--device", "H100", "--dtype", "fp64"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: --dtype must be one of bf16, fp16, fp32, not 'fp64'"


def bench_record(tmp_path, name, *, threads, channels_last, rate, date="2026-12-02"):
    record = {"device": f"cpu (x86_64, {threads} threads)", "date": date,
              "settings": {"scale": "cpu", "batch": 128, "image_size": 32, "dtype": "fp32", "threads": threads,
                           "channels_last": channels_last},
              "rows": [{"id": step, "kind": "step", "images_per_s_median": rate, "gflops": 0.01}
                       for step in ("resnet50", "separate_downsampling")]}
    (tmp_path / name).write_text(json.dumps(record))


def test_jobs_hand_runs_out_to_whichever_process_is_free_and_take_the_matching_bench_record(tmp_path):
    bench_record(tmp_path, "cpu-a.json", threads=1, channels_last=True, rate=1000.0)
    bench_record(tmp_path, "cpu-b.json", threads=2, channels_last=True, rate=9999.0, date="2026-12-03")
    bench_record(tmp_path, "cpu-c.json", threads=1, channels_last=False, rate=9999.0, date="2026-12-03")
    planned = plans("cpu", "fashion-mnist", seeds=(0, 1))
    costs = plan_costs(planned, "cpu", 1, "fp32", 0.4, bench_dir=tmp_path, jobs=2)
    assert "cpu-a.json" in costs["source"] and costs["threads"] == max(1, __import__("torch").get_num_threads() // 2)
    # Runs a, b, c, d in order to two processes: a | b, then c after the shorter of a and b, d after the next.
    a, b, c, d = (r["seconds"] for r in costs["runs"])
    free = sorted([a, b])
    after_c = sorted([free[1], free[0] + c])
    assert costs["total"]["wall_seconds"] == pytest.approx(max(after_c[1], after_c[0] + d))
    assert costs["total"]["seconds"] == pytest.approx(a + b + c + d)
    one = plan_costs(planned, "cpu", 1, "fp32", 0.4, bench_dir=tmp_path)
    assert one["total"]["wall_seconds"] == pytest.approx(one["total"]["seconds"])
    # More processes than runs: a process a run, as run --jobs starts them (10**12 of them once ran out of memory).
    every = plan_costs(planned, "cpu", 1, "fp32", 0.4, bench_dir=tmp_path, jobs=10**12)
    assert every["total"]["wall_seconds"] == pytest.approx(max(a, b, c, d))


def test_plan_jobs_is_for_a_cpu_and_at_least_one(capsys):
    code = cli.main(["plan", "--scale", "demo", "--device", "H100", "--jobs", "2"])
    assert code == 2 and "--jobs plans runs in processes that share a CPU" in capsys.readouterr().err
    code = cli.main(["plan", "--scale", "demo", "--jobs", "0"])
    assert code == 2 and capsys.readouterr().err.strip() == "error: --jobs must be 1 or more, not 0"


def test_plan_counts_a_network_of_any_size_without_building_it():
    # 27G parameters: built in memory they would take 100 GiB (and the OOM killer's attention); counted, none.
    from conftest import runner_argv
    import resource
    import subprocess

    def little_memory():
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))

    proc = subprocess.run(runner_argv("plan", "--step", "gelu", "--set", "scale.width_mult=60", "--device", "H100",
                                      "--json"), capture_output=True, text=True, timeout=300, preexec_fn=little_memory)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["runs"][0]["gmacs"] > 10   # at width_mult 1 (the demo scale): 0.002
