"""Checks of a run's data: its scale and batch, memory, unreadable files. Each user mistake about data
is a DataError with one line that names it and what to do."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ..config import ScaleConfig
from ..errors import UserError
from ..fields import check_fields

if TYPE_CHECKING:
    from .sources import Split


class DataError(UserError):
    """A user mistake about data (missing files, bad folders, sizes): one line, exit 2."""


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """Each warning once per process: a roadmap serves the same dataset to every step."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr)


def check_scale(scale: ScaleConfig) -> None:
    """A scale built in code (evaluate, predict, tests) meets the same field checks as one read from a file."""
    check_fields(scale, "scale")


def check_batch(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be at least 1")
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside world size {world_size}")


def check_batch_fits(batch_size: int, world_size: int, train_size: int) -> None:
    if batch_size * world_size > train_size:
        raise DataError(f"batch size {batch_size} x {world_size} ranks exceeds the {train_size} training images; "
                        f"lower scale.batch_size/micro_batch or use more data")


# Data no run could hold is refused before any of it is allocated. Compared with the machine's physical
# memory, not with what is free now (that moves with the page cache).
def check_held_in_memory(images: int, size: int) -> None:
    """In memory, the decoded set is images x 3 x size^2 bytes, held twice: as decoded (or made), and as the
    run's tensors."""
    refuse_beyond_memory(2 * images * 3 * size * size, f"{images} images held in memory", size)


def check_streamed_batch(batch_size: int, size: int) -> None:
    """Streaming, a batch is batch x 3 x size^2 float32."""
    refuse_beyond_memory(batch_size * 3 * size * size * 4, f"a streamed batch of {batch_size}", size)


def refuse_beyond_memory(need: int, what: str, size: int, remedy: str = "lower scale.image_size") -> None:
    have = physical_memory()
    if have is not None and need > have:
        raise DataError(f"{size} px images need {need / 2**30:,.0f} GiB for {what}, more than this machine's "
                        f"{have / 2**30:,.0f} GiB; {remedy}")


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")   # v2, v1


def physical_memory() -> int | None:
    """Bytes of RAM this process may use: the machine's, or its container's (cgroup) limit where lower; None
    where the system does not say."""
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for path in CGROUP_LIMITS:
        try:
            limit = open(path).read().strip()
        except OSError:
            continue
        if limit.isdigit():   # 'max': no limit
            have = min(have, int(limit))
    return have


def report_unreadable(split: Split, strict: bool, rank: int) -> None:
    """Files of a split that are not images or cannot be decoded: refused when strict, else one warning."""
    if not split.skipped:
        return
    if strict:
        raise DataError(f"unreadable file {split.skipped[0]}; remove it or set data.strict=false to skip such files")
    if rank == 0:
        warn(f"skipped {len(split.skipped)} unreadable files in {split.where} (first: {split.skipped[0]})")


def check_no_class_lost(before: Split, after: Split) -> None:
    """Dropping unreadable files must not leave a class of the split without images."""
    lost = sorted(set(before.targets.tolist()) - set(after.targets.tolist()))
    if lost:
        raise DataError(f"{after.where}: {len(lost)} class folders have no readable images (first: class "
                        f"index {lost[0]}); replace the broken files")
