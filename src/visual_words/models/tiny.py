"""Tiny random-weight checkpoints of the real architectures, saved in each library's own on-disk layout.

They use the real 49,408-token CLIP vocabulary, so tokenization, anchors and token tables behave like the real
models; only widths, depths and image sizes shrink (sizes come from the `tiny:` block in registry/models.yaml).
`loading.load_model` reads them back through the same `from_pretrained` / `create_model` path as a hub id.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from visual_words.models.families import family_of
from visual_words.registry import ModelEntry

MARKER = "tiny-model.json"  # written last: a folder without it is an interrupted build and is rebuilt


def build_tiny(entry: ModelEntry, out_dir: str | os.PathLike) -> Path:
    """Build a tiny random-weight checkpoint (seeded, so every machine builds the same weights) and save it."""
    if entry.tiny is None:
        raise ValueError(f"model `{entry.key}` has no `tiny:` block in registry/models.yaml; it is not a tiny model")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temp folder and rename, so a killed build never leaves a half checkpoint behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.manual_seed(int(entry.tiny.get("seed", 0)))
        family_of(entry).build_tiny(entry, tmp)
        (tmp / MARKER).write_text(json.dumps({"registry_key": entry.key, "family": entry.family,
                                              "tiny": entry.tiny, "text_width": entry.text_width}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_tiny(entry: ModelEntry, root: str | os.PathLike | None = None) -> Path:
    """Build the tiny checkpoint unless a complete one (with its marker, same sizes) is already there."""
    from filelock import FileLock

    from visual_words.models.location import local_path

    path = local_path(entry, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # parallel workers: one builds, the others wait and reuse
        marker = path / MARKER
        if marker.exists():
            info = json.loads(marker.read_text())
            if info.get("tiny") == entry.tiny and info.get("text_width") == entry.text_width:
                return path
        return build_tiny(entry, path)
