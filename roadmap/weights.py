"""Kept weights: a complete run's final state_dict.

A complete run writes <weights>/<roadmap>/<scale>/<data>/<step>/seed<k>.pt, a plain state_dict
(torch.save; read back with weights_only=True, so no pickled code runs), and its record names that
file and its sha256.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from torch import nn

from .results import RunKey, atomic_write_bytes


# ---------------------------------------------------------------------------- keeping
def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({name: t.detach().cpu().contiguous() for name, t in state.items()}, buffer)  # channels_last -> plain
    return buffer.getvalue()


def keep_weights(root: Path, key: RunKey, model: nn.Module) -> dict:
    """Write a run's final weights atomically; returns the record's keys that name them."""
    data = state_bytes(model.state_dict())
    atomic_write_bytes(key.weights_path(root), data)
    return {"weights": key.weights_path().as_posix(), "weights_sha256": hashlib.sha256(data).hexdigest()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_weights(record: dict, root: Path) -> str | None:
    """Why a complete run's weights cannot be used, or None when its file is there."""
    if not record.get("weights"):
        return "its record names no weights (it was trained before weights were kept)"
    path = Path(root) / record["weights"]
    return None if path.is_file() else f"its weights {path} are missing"
