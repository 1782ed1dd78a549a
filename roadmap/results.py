"""One JSON record per run (step x roadmap x scale x data x seed); atomic files; run locks; reading.

Layout:  <results>/<roadmap>/<scale>/<data>/<step>/seed<k>.json   the record (written once, at the end)
                                                  seed<k>.csv    per-epoch log (rewritten each epoch)
                                                  seed<k>.yaml   the resolved config
                                                  seed<k>.lock   flocked while a process trains the run
         <checkpoints>/<same path>/seed<k>.pt                    last epoch's state, for resume
         <weights>/<same path>/seed<k>.safetensors               a complete run's final weights, kept
                                                                 (seed<k>.pt before: the record names its file)
         <results>/tensorboard/<same path>/seed<k>/              TensorBoard event files (train.log=tensorboard)

Every part of those paths is a plain name (path_part), so every file a run writes stays inside its folder;
checkpoints and weights, which share their relative paths, never share a folder (check_apart).

A record is a `Record`, checked by the validator the configs use (fields.py) both when the run writes it and when
a reader loads it. Its `status` is `complete`, `failed` (crash; `reason`) or `diverged` (NaN/inf loss;
`divergence` holds epoch, step and the last finite loss). Records are never half-written: every
file goes to a temporary name, is fsynced, then renamed over the target.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import sys
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout

from .errors import ConfigError, UserError
from .fields import check_fields, set_fields

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent   # the checkout: runner.py, data/, results/
UMASK = os.umask(0o022)   # read once (it can only be read by setting it), then put back
os.umask(UMASK)
Status = Literal["complete", "failed", "diverged"]
STATUSES: tuple[str, ...] = typing.get_args(Status)
COMPLETE, FAILED, DIVERGED = STATUSES   # by name, for the code that compares them
FINISHED = (COMPLETE, DIVERGED)   # need no more training: a diverged run would diverge again


class ResultsError(UserError):
    """The results folder cannot be used (unwritable, or a run is locked by another process)."""


PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")


def path_part(name: str, what: str, hint: str = "") -> str:
    """`name` if it can be one part of a path, else ConfigError: the one place a name or an id (roadmap, scale,
    step, data slug) becomes a folder or file name. A plain name stays inside the folder it is joined to: no
    separator, no '..', no absolute path, no '.' that is the folder itself."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{what} {name!r} is not a plain name (letters, digits, '.', '_' and '-', not '.' or "
                          f"'..'): it becomes a folder or file name{hint}")
    return name


@dataclass(frozen=True)
class RunKey:
    """One run, and where its files are: every name in it is checked (path_part) as it is made."""
    roadmap: str
    scale: str
    data: str
    step: str
    seed: int

    def __post_init__(self):
        for what, name in (("roadmap", self.roadmap), ("scale name", self.scale), ("data", data_slug(self.data)),
                           ("step id", self.step)):
            path_part(name, what)

    def folder(self, root: Path) -> Path:
        return Path(root) / self.roadmap / self.scale / data_slug(self.data) / self.step

    def record_path(self, root: Path) -> Path:
        return self.folder(root) / f"seed{self.seed}.json"

    def log_path(self, root: Path) -> Path:
        return self.folder(root) / f"seed{self.seed}.csv"

    def config_path(self, root: Path) -> Path:
        return self.folder(root) / f"seed{self.seed}.yaml"

    def lock_path(self, root: Path) -> Path:
        return self.folder(root) / f"seed{self.seed}.lock"

    def checkpoint_path(self, checkpoint_root: Path) -> Path:
        return self.folder(checkpoint_root) / f"seed{self.seed}.pt"

    def tensorboard_dir(self, tensorboard_root: Path) -> Path:
        """A folder: TensorBoard writes one event file per session of the run."""
        return self.folder(tensorboard_root) / f"seed{self.seed}"

    def weights_path(self, weights_root: Path = Path()) -> Path:
        """Without a root: the path relative to any weights folder, as the record names it."""
        return self.folder(weights_root) / f"seed{self.seed}.safetensors"

    def files(self, results: Path, checkpoints: Path, weights: Path) -> list[Path]:
        """Every file the run writes (TensorBoard's aside: a folder of its own)."""
        return [self.lock_path(results), self.config_path(results), self.log_path(results), self.record_path(results),
                self.checkpoint_path(checkpoints), self.weights_path(weights)]


