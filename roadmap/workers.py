"""`run --jobs N`: train the planned runs in N processes on the CPU, each with its share of the threads.

On a few cores, small networks leave a multi-threaded process idle between its short kernels; two
one-thread processes on two cores train about 1.5x the images/s of one two-thread process (measured
for the cpu scale). The parent hands out runs in roadmap order, one at a time, to whichever worker
is free, so one seed's roadmap finishes first, and the runs' locks and records stay as in one
process. A worker is this command again (same arguments, so the same plan and checks) in worker mode:
it reads run indices on stdin and answers each with its outcome on stdout, and ends when its parent does,
however the parent ends (end_with_parent): no orphan keeps training, or holding a lock.
"""
from __future__ import annotations

import ctypes
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Callable

import torch

from .results import REPO_ROOT
from .runtime import COMMAND_ENV, command_line

WORKER_FLAG = "--worker"   # hidden: the parent adds it to its own arguments
PARENT_ENV = "ROADMAP_JOBS_PARENT"   # the parent's pid, which its workers watch (end_with_parent)
PR_SET_PDEATHSIG = 1   # <linux/prctl.h>: the signal this process gets when its parent dies
HELD, WAIT = "held", "wait"   # a run another process holds (runs.run_one); handed out again after the rest, to wait for


def worker_threads(jobs: int) -> int:
    """Each worker's share of this process's threads (torch's count: OMP_NUM_THREADS, else the cores)."""
    return max(1, torch.get_num_threads() // jobs)


def start_worker(argv: list[str], threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), COMMAND_ENV: command_line(), PARENT_ENV: str(os.getpid()),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    code = "import sys; from roadmap.cli import main; sys.exit(main(sys.argv[1:]))"
    # A session of its own: Ctrl-C on a terminal reaches the parent alone, which passes it on once (SIGTERM).
    return subprocess.Popen([sys.executable, "-c", code, *argv, WORKER_FLAG], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1, start_new_session=True)


def end_with_parent() -> None:
    """Worker mode: end as soon as the parent that started this worker dies, however it dies (kill -9, the OOM
    killer): one SIGTERM unwinds the run in progress (its lock is released, its checkpoint kept), so no orphan
    goes on training and holding a lock that an immediate rerun would meet.

    On Linux the kernel sends it (prctl PR_SET_PDEATHSIG); elsewhere a thread watches the parent's pid. Either
    way a parent that died before this call is seen at once (this process has another parent already)."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    if not parent_death_signal():
        threading.Thread(target=watch_parent, args=(parent,), name="watch-parent", daemon=True).start()
    elif os.getppid() != parent:   # gone before the kernel was asked: no signal will come from it
        os.kill(os.getpid(), signal.SIGTERM)


def parent_death_signal() -> bool:
    """Ask the kernel for SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG); False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM)) == 0
    except (OSError, AttributeError):   # no prctl to call after all
        return False


def watch_parent(parent: int, every_s: float = 0.5) -> None:
    """Once this process's parent is no longer `parent` (it died: the process was given to another), SIGTERM it."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), signal.SIGTERM)


def hand_out(todo: list[int], argv: list[str], jobs: int, started: Callable[[int], None] = lambda i: None,
             ended: Callable[[int], None] = lambda i: None) -> tuple[dict, int]:
    """Train the runs at these plan indices in `jobs` workers; returns the outcome counts and the exit
    code of the first worker that stopped without answering (0 when none did). `started` and `ended` hear of
    each run as it goes out and as its answer comes back (eta.py's total ETA).

    A worker that stops early (a user mistake it met, a crash) gets no more runs and neither do the
    others: the command stops once their runs in progress end, as one process would have stopped.
    Ctrl-C or SIGTERM here reaches every worker; each unwinds (locks released, checkpoints kept)."""
    queue, counts, failure = deque((i, False) for i in todo), {}, 0   # (index, wait for another process's lock)
    workers = [start_worker(argv, worker_threads(jobs)) for _ in range(min(jobs, len(queue)))]
    selector = selectors.DefaultSelector()
    try:
        for worker in workers:
            selector.register(worker.stdout, selectors.EVENT_READ, worker)
            give_next(worker, queue, started)
        while selector.get_map():
            for key, _ in selector.select():
                worker, answer = key.data, key.fileobj.readline()
                if answer:
                    index, outcome = answer.split()[:2]
                    if outcome == HELD:   # another process trains it: handed out again after the rest, to wait for
                        queue.append((int(index), True))
                    else:
                        counts[outcome] = counts.get(outcome, 0) + 1
                        ended(int(index))
                    give_next(worker, queue, started)
                    continue
                selector.unregister(key.fileobj)   # it ended: done, or stopped without answering
                if worker.wait() != 0 and not failure:
                    failure = worker.returncode
                    queue.clear()
        return counts, failure
    except KeyboardInterrupt:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        raise
    finally:
        for worker in workers:
            worker.wait()
        selector.close()


def give_next(worker: subprocess.Popen, queue: deque, started: Callable[[int], None]) -> None:
    """The next run for this worker; when none are left, end of input ends the worker."""
    if worker.stdin.closed:
        return
    if queue:
        index, wait = queue.popleft()
        worker.stdin.write(f"{index} {WAIT}\n" if wait else f"{index}\n")
        worker.stdin.flush()
        started(index)
    else:
        worker.stdin.close()


def serve(train_one) -> None:
    """Worker mode: train each run whose plan index arrives on stdin ('<index> wait': once another process that
    holds it lets it go); answer '<index> <outcome>' on stdout.

    Anything else the run prints goes to stderr, so stdout carries only the answers."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in iter(sys.stdin.readline, ""):   # one line at a time, as each arrives
        index, *wait = line.split()
        outcome = train_one(int(index), wait == [WAIT])
        try:
            print(f"{index} {outcome}", file=answers, flush=True)
        except BrokenPipeError:   # the parent is gone (killed): the run is recorded; stop here
            return
