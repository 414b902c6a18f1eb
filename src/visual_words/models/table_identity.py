"""The identity of a model's token table: one rule for every check that asks "was this made in that model?".

The identity is a hash of the input-embedding table **as the checkpoint stores it**, read straight from the weights
file — never of the live parameter. Training loads the frozen weights at fp16/bf16 on a GPU, analysis loads them at
fp32 on a CPU; both are the same checkpoint and must agree, and a table rounded to a compute precision cannot be
un-rounded. So train sidecars, maps, evaluation, analysis, t-SNE and the toolkit all compare this one value (it is
what sidecars record as `token_table_hash` and map sidecars as `src_table_hash` / `dst_table_hash`).

The value is `embeddings.table_hash` of the stored tensor widened to fp32, so for a checkpoint stored in fp32 it equals
the hash of the table loaded at fp32. A sharded checkpoint is followed through its `*.index.json`; a pickled one is
read with `weights_only=True`.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch

# In every family's checkpoint the input-embedding table is the one tensor whose name ends in TABLE_SUFFIX
# (`text_model.embeddings.token_embedding.weight`, `owlv2.text_model.…`, open_clip's `token_embedding.weight`, a
# single-file SD-2 checkpoint's `cond_stage_model.model.token_embedding.weight`); the family says which folder and
# weight files hold it (`Family.table_folder` / `table_files`).
TABLE_SUFFIX = "token_embedding.weight"


class TableIdentityError(ValueError):
    """The stored token table could not be found (the CLI prints it as one line)."""


def identity_of_stored_table(family: str, checkpoint: str, revision: str | None = None,
                             single_file: str | os.PathLike | None = None) -> str:
    """The identity of the token table stored in `checkpoint` (a local folder, or a hub repo id in the local cache at
    `revision`; `hf-hub:` / `local-dir:` prefixes allowed), or in an all-in-one `single_file` checkpoint (the same
    table under another name, so both forms of one checkpoint have one identity)."""
    if single_file is not None:
        found = _table_in(Path(single_file))
        if found is None:
            raise TableIdentityError(f"{single_file}: no `*{TABLE_SUFFIX}` tensor (not a checkpoint with a text "
                                     "tower?)")
        return found[1]
    path, _ = stored_table_location(family, checkpoint, revision)
    return _table_in(path)[1]


def stored_table_location(family: str, checkpoint: str, revision: str | None = None) -> tuple[Path, str]:
    """(weights file, tensor name) that hold the stored token table of a checkpoint."""
    from visual_words.models.families import families

    known = families()
    if family not in known or not known[family].table_files:
        raise TableIdentityError(f"no token-table location known for model family `{family}` "
                                 f"(known: {', '.join(f for f, v in known.items() if v.table_files)})")
    subfolder, files = known[family].table_folder, known[family].table_files
    for filename in files:
        found = _find(checkpoint, f"{subfolder}/{filename}" if subfolder else filename, revision)
        if found is None:
            continue
        if filename.endswith(".index.json"):
            weight_map = json.loads(found.read_text())["weight_map"]
            name = _table_name(weight_map, found)
            if name is None:
                continue
            shard = _find(checkpoint, f"{subfolder}/{weight_map[name]}" if subfolder else weight_map[name], revision)
            if shard is not None:
                return shard, name
            continue
        table = _table_in(found)
        if table is not None:
            return found, table[0]
    raise TableIdentityError(f"{checkpoint}: no stored token table found (looked for a `*{TABLE_SUFFIX}` tensor in "
                             f"{', '.join(files)}{' under ' + subfolder + '/' if subfolder else ''})")


def _table_name(names, where: Path) -> str | None:
    """The name of the token table among a checkpoint's tensor names (None when there is none)."""
    hits = sorted(n for n in names if n == TABLE_SUFFIX or n.endswith("." + TABLE_SUFFIX))
    if len(hits) > 1:
        raise TableIdentityError(f"{where}: several tensors named `*{TABLE_SUFFIX}` ({', '.join(hits)}); which is "
                                 "the text tower's table is ambiguous")
    return hits[0] if hits else None


def _find(checkpoint: str, filename: str, revision: str | None) -> Path | None:
    for prefix in ("hf-hub:", "local-dir:"):
        if checkpoint.startswith(prefix):
            checkpoint = checkpoint[len(prefix):]
    folder = Path(checkpoint)
    if folder.is_dir():
        path = folder / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(checkpoint, filename, revision=revision)
    return Path(hit) if isinstance(hit, str) else None


def _table_in(path: Path) -> tuple[str, str] | None:
    """(tensor name, identity) of the token table a weights file holds, or None: each version of a file is read
    once (a pickle is one full load), however often loaders and checks ask."""
    st = os.stat(path)
    return _read_table(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_table(path: str, size: int, mtime_ns: int) -> tuple[str, str] | None:
    # size and mtime are part of the cache key only, so a file replaced in place is read again.
    from visual_words.embeddings import table_hash

    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            name = _table_name(f.keys(), Path(path))
            return None if name is None else (name, table_hash(f.get_tensor(name).to(torch.float32)))
    weights = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    name = _table_name(weights, Path(path))
    return None if name is None else (name, table_hash(weights[name].to(torch.float32)))