def data_slug(spec: str) -> str:
    """A folder name for a data spec: 'imagefolder:/data/imagenet' -> 'imagefolder-imagenet'."""
    kind, _, path = spec.partition(":")
    name = f"{kind}-{Path(path.rstrip('/')).name}" if path else kind
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def default_weights(results: Path) -> Path:
    """Complete runs' final weights live inside their results folder (git-ignored) unless --weights says otherwise."""
    return Path(results) / "weights"


def default_tensorboard(results: Path) -> Path:
    """TensorBoard event files (train.log=tensorboard) live inside their results folder, like checkpoints."""
    return Path(results) / "tensorboard"


def default_checkpoints(results: Path) -> Path:
    """Checkpoints live inside their results folder unless --checkpoints says otherwise: a fresh
    results folder never meets another folder's checkpoints."""
    return Path(results) / "checkpoints"


def check_apart(checkpoints: Path, weights: Path) -> None:
    """A run's checkpoint and its kept weights have one relative path (seed<k>.pt): in one folder they would be
    one file, and the checkpoint clean-up would delete the weights the record names. Refused before any work."""
    if Path(checkpoints).resolve() == Path(weights).resolve():
        raise ResultsError(f"--checkpoints and --weights are one folder ({checkpoints}): a run's checkpoint and its "
                           f"kept weights would be one file (seed<k>.pt); give them separate folders")


