"""The throughput bench on the CPU at a tiny setting: the JSON it writes, the ratios, argument checks."""
import json
import math

import pytest
import timm
import torch

from roadmap import bench, cli
from roadmap.config import ConfigError

TINY = dict(batch=2, image_size=32, dtype="fp32", channels_last=None, compile=False, repeat=2, warmup=1, iters=1,
            device="cpu")
TOP_KEYS = {"device", "torch", "timm", "cuda", "cudnn", "python", "git_commit", "command", "settings", "rows",
            "ratios", "date"}
SETTING_KEYS = {"batch", "image_size", "dtype", "channels_last", "compile", "repeat", "warmup", "iters", "roadmap",
                "flush_denormal"}
ROW_KEYS = {"id", "kind", "params", "gflops", "images_per_s_median", "images_per_s_min", "images_per_s_max",
            "step_ms_median", "peak_mem_mb", "mfu", "error"}


def run_bench(out_dir, step_ids, **overrides):
    return bench.bench_command("resnet50", step_ids, out_dir=out_dir, **{**TINY, **overrides})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batches of 2 gain nothing from intra-op threads, and OpenMP threads that spin-wait crawl
    when another process shares the two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    path = run_bench(out_dir, ["resnet50", "separate_downsampling"])
    return path, json.loads(path.read_text())


def test_json_file_and_keys(first_run):
    path, report = first_run
    assert path.name.startswith("cpu-") and path.suffix == ".json"
    assert TOP_KEYS <= report.keys()
    assert SETTING_KEYS <= report["settings"].keys()
    assert report["settings"]["channels_last"] is True  # as runs train: on, the CPU included
    assert report["settings"]["flush_denormal"] is False   # as runs train: off
    for row in report["rows"]:
        assert ROW_KEYS <= row.keys()


def test_rows_for_both_steps_and_the_timm_references(first_run):
    _, report = first_run
    assert [(r["id"], r["kind"]) for r in report["rows"]] == [
        ("resnet50", "step"), ("separate_downsampling", "step"),
        ("timm/resnet50", "timm"), ("timm/convnext_tiny", "timm")]
    for row in report["rows"]:
        assert row["error"] is None
        assert 0 < row["images_per_s_min"] <= row["images_per_s_median"] <= row["images_per_s_max"]
        assert row["step_ms_median"] > 0 and row["params"] > 0 and row["gflops"] > 0
        assert row["peak_mem_mb"] is None and row["mfu"] is None  # CPU: no device memory, no known peak
    rows = {r["id"]: r for r in report["rows"]}
    # Same architectures as timm's: same parameter count and MACs.
    assert rows["resnet50"]["params"] == rows["timm/resnet50"]["params"]
    assert rows["separate_downsampling"]["gflops"] == pytest.approx(rows["timm/convnext_tiny"]["gflops"], rel=1e-3)


def test_ratios_are_ours_over_timm(first_run):
    _, report = first_run
    rate = {r["id"]: r["images_per_s_median"] for r in report["rows"]}
    assert report["ratios"]["resnet50_vs_timm"] == pytest.approx(rate["resnet50"] / rate["timm/resnet50"], rel=1e-3)
    assert report["ratios"]["convnext_vs_timm"] == pytest.approx(
        rate["separate_downsampling"] / rate["timm/convnext_tiny"], rel=1e-3)
    # The same pairs timed again with their windows in turn, which machine drift cannot tilt.
    assert set(report["ratios_interleaved"]) == set(report["ratios"])
    assert all(value > 0 for value in report["ratios_interleaved"].values())
    # Both orders (ours first, timm first): their geometric mean is the ratio, which neither order tilts.
    for key, (ours_first, theirs_first) in report["ratios_interleaved_orders"].items():
        assert report["ratios_interleaved"][key] == pytest.approx(math.sqrt(ours_first * theirs_first), abs=2e-4)


def test_a_second_run_never_overwrites(first_run, capsys):
    path, report = first_run
    before = path.read_text()
    second = run_bench(path.parent, ["resnet50"], reference=False)
    assert second != path and second.parent == path.parent
    assert second.name == path.name.replace(".json", "-2.json") or report["date"] not in second.name
    assert path.read_text() == before
    assert [r["id"] for r in json.loads(second.read_text())["rows"]] == ["resnet50"]
    assert json.loads(second.read_text())["ratios"] == {}
    assert "| resnet50 | step |" in capsys.readouterr().out


