"""`--model M` of the toolkit commands: a registry key, or a local checkpoint folder of a known family.

A folder becomes a `ModelEntry` (the registry's own record) whose id is the folder, so it loads through the
production loader (`models.loading.load_model`) exactly as a registered checkpoint does; no second code path.
Each family recognises its own folders from the files its library writes (`Family.folder_fields`: diffusers'
model_index.json, open_clip_config.json, a transformers config.json's model_type) and reads widths, depths and
context lengths from them, so the entry says what the checkpoint is.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from visual_words.registry import ModelEntry, model, models


def resolve_model(spec: str, root: str | Path | None = None) -> ModelEntry:
    """A registry key, or a folder holding a diffusers SD pipeline, an open_clip or an HF OWL/CLIP checkpoint.
    A folder that is a registered local checkpoint (e.g. artifacts/tiny/tiny-sd) resolves to its registry entry."""
    if spec in models():
        return model(spec)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ValueError(f"--model `{spec}`: neither a registry key ({', '.join(models())}) nor a model folder")
    path = path.resolve()
    from visual_words.models.location import local_path

    for entry in models().values():
        registered = local_path(entry, root)
        if registered is not None and registered.resolve() == path:
            return entry
    return entry_for_folder(path)


def folder_key(path: Path) -> str:
    """A filename-safe key for a folder model (it names cached map files): its name + a hash of the full path."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-") or "model"
    return f"dir-{slug}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def entry_for_folder(path: str | Path) -> ModelEntry:
    """The registry entry of a checkpoint folder: the first family that recognises its files describes it."""
    from visual_words.models.families import families

    path = Path(path).resolve()
    for fam in families().values():
        fields = fam.folder_fields(path)
        if fields is not None:
            # A folder model's role only labels it (its family's task): loading and the adapters go by the family.
            return ModelEntry(key=folder_key(path), role=fam.task, family=fam.name, library=fam.library,
                              revision="local", **{k: (int(v) if k not in ("id", "prediction_type") else v)
                                                   for k, v in fields.items()})
    from visual_words.models.families import read_json

    markers = "; ".join(f.folder_marker for f in families().values() if f.folder_marker)
    seen = (f"config.json has model_type {read_json(path / 'config.json').get('model_type')!r}; "
            if (path / "config.json").is_file() else "")
    raise ValueError(f"{path}: {seen}not a model folder the toolkit knows (looked for: {markers})")