# ---------------------------------------------------------------------------- atomic files
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync it, rename it over `path`. A file that cannot be written
    (a full disk, a read-only, immutable or vanished folder) is a ResultsError naming it and the cause, and nothing
    is left half-written: a run stops in one line, and the same command resumes it once the cause is gone.

    The file is readable by the team (0644 under the usual umask; mkstemp alone would give 0600)."""
    try:
        write_and_rename(Path(path), data)
    except OSError as err:
        raise ResultsError(f"cannot write {path} ({err.strerror or type(err).__name__})") from None


def write_and_rename(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text_bytes(text))


def text_bytes(text: str) -> bytes:
    return printable(text).encode()


def printable(text: str) -> str:
    """`text` with a file or folder name that is not UTF-8 (Python holds its bytes as surrogates, which no file
    encoding or font takes) spelt as '\\udcXX' escapes."""
    return text.encode(errors="backslashreplace").decode()


def write_output(path: Path, data: bytes, option: str) -> Path:
    """atomic_write_bytes to a path the user named with `option`: one that cannot be written is one line."""
    try:
        atomic_write_bytes(path, data)
    except ResultsError as err:
        raise ResultsError(f"{err}; pick another {option}") from None
    return Path(path)


# A list of integers as json.dumps(indent=1) lays it out, an item a line: a record writes it on one line, so a
# confusion matrix is a row a line (and model.depths one line).
INT_LIST = re.compile(r"\[\n\s*(-?\d+(?:,\n\s*-?\d+)*)\n\s*\]")


def write_record(root: Path, key: RunKey, record: dict) -> Path:
    assert record["status"] in STATUSES, record["status"]
    path = key.record_path(root)
    text = INT_LIST.sub(lambda m: "[" + ", ".join(m[1].replace(",", " ").split()) + "]",
                        json.dumps(record, indent=1, sort_keys=True))
    atomic_write_text(path, text + "\n")
    return path


# ---------------------------------------------------------------------------- the record
def measured(default=None):
    """A field of complete runs only: a failed or diverged record has no such key."""
    return dataclasses.field(default=default, metadata={"complete_only": True})


@dataclass
class Record:
    """One run's result, as its JSON file holds it (sorted keys; a reader gets the dict). Every field but the
    run's name may be absent from a record written by an earlier runner (or by hand), hence None defaults."""
    # Which run: a record without one of these is damaged.
    schema: int
    status: Status
    roadmap: str
    scale: str
    data: str
    step: str
    seed: int
    # The step, its resolved config and recipe, and the code and command that ran it.
    order: int | None = None
    title: str | None = None
    adopted: bool | None = None
    base: str | None = None
    paper: dict | None = None
    config: dict | None = None
    recipe: dict | None = None
    command: str | None = None
    torch: str | None = None
    timm: str | None = None
    python: str | None = None
    git_commit: str | None = None
    # The outcome.
    reason: str | None = None            # failed: the exception, one line
    divergence: dict | None = None       # diverged: epoch, step (update) and the last finite loss
    top1: float | None = None            # %, at the last evaluation
    top5: float | None = None
    epochs: list | None = None           # one dict of stats per epoch (none for a crash)
    wall_s: float | None = None
    # What a complete run measured and where it ran.
    params: float | None = measured()
    gflops: float | None = measured()
    image_size: int | None = measured()
    num_classes: int | None = measured()   # num_classes .. data_fingerprint: Source.identity()
    train_images: int | None = measured()
    eval_images: int | None = measured()
    data_fingerprint: str | None = measured()
    images_per_s: float | None = measured()
    data_time_share: float | None = measured()
    input_bound: bool | None = measured()
    peak_mem_mb: float | None = measured()
    device: str | None = measured()
    world_size: int | None = measured()
    micro_batch: int | None = measured()
    accum_steps: int | None = measured()
    amp: str | None = measured()
    channels_last: bool | None = measured()
    threads: int | None = measured()
    compile: bool | None = measured()
    flush_denormal: bool | None = measured()
    started: str | None = measured()      # UTC, ISO 8601: the run's first session
    finished: str | None = measured()
    classes: list | None = measured()
    confusion: list | None = measured()   # perclass.record_confusion
    init_from: dict | None = measured()   # fine-tuning: where the starting weights came from
    weights: str | None = measured()      # the kept weights' path under a weights folder (weights.keep_weights)
    weights_sha256: str | None = measured()

    @property
    def key(self) -> RunKey:
        return RunKey(self.roadmap, self.scale, self.data, self.step, self.seed)

    def to_json(self) -> dict:
        """The record as its file holds it: a failed or diverged run's has no measured keys."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if self.status == COMPLETE or not f.metadata.get("complete_only")}

    def write(self, root: Path) -> Path:
        """Checked (as a config is), then written atomically at its run's place under `root`."""
        check_fields(self, "record", text_numbers=False)
        return write_record(root, self.key, self.to_json())

    @classmethod
    def from_json(cls, values: dict) -> "Record":
        """A record read from its file, checked field by field; ConfigError says the first problem. Keys this
        runner does not know are left alone (a later runner's), not called damage."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        required = [name for name, f in known.items() if f.default is dataclasses.MISSING]
        for name in required:
            if name not in values:
                raise ConfigError(f"no {name}")
        record = cls(**{name: values[name] for name in required})
        return set_fields(record, {k: v for k, v in values.items() if k in known}, "record", text_numbers=False)


_WARNED: set[Path] = set()


def read_record(path: Path) -> dict | None:
    """The record at `path` if it is usable, else None: absent, or damaged (one warning naming the file).

    The one judge of a record: `run` redoes a run whose record is not usable, `table` leaves it out."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes().decode())
    except (FileNotFoundError, NotADirectoryError):   # no such file, or a file stands where a folder belongs
        return None
    except OSError as err:
        return _damaged(path, err.strerror or type(err).__name__)
    except UnicodeDecodeError:
        return _damaged(path, "not UTF-8 text")
    except json.JSONDecodeError as err:
        return _damaged(path, f"not JSON: {err.msg} at line {err.lineno}")
    except RecursionError:   # '[[[[...' deep enough to exhaust the parser's stack
        return _damaged(path, "nested too deeply to read")
    problem = record_problem(record, path)
    return _damaged(path, problem) if problem else record


