"""The Hugging Face cache as the loaders and the bake both see it: a registry entry's repo id, the cache folder, a
repo's folder in it, the commit a registry revision names there, and the config folder of a single-file checkpoint.

Layer: models. It imports the registry and nothing of the model families, so a family may read the cache layout
(the SD family's single-file loader does) without a circle through the bake (`lock.py` asks the families which
files their loaders read).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from visual_words.errors import UserError
from visual_words.registry import ModelEntry

HUB_PREFIX = "hf-hub:"  # open_clip's prefix for a hub repo
COMMIT_RE = re.compile(r"[0-9a-f]{40}")


class ModelLockError(UserError, ValueError):
    """The pinned weights are missing or differ from the lock (a ValueError: the CLI prints it as one error)."""


def hub_repo_id(entry: ModelEntry) -> str | None:
    """The hub repo of a registry entry (`hf-hub:` stripped); None for local checkpoints (tiny models, folders)."""
    if entry.is_local:
        return None
    return entry.id[len(HUB_PREFIX):] if entry.id.startswith(HUB_PREFIX) else entry.id


def hub_cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The hub cache: the given folder, else huggingface_hub's (HF_HUB_CACHE, else HF_HOME/hub)."""
    if cache is not None:
        return Path(cache)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_dir(cache: str | os.PathLike, repo_id: str) -> Path:
    """models--ORG--NAME inside the cache (huggingface_hub's naming)."""
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def resolve_commit(cache: str | os.PathLike, entry: ModelEntry) -> str:
    """The commit the registry revision names in the cache (refs/<revision>, or the revision itself)."""
    revision = entry.revision or "main"
    if COMMIT_RE.fullmatch(revision):
        return revision
    ref = repo_dir(cache, hub_repo_id(entry)) / "refs" / revision
    if not ref.is_file():
        raise ModelLockError(f"model `{entry.key}`: {hub_repo_id(entry)} @ {revision} is not in the hub cache "
                             f"{cache} (no {ref}); bake it first (HF_HUB_OFFLINE=0 vw bake-models)")
    return ref.read_text().strip()


def single_file_config(entry: ModelEntry, cache: str | os.PathLike | None = None) -> Path:
    """The diffusers config folder a single-file checkpoint loads with: `config:`, else the registry repo's snapshot
    (at its pinned commit) in the hub cache."""
    if entry.config:
        return Path(entry.config)
    repo_entry = replace(entry, single_file=None)
    try:
        commit = resolve_commit(hub_cache_dir(cache), repo_entry)
    except ModelLockError:
        commit = entry.revision or "main"  # not in the cache: the path names what is missing
    return repo_dir(hub_cache_dir(cache), hub_repo_id(repo_entry)) / "snapshots" / commit
