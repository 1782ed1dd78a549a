"""Crash safety: kill -9 anywhere, run again, get the same results; runners that share a folder."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import runner_argv, tiny
from roadmap import runs
from roadmap.results import ResultsError, RunKey, RunLock, lock_is_held

ROOT = Path(__file__).resolve().parent.parent
# Small enough for a whole roadmap in well under a minute, with 2 epochs so checkpoints matter.
TINY = tiny("scale.epochs=2", "scale.batch_size=32", "scale.micro_batch=32", "data.synthetic_size=96")
TIMINGS = {"wall_s", "images_per_s", "epoch_s", "data_s", "data_time_share", "input_bound", "peak_mem_mb", "started",
           "finished"}


def runner(out: Path, *extra) -> list[str]:
    return runner_argv("run", "--results", out / "results", "--checkpoints", out / "ckpt", *TINY, *extra)


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def records(out: Path) -> dict:
    found = {}
    for path in sorted((out / "results").rglob("seed*.json")):
        rec = json.loads(path.read_text())
        rec = {k: v for k, v in rec.items() if k not in TIMINGS | {"git_commit", "command"}}
        rec["epochs"] = [{k: v for k, v in e.items() if k not in TIMINGS} for e in rec["epochs"]]
        found[rec["step"]] = rec
    return found


def test_kill_9_mid_roadmap_then_rerun_gives_the_uninterrupted_results(tmp_path):
    # Enough updates per epoch that the kill lands inside the second epoch, not after it.
    steps = ["--step", "resnet50", "modern_recipe", "stage_ratio", "patchify_stem", "--set", "data.synthetic_size=640"]
    subprocess.run(runner(tmp_path / "clean", *steps), check=True, env=env(), capture_output=True, timeout=300)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(runner(cut, *steps), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    # Kill once stage_ratio (2 epochs) has its first epoch checkpointed: mid-roadmap and mid-run.
    while time.time() < deadline and not list((cut / "ckpt").rglob("stage_ratio/seed0.pt")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = set(records(cut))
    assert done_before == {"resnet50", "modern_recipe"}, done_before
    assert not list((cut / "results").rglob("*.tmp")), "no half-written file may stay visible under its name"

    again = subprocess.run(runner(cut, *steps), env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    for step in done_before:
        assert f"{step} seed 0: already complete, skipped" in again.stderr   # no completed run repeated
    assert "resuming stage_ratio seed 0 after epoch 1" in again.stderr     # the interrupted one resumed
    assert records(cut) == records(tmp_path / "clean")


HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from roadmap.results import RunKey, RunLock
lock = RunLock(Path(sys.argv[2]), RunKey("resnet50", "demo", "synthetic", "gelu", 0))
lock.acquire()   # held while `lock` lives
print("held", flush=True)
time.sleep(float(sys.argv[3]))
"""


