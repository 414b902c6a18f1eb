"""Trial-batch checkpoints: everything a batch needs to continue exactly where it stopped.

A checkpoint holds the learned vectors, the Adam state, every trial's random-generator state, the step and the
curves so far, so a resumed run equals an uninterrupted one. Its file name is `reuse.checkpoint_key`: the batch's
trial keys (settings, data, code versions), the token table and the tensors its losses read; a change starts
afresh instead of resuming stale state.
Written atomically; read with `torch.load(weights_only=True)` (tensors and plain data only).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from visual_words.io import atomic_path

CHECKPOINT_DIR = ".checkpoints"


def checkpoint_path(task_dir: Path, key: str) -> Path:
    return task_dir / CHECKPOINT_DIR / f"{key}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none. A damaged file is an error naming it (never silently ignored:
    delete it to start the batch afresh)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable trial-batch checkpoint ({str(e).splitlines()[0][:200]}); delete it "
                         "to restart this batch from step 0") from None
