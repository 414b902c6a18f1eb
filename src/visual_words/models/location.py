"""Where a registered checkpoint is: the repo root relative folders are read against, the id a library's loader
is given, and the local folder of a local checkpoint (tiny models, a user's folder)."""

from __future__ import annotations

import os
from pathlib import Path

from visual_words.registry import LOCAL_PREFIX, ModelEntry


def repo_root() -> Path:
    """The folder relative checkpoint paths are resolved against (where params.yaml lives)."""
    from visual_words.config import ConfigError, find_params_file

    try:
        return find_params_file().parent
    except ConfigError:
        return Path.cwd()


def resolve_id(entry: ModelEntry, root: str | os.PathLike | None = None) -> str:
    """The string handed to the library loader: the hub id, or the local folder as an absolute path."""
    local = entry.local_dir
    if local is None:
        return entry.id
    path = local if local.is_absolute() else Path(root or repo_root()) / local
    return (LOCAL_PREFIX + str(path)) if entry.library == "open_clip" else str(path)


def local_path(entry: ModelEntry, root: str | os.PathLike | None = None) -> Path | None:
    ident = resolve_id(entry, root)
    if entry.local_dir is None:
        return None
    return Path(ident[len(LOCAL_PREFIX):] if ident.startswith(LOCAL_PREFIX) else ident)