def record_problem(record, path: Path) -> str | None:
    """Why `record` cannot be used, or None: not an object, another schema, missing or mistyped fields, or
    a run other than the one its path names."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if record.get("schema") != SCHEMA_VERSION:
        return f"schema {record.get('schema')!r}, not {SCHEMA_VERSION}: written by another version of the runner"
    try:
        checked = Record.from_json(record)
        if checked.status == COMPLETE and checked.top1 is None:
            return "complete without a top-1"
        key = checked.key
    except ConfigError as err:
        return str(err)
    if Path(path).parts[-5:] != key.record_path(Path()).parts:   # counted twice, or under the wrong step
        return f"it holds {key.step} seed {key.seed} of {key.roadmap}/{key.scale}/{key.data}, another run than its path"
    return None


def _damaged(path: Path, problem: str) -> None:
    warn_damaged(path, problem, "`run` redoes its run, `table` leaves it out")
    return None


def warn_damaged(path: Path, problem: str, consequence: str) -> None:
    """One warning per damaged file and process (a runner asks about a run more than once)."""
    if path not in _WARNED:
        _WARNED.add(path)
        print(f"warning: {path} is damaged ({problem}); {consequence}", file=sys.stderr)


def record_scale(record: dict) -> dict:
    """The scale config a record's run was trained with ({} where the record holds none)."""
    return (record.get("config") or {}).get("scale") or {}


def finished_status(root: Path, key: RunKey) -> str | None:
    """'complete' or 'diverged' when the run needs no more training (a diverged run would diverge
    again); None when it has no usable record or failed (a crash may be transient: retry it)."""
    return record_status(read_record(key.record_path(root)))


def record_status(record: dict | None) -> str | None:
    """A read record's finished status, as finished_status gives it."""
    status = record["status"] if record else None
    return status if status in FINISHED else None


def load_records(root: Path, roadmap: str | None = None, scale: str | None = None,
                 data: str | None = None) -> list[dict]:
    """Every usable record under `root`, optionally filtered; sorted for stable output."""
    records = []
    for path in sorted(Path(root).glob("*/*/*/*/seed*.json")):
        record = read_record(path)
        if record is None:
            continue
        if roadmap and record["roadmap"] != roadmap or scale and record["scale"] != scale:
            continue
        if data and data_slug(record["data"]) != data_slug(data):
            continue
        records.append(record)
    return records


def check_writable(root: Path, option: str = "--results") -> None:
    """Fail early, before any training or writing, if `root` (given by `option`) cannot be written."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as err:
        raise ResultsError(f"folder '{root}' cannot be written ({err.strerror or type(err).__name__}); "
                           f"pass another {option}") from None


def check_can_write(paths: list[Path]) -> None:
    """Every one of `paths` can be written as atomic_write_bytes writes it (a new file in its folder, renamed over
    it), checked before anything is trained: the first that cannot is a ResultsError that names it and why (a
    read-only or immutable folder or file, a folder where the file goes)."""
    folders = {}
    for path in map(Path, paths):
        problem = replace_problem(path)
        if problem:
            raise ResultsError(f"cannot write {path} ({problem}); make it writable or write elsewhere")
        folder = next(p for p in path.parents if p.is_dir())   # the nearest that exists: it takes the new folders
        folders.setdefault(folder, path)
    for folder, path in folders.items():
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
                pass
        except OSError as err:
            raise ResultsError(f"cannot write {path}: its folder {folder} takes no file "
                               f"({err.strerror or type(err).__name__}); make it writable or write elsewhere") from None


def replace_problem(path: Path) -> str | None:
    """Why no file can be renamed over `path`, or None (nothing there, a link, a plain file that may be replaced).
    Opened for writing without writing: refused for an immutable or append-only file and on a read-only filesystem,
    which a rename over it would be too (permission bits alone would not stop a rename)."""
    if path.is_symlink() or not path.exists():
        return None
    if path.is_dir():
        return "a folder stands there"
    try:
        with open(path, "r+b"):
            return None
    except OSError as err:
        return err.strerror if err.errno in (errno.EPERM, errno.EROFS) else None


def leads_out(folder: Path, root: Path) -> bool:
    """Whether `folder` is not inside `root`, links followed: a link planted inside a shared
    results folder would otherwise carry a run's files anywhere."""
    try:
        return not folder.resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):   # a loop of links leads nowhere inside
        return True


