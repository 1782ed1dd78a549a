"""make gpu-check: its parts are listed without a GPU, and without CUDA it refuses in one line."""
import subprocess
import sys

import pytest

from conftest import ROOT
from roadmap import gpucheck


def test_the_dry_run_lists_every_part_with_its_command_and_limit(capsys):
    assert gpucheck.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("bench-eager", "bench-compile", "roadmap-small", "ddp-2proc", "ddp-failing-rank"):
        assert f"{name} (at most" in out
    assert "--compile" in out and "imagefolder:<cifar10-jpg>" in out and "torch.distributed.run" in out
    limits = [int(line.split("(at most ")[1].split(" s)")[0]) for line in out.splitlines() if "(at most" in line]
    assert sum(limits) <= 600   # the whole check fits one 10-minute command on a lent GPU


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA machine runs the real check")
def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "roadmap.gpucheck", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "no CUDA" in proc.stderr
    assert not any(tmp_path.iterdir())   # nothing written
