"""Trial-batch checkpoints: everything a batch needs to continue exactly where it stopped.

A checkpoint holds the learned vectors, the Adam state, every trial's random-generator state, the step and the
curves so far, so a resumed run equals an uninterrupted one. Its file name is a hash of what defines the batch
(trial ids, model, token table, train settings, the trials' data): a change starts afresh instead of resuming
stale state.
Written atomically; read with `torch.load(weights_only=True)` (tensors and plain data only).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from visual_words.io import atomic_path

CHECKPOINT_DIR = ".checkpoints"
# Settings that do not change the numbers a batch produces, so changing them keeps its checkpoint valid.
_NEUTRAL = {"log_every", "checkpoint_every", "out_dir", "trials_per_batch", "trials_per_batch_by_task", "compile",
            "compile_mode", "attention", "channels_last"}


def batch_key(trial_ids: list[str], model_key: str, table_hash: str, train_settings: dict[str, Any],
              data_digests: list[str]) -> str:
    settings = {k: v for k, v in train_settings.items() if k not in _NEUTRAL}
    blob = json.dumps({"trials": trial_ids, "model": model_key, "table": table_hash, "train": settings,
                       "data": data_digests}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


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