def test_out_of_memory_is_recorded_and_the_rest_goes_on(tmp_path, monkeypatch):
    real_measure = bench.measure

    def measure_or_oom(model, settings):
        if isinstance(model, timm.models.convnext.ConvNeXt):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_measure(model, settings)

    monkeypatch.setattr(bench, "measure", measure_or_oom)
    report = json.loads(run_bench(tmp_path, ["resnet50"]).read_text())
    rows = {r["id"]: r for r in report["rows"]}
    assert rows["timm/convnext_tiny"]["error"] == "out of memory"
    assert rows["timm/convnext_tiny"]["images_per_s_median"] is None
    assert rows["timm/resnet50"]["error"] is None and rows["timm/resnet50"]["images_per_s_median"] > 0
    assert set(report["ratios"]) == {"resnet50_vs_timm"}  # no ratio without both endpoints measured
    assert set(report["ratios_interleaved"]) == {"resnet50_vs_timm"}


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_on_the_cpu(tmp_path, dtype):
    report = json.loads(run_bench(tmp_path, ["separate_downsampling"], dtype=dtype, channels_last=True,
                                  reference=False).read_text())
    assert report["settings"]["dtype"] == dtype and report["settings"]["channels_last"] is True
    assert report["rows"][0]["images_per_s_median"] > 0


@pytest.mark.parametrize("overrides,message", [
    (dict(batch=0), "--batch"),
    (dict(image_size=16), "total stride"),
    (dict(image_size=0), "--image-size must be at least 1 pixel, not 0"),
    (dict(repeat=0), "--repeat"),
    (dict(iters=0), "--iters"),
    (dict(warmup=-1), "--warmup"),
    (dict(dtype="fp64"), "--dtype"),
    (dict(device="tpu"), "--device must be one of auto, cpu, cuda"),
    (dict(step_ids=["no_such_step"]), "unknown step 'no_such_step'"),
    (dict(roadmap="resnet51"), "unknown roadmap"),
])
def test_bad_arguments(tmp_path, overrides, message):
    args = {"roadmap": "resnet50", "step_ids": ["resnet50"], **TINY, "out_dir": tmp_path, **overrides}
    with pytest.raises(ConfigError, match=message):
        bench.bench_command(**args)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args,message", [(["--batch", "0"], "--batch must be at least 1, not 0"),
                                          (["--image-size", "0"], "--image-size must be at least 1 pixel, not 0")])
@pytest.mark.parametrize("scale", [[], ["--scale", "demo"]])
def test_zero_from_the_command_line_is_zero_not_the_default(tmp_path, capsys, args, message, scale):
    assert cli.main(["bench", "--steps", "resnet50", "--device", "cpu", "--out", str(tmp_path), *scale, *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}", err
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path):
    with pytest.raises(ConfigError, match="no CUDA device"):
        run_bench(tmp_path, ["resnet50"], device="cuda")


def test_compile_without_a_compiler(tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-c++-compiler",))
    with pytest.raises(ConfigError, match="--compile cannot be used here"):
        run_bench(tmp_path, ["resnet50"], compile=True)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name,dtype,peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
    ("NVIDIA H100 80GB HBM3", "fp32", 494e12),
    ("NVIDIA H100 PCIe", "bf16", 756e12),
    ("NVIDIA H100 NVL", "fp16", 835e12),
    ("NVIDIA H200", "bf16", 989e12),
    ("NVIDIA A100-SXM4-80GB", "fp32", 156e12),
    ("NVIDIA GeForce RTX 4090", "bf16", None),
])
def test_peak_flops_table(name, dtype, peak):
    assert bench.peak_flops(name, dtype) == peak


def test_resnet200_roadmap_compares_with_timm_resnet200_and_convnext_base():
    assert bench.ratio_pairs("resnet200") == {"resnet200_vs_timm": ("resnet200", "timm/resnet200"),
                                              "convnext_vs_timm": ("separate_downsampling", "timm/convnext_base")}
    ids = [c.id for c in bench.candidates("resnet200", [], reference=True)]
    assert ids == ["timm/resnet200", "timm/convnext_base"]