def hold_lock(results: Path, seconds: float) -> subprocess.Popen:
    """A process that holds gelu seed 0's lock for `seconds`, then ends; returned once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), str(results), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_runner_trains_the_other_runs_first_and_waits_for_one_another_process_holds(tmp_path):
    holder = hold_lock(tmp_path / "results", 600)   # gelu seed 0, taken by someone else
    proc = subprocess.Popen(runner(tmp_path, "--step", "gelu", "layernorm"), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:   # layernorm first; then it waits for gelu
            seen.append(line)
            if "waiting for the other process that trains it" in line:
                break
        assert "[1/2] resnet50/gelu seed 0: being trained by another process" in "".join(seen), "".join(seen)
        assert "[2/2] resnet50/layernorm seed 0: top-1" in "".join(seen), "".join(seen)
        assert proc.poll() is None   # still waiting
    finally:
        holder.kill()   # kill -9: its lock goes with it, the run unfinished: the waiting runner trains it
        holder.wait()
    err = "".join(seen) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "[1/2] resnet50/gelu seed 0: top-1" in err and "2 complete, 0 skipped" in err
    assert set(records(tmp_path)) == {"gelu", "layernorm"}


def test_a_seed_given_twice_is_one_run_even_in_two_processes(tmp_path):
    proc = subprocess.run(runner(tmp_path, "--step", "gelu", "--seed", "0", "0", "--jobs", "2"), env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 complete, 0 skipped" in proc.stderr, proc.stderr[-2000:]


def test_two_identical_commands_started_together_train_every_run_once(tmp_path):
    args = runner(tmp_path, "--step", "resnet50", "gelu", "layernorm", "--jobs", "2")
    procs = [subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errs
    trained = [line for err in errs for line in err.splitlines() if ": top-1 " in line]
    assert sorted(line.split("]")[1].split(":")[0] for line in trained) == \
        [" resnet50/gelu seed 0", " resnet50/layernorm seed 0", " resnet50/resnet50 seed 0"], errs
    found = records(tmp_path)
    assert set(found) == {"resnet50", "gelu", "layernorm"} and all(r["status"] == "complete" for r in found.values())


def test_a_rank_waits_until_rank_0_lets_the_run_go_but_not_for_ever(tmp_path):
    lock = RunLock(tmp_path, RunKey("resnet50", "demo", "synthetic", "gelu", 0))
    holder = hold_lock(tmp_path, 2)
    start = time.monotonic()
    runs.wait_for_release(lock, timeout_s=60)
    assert 1.0 < time.monotonic() - start < 30 and holder.wait(timeout=30) == 0
    holder = hold_lock(tmp_path, 600)
    try:
        start = time.monotonic()
        runs.wait_for_release(lock, timeout_s=1)
        assert time.monotonic() - start < 10
    finally:
        holder.kill()
        holder.wait()


def test_sigterm_releases_the_lock(tmp_path):
    proc = subprocess.Popen(runner(tmp_path, "--step", "gelu", "--set", "data.synthetic_size=4000"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    [lock_path] = wait_for_locks(proc, tmp_path, ["gelu"], timeout_s=120)
    assert lock_is_held(lock_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert not lock_is_held(lock_path)


def wait_for_locks(proc: subprocess.Popen, out: Path, steps: list[str], timeout_s: float = 240) -> list[Path]:
    """The seed-0 lock files of these steps under out/results, once the runner has created them all."""
    locks = [RunKey("resnet50", "demo", "synthetic", step, 0).folder(out / "results") / "seed0.lock" for step in steps]
    deadline = time.time() + timeout_s
    while time.time() < deadline and not all(lock.exists() for lock in locks):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    time.sleep(0.5)   # created, then locked at once; a probe in between would take the lock from the runner
    return locks


def test_lock_is_exclusive_and_released(tmp_path):
    key = RunKey("resnet50", "demo", "synthetic", "gelu", 0)
    with RunLock(tmp_path, key):
        with pytest.raises(ResultsError, match="being trained by another process"):
            # Same process id, but a lock is a lock: a second acquire must not pass.
            RunLock(tmp_path, key).acquire()
    RunLock(tmp_path, key).acquire()


def test_two_runners_on_different_steps_share_a_folder(tmp_path):
    procs = [subprocess.Popen(runner(tmp_path, "--step", step), env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for step in ("gelu", "layernorm")]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    found = records(tmp_path)
    assert set(found) == {"gelu", "layernorm"} and all(r["status"] == "complete" for r in found.values())
    assert not list((tmp_path / "results").rglob("*.tmp"))


def test_jobs_train_what_one_process_trains(tmp_path):
    steps = ["--step", "resnet50", "gelu", "layernorm"]   # three runs for two workers: one takes two
    one = subprocess.run(runner(tmp_path / "one", *steps), env=env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    # Two threads shared by two workers: one thread each, the single process's arithmetic.
    two = subprocess.run(runner(tmp_path / "two", *steps, "--jobs", "2"), env={**env(), "OMP_NUM_THREADS": "2"},
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "3 run(s) to train in 2 processes of 1 thread(s) each" in two.stderr
    assert "3 complete, 0 skipped, 0 failed, 0 diverged" in two.stderr
    assert records(tmp_path / "two") == records(tmp_path / "one")
    again = subprocess.run(runner(tmp_path / "two", *steps, "--jobs", "2"), env=env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "0 complete, 3 skipped" in again.stderr, again.stderr[-2000:]


def test_jobs_stop_when_a_worker_meets_a_mistake(tmp_path, photos):
    folder = photos(tmp_path / "folder", train=4)
    for name in ("cat", "dog", "fox"):   # met only when read: streaming, strict, in the first epoch of either run
        (folder / "train" / name / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    proc = subprocess.run(runner(tmp_path, "--step", "gelu", "layernorm", "--jobs", "2", "--data",
                                 f"imagefolder:{folder}", "--set", "data.strict=true", "--set", "data.in_memory=false",
                                 "--set", "data.workers=0", "--set", "scale.batch_size=4",
                                 "--set", "scale.micro_batch=4"),
                          env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "error: unreadable file" in proc.stderr and "broken.jpg" in proc.stderr
    assert "stopped: a worker process ended with exit code 2" in proc.stderr


def test_sigterm_stops_every_worker_and_frees_their_runs(tmp_path):
    proc = subprocess.Popen(runner(tmp_path, "--step", "gelu", "layernorm", "--jobs", "2",
                                   "--set", "data.synthetic_size=4000"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    locks = wait_for_locks(proc, tmp_path, ["gelu", "layernorm"])
    assert all(lock_is_held(lock) for lock in locks)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    assert not any(lock_is_held(lock) for lock in locks)   # the workers have ended: their flocks went with them
    assert not list((tmp_path / "results").rglob("seed0.json"))


def test_a_worker_killed_outright_stops_the_command_and_a_rerun_finishes(tmp_path):
    args = runner(tmp_path, "--step", "gelu", "layernorm", "--jobs", "2", "--set", "data.synthetic_size=2000")
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_locks(proc, tmp_path, ["gelu", "layernorm"])   # both workers are training
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    os.kill(int(workers[0]), signal.SIGKILL)   # the OOM killer's way: no chance to say anything
    assert proc.wait(timeout=240) == 1
    err = proc.stderr.read()
    assert "stopped: a worker process was killed by signal 9" in err and "Traceback" not in err, err[-2000:]
    again = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    found = records(tmp_path)
    assert set(found) == {"gelu", "layernorm"} and all(r["status"] == "complete" for r in found.values())


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, ended but not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_end_with_a_parent_killed_outright_and_a_rerun_is_not_refused(tmp_path):
    args = runner(tmp_path, "--step", "gelu", "layernorm", "--jobs", "2")
    # Epochs far longer than the test: killed in the first, before any config or checkpoint is written.
    proc = subprocess.Popen([*args, "--set", "data.synthetic_size=4000"], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    locks = wait_for_locks(proc, tmp_path, ["gelu", "layernorm"])   # both workers are training
    workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                  text=True).stdout.split()]
    assert len(workers) == 2, workers
    proc.kill()   # the OOM killer's way with the parent: nobody tells its workers
    proc.wait()
    deadline = time.time() + 60   # seconds on an idle machine; a loaded one may give a worker little CPU to unwind
    while time.time() < deadline and any(map(alive, workers)):
        time.sleep(0.1)
    assert not any(map(alive, workers)), "a worker outlived its parent"
    assert not any(lock_is_held(lock) for lock in locks)   # their flocks went with them
    # Run again at once, the same runs (smaller, so that the test stays short): none is refused as taken.
    again = subprocess.run([*args, "--set", "data.synthetic_size=64", "--set", "scale.epochs=1"], env=env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "another process" not in again.stderr, again.stderr[-2000:]
    found = records(tmp_path)
    assert set(found) == {"gelu", "layernorm"} and all(r["status"] == "complete" for r in found.values())