def blocking_file(folder: Path) -> Path | None:
    """What stands, not a folder, where `folder` or one of its parents must be (a file, a dangling link), or None."""
    for part in (Path(folder), *Path(folder).parents):
        if part.is_dir():
            return None
        if part.exists() or part.is_symlink():
            return part
    return None


# ---------------------------------------------------------------------------- run locks
class RunLock:
    """An exclusive lock on one run: an flock on seed<k>.lock, through filelock.

    The kernel drops an flock when its holder dies, however it dies (kill -9, OOM), and a new process
    that gets a dead one's pid holds nothing: no run is left stuck. The file stays after release (an
    unlinked lock file would let two processes lock two files under one name); only its flock counts.

    No heartbeat: where a shared filesystem's flock spans hosts (NFS unless mounted nolock or local_lock;
    Lustre mounted with -o flock), the server holds the lock and frees a dead node's when the node's lease
    runs out (NFSv4: 90 s by default), so a requeued job finds the run free. Where flock is local to each
    host (those mounts, Lustre localflock), runners on two nodes do not see each other's locks, heartbeat
    or not. Where the filesystem has no flock, filelock falls back to its SoftFileLock, whose file a dead
    node leaves behind: the refusal names the file, to delete once no process trains the run."""

    def __init__(self, root: Path, key: RunKey):
        self.path = key.lock_path(root)
        self.key = key
        self._lock = FileLock(self.path, timeout=0)   # one attempt: a second runner stops at once, never waits

    def check(self) -> None:
        """The lock file is opened where it stands: a link there would be followed to whatever it points to, and a
        folder cannot be locked. Either is refused, before anything is written (run_command checks every run)."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            what = "a symbolic link" if self.path.is_symlink() else "not a plain file"
            raise ResultsError(f"lock file {self.path} is {what}; delete it (the runner creates its lock files "
                               f"itself, as plain empty files)")

    def acquire(self) -> None:
        if not self.try_acquire():
            raise ResultsError(f"run {self.key.step} seed {self.key.seed} is being trained by another process "
                               f"(it locks {self.path}); wait for it or pick other steps")

    def try_acquire(self, wait: bool = False) -> bool:
        """Take the lock; False where another process holds it, unless `wait`: then once that process lets it go
        (it finishes the run, or ends). A lock file that cannot be made (a full disk, a read-only folder) is one
        line that names it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.check()
            self._lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return False
        except OSError as err:
            raise ResultsError(f"cannot lock {self.path} ({err.strerror or type(err).__name__})") from None
        return True

    def release(self) -> None:
        self._lock.release()   # nothing to do where this process never took it (ranks other than 0)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def lock_is_held(path: Path) -> bool:
    """Whether some process holds the lock file at `path` now: one attempt to take it, let go at once."""
    if not Path(path).exists():   # never locked here (or another node's local folder): nothing is created
        return False
    try:
        with FileLock(path, timeout=0):
            return False
    except Timeout:
        return True
