"""Trained words: the one reader of a trial's embedding file and its sidecar, and the one list of a profile's files.

The train stage writes each trial's word to ``<train.out_dir>/<task>/<slug>.safetensors`` (trials.embedding_path)
with a JSON sidecar (embeddings.py: the format; the sidecar records the trial, the model it was trained in and that
model's token-table identity). Training (a finished trial read back), evaluation and the analysis all read words
through ``read_word``; the sweep and the trainer's "is it done?" read just the sidecar through ``read_sidecar``. The
stages that read a profile's words find them with ``grid_words``: the files of the profile's own trial grid and
nothing else. Any other embedding file in the folder (a word of another grid, a stray copy) is skipped and counted
in one printed line, so words of another run are never pooled into this one's results.

Layer: the foundations (beside trials.py and embeddings.py, the only modules of ours it imports, with io.py), so
train, evaluate and analysis, which all sit above, share it.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visual_words.embeddings import CONTENT_HASH, EmbeddingFileError, read_embedding, sidecar_path
from visual_words.io import sha256_file
from visual_words.trials import Trial, embedding_path, trial_grid

SIDECAR_NEEDS = ("trial", "token_table_hash")  # what a reader of trained words relies on


@dataclass
class TrainedWord:
    """One trained word as its file and sidecar record it."""

    path: Path
    trial: Trial  # as the sidecar records it (its root seed included)
    vectors: torch.Tensor  # [n, d] float32
    meta: dict[str, Any]  # the whole sidecar

    @property
    def model_key(self) -> str:
        """The registry key of the model the word was trained in."""
        return str(self.meta.get("model_key") or self.trial.model)

    @property
    def table_hash(self) -> str:
        """The identity of that model's token table when the word was trained (models/table_identity.py)."""
        return str(self.meta["token_table_hash"])

    @property
    def file_digest(self) -> str:
        """sha256 of the file's bytes: the sidecar's record (read_embedding has checked it against the bytes)."""
        return str(self.meta.get(CONTENT_HASH) or sha256_file(self.path))


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar of the trained word at ``path``, or None when the word or its sidecar is missing or the sidecar
    is not a JSON object (the word is then not finished: the sidecar is written last). Cheap: the vectors are not
    read, nor the bytes checked (``read_word`` does both)."""
    path = Path(path)
    side = sidecar_path(path)
    if not (path.is_file() and side.is_file()):
        return None
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def trial_from_dict(d: dict[str, Any]) -> Trial:
    """A Trial back from its sidecar form (``Trial.to_dict``: δ = "inf" when unconstrained)."""
    delta = d["delta"]
    return Trial(task=d["task"], model=d["model"], dataset=d["dataset"], concept=d["concept"], anchor=d["anchor"],
                 delta=math.inf if delta in ("inf", None) else float(delta), root_seed=int(d.get("root_seed", 0)))


def read_word(path: str | Path, expect: Trial | None = None) -> TrainedWord:
    """The trained word at ``path`` with its trial; one clear error naming the file for a file without our sidecar,
    a damaged file, a file holding several tokens, or (with ``expect``, the trial whose place the file is in) a
    sidecar that names another trial."""
    path = Path(path)
    emb = read_embedding(path)  # checks the bytes against the sidecar's content hash
    _, vectors = emb.single()
    meta = emb.meta
    missing = [k for k in SIDECAR_NEEDS if k not in meta]
    if missing:
        raise EmbeddingFileError(f"{path}: the sidecar lacks {', '.join(missing)}; only the train stage's embedding "
                                 "files (with their sidecars) are read here")
    try:
        trial = trial_from_dict(meta["trial"])
    except (KeyError, TypeError, ValueError) as e:
        raise EmbeddingFileError(f"{path}: sidecar `trial` is incomplete ({e})") from None
    if expect is not None and trial.id != expect.id:
        raise EmbeddingFileError(f"{path}: its sidecar names trial {trial.id}, but this is the file of trial "
                                 f"{expect.id}; retrain it (vw sweep) or remove the file")
    return TrainedWord(path, trial, vectors, meta)


@dataclass
class GridFiles:
    """Where the profile's trained words are: the grid's trials whose file exists, how many have none yet, and
    the embedding files in the folder that belong to no trial of the grid."""

    found: list[tuple[Trial, Path]]
    missing: int
    outside: list[Path]


def grid_files(cfg) -> GridFiles:
    """The files of `cfg`'s trial grid under ``train.out_dir``, and every other ``*.safetensors`` there."""
    found, missing, expected = [], 0, set()
    for trial in trial_grid(cfg):
        path = embedding_path(cfg, trial)
        expected.add(path)
        if path.is_file():
            found.append((trial, path))
        else:
            missing += 1
    root = cfg.path(cfg.train.out_dir)
    outside = sorted(p for p in root.rglob("*.safetensors") if p not in expected) if root.is_dir() else []
    return GridFiles(found, missing, outside)


def skip_line(cfg, stage: str, outside: list[Path]) -> str:
    """The one line a stage prints when it skips files that are not trials of its profile's grid."""
    n = len(outside)
    return (f"[{stage}] skipped {n} embedding file{'s' if n != 1 else ''} under {cfg.train.out_dir} outside "
            f"profile {cfg.profile}'s trial grid (e.g. {outside[0].name})")


def grid_words(cfg, stage: str) -> tuple[list[TrainedWord], int]:
    """(the trained words of `cfg`'s trial grid in grid order, how many of its trials have no file yet); the files
    outside the grid are skipped with one line on stderr saying how many."""
    files = grid_files(cfg)
    if files.outside:
        print(skip_line(cfg, stage, files.outside), file=sys.stderr, flush=True)
    return [read_word(path, trial) for trial, path in files.found], files.missing
