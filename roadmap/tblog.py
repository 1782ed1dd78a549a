"""Optional TensorBoard logging of one run (`--set train.log=tensorboard`).

Rank 0 writes event files to <results>/tensorboard/<roadmap>/<scale>/<data>/<step>/seed<k>/
(RunKey.tensorboard_dir): per update `train/loss` and `train/lr`, per epoch `eval/top1`,
`eval/top5`, `eval/loss` (the epochs that evaluate), `train/images_per_s` and `train/epoch_s`.
Every scalar's step is the global update number, the per-epoch ones at their epoch's last update:
one x axis for all, and one number that says where a checkpoint stands. A resumed run appends a
new event file to the same folder, opened with purge_step = the first update it will train, so
TensorBoard hides whatever the interrupted session logged past the checkpoint instead of showing
those updates twice. The tensorboard package is optional: asking for it without it is one line.
"""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

INSTALL = "pip install 'roadmap[tensorboard]' (or pip install 'tensorboard>=2.10,<3')"
EPOCH_SCALARS = {"eval/top1": "eval_top1", "eval/top5": "eval_top5", "eval/loss": "eval_loss",
                 "train/images_per_s": "images_per_s", "train/epoch_s": "epoch_s"}   # tag: key of an epoch's stats


def check_available() -> None:
    """Raise ConfigError, one line that says how to install it, when TensorBoard cannot be written."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"train.log=tensorboard needs the tensorboard package ({err}); {INSTALL}") from None


class Board:
    """One run's event files; rank 0 alone opens one."""

    def __init__(self, folder: Path, first_update: int):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(folder), purge_step=first_update)

    def updates(self, first_update: int, losses: list[float], lrs: list[float]) -> None:
        """Per-update scalars, given where the loop reads its losses anyway (every SYNC_EVERY updates)."""
        for update, (loss, lr) in enumerate(zip(losses, lrs), first_update):
            self.writer.add_scalar("train/loss", loss, update)
            self.writer.add_scalar("train/lr", lr, update)

    def epoch(self, update: int, stats: dict) -> None:
        """Per-epoch scalars, then everything to disk: called before the epoch's checkpoint is written, so a
        checkpoint never stands past what its event files hold."""
        for tag, key in EPOCH_SCALARS.items():
            if key in stats:
                self.writer.add_scalar(tag, stats[key], update)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
