"""Pin the paper's real checkpoints: bake them into a Hugging Face cache, lock what was baked, check it at run time.

* **bake** (online, once: the image build with BAKE_MODELS=1, or `HF_HUB_OFFLINE=0 vw bake-models`): resolve each
  hub model's registry revision to a commit, download the files its loader reads with
  `huggingface_hub.snapshot_download`, point the cache's refs at that commit, and write the lock.
* **lock** (`models.lock.json`): model key → repo id, registry revision, resolved commit, file → sha256 and size.
  It is computed from the cache itself, so a cache filled by any means (a user's own downloads) can be locked too.
* **check** (offline, before every `paper` run): each hub model of the profile is in the lock, its snapshot is in
  the cache at the locked commit, the refs the loader follows point there, the files the loader would read are
  exactly the locked ones and every sha256 matches. Any difference is a `ModelLockError` naming the model, the file
  and what to do.

The cache layout is huggingface_hub's own (models--ORG--NAME/{blobs,refs,snapshots/<commit>}); loading then goes
through the unchanged production loader with HF_HUB_OFFLINE=1. This module imports only huggingface_hub, yaml and
the registry, so the image can bake before the rest of the project is copied in (a code change does not re-download
8 GB): `python -m visual_words.models.lock bake --cache DIR --lock FILE`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from visual_words.errors import UserError
from visual_words.io import write_json, write_text
from visual_words.registry import ModelEntry, model, models

LOCK_NAME = "models.lock.json"
LOCK_FORMAT = 1
LOCK_ENV = "VW_MODELS_LOCK"  # the image points this at the lock it carries
HUB_PREFIX = "hf-hub:"  # open_clip's prefix for a hub repo
COMMIT_RE = re.compile(r"[0-9a-f]{40}")

# What each family's loader reads from a hub repo (fnmatch patterns; `*` also matches `/`). Repos carry far more
# than that: SD-2.1 holds two 5 GB single-file checkpoints and every weight twice (.bin and .safetensors), the
# CLIP repos add TF and Flax copies. `files` are taken when present; of each `weights` group the first alternative
# present wins, in the loaders' own order of preference (safetensors before pickles, one file before shards).
BAKE_FILES: dict[str, dict[str, Any]] = {
    "stable-diffusion": {  # diffusers StableDiffusionPipeline (safety checker disabled)
        "files": ["model_index.json", "scheduler/*.json", "tokenizer/*", "feature_extractor/*.json",
                  "text_encoder/config.json", "unet/config.json", "vae/config.json"],
        "weights": {
            "text_encoder": [["text_encoder/model.safetensors"],
                             ["text_encoder/model.safetensors.index.json", "text_encoder/model-*-of-*.safetensors"],
                             ["text_encoder/pytorch_model.bin"]],
            "unet": [["unet/diffusion_pytorch_model.safetensors"],
                     ["unet/diffusion_pytorch_model.safetensors.index.json",
                      "unet/diffusion_pytorch_model-*-of-*.safetensors"],
                     ["unet/diffusion_pytorch_model.bin"]],
            "vae": [["vae/diffusion_pytorch_model.safetensors"], ["vae/diffusion_pytorch_model.bin"]],
        },
    },
    "owl-vit": {  # transformers Owlv2ForObjectDetection + AutoProcessor
        "files": ["config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
                  "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                  "added_tokens.json"],
        "weights": {"model": [["model.safetensors"], ["model.safetensors.index.json", "model-*-of-*.safetensors"],
                              ["pytorch_model.bin"]]},
    },
    "open-clip": {  # open_clip create_model_and_transforms("hf-hub:…") + get_tokenizer
        "files": ["open_clip_config.json"],
        "weights": {"model": [["open_clip_model.safetensors"], ["open_clip_pytorch_model.bin"]]},
    },
}
BAKE_FILES["hf-clip"] = BAKE_FILES["owl-vit"]  # transformers CLIPModel + CLIPProcessor read the same file set

# open_clip's hub loader takes no revision: it reads whatever refs/main names, so for this family refs/main must be
# the locked commit too. The other loaders are given the registry revision (loading.py).
LOADS_MAIN = {"open-clip"}


class ModelLockError(UserError, ValueError):
    """The pinned weights are missing or differ from the lock (a ValueError: the CLI prints it as one error)."""


# ---------------------------------------------------------------------------------------------------------------
# which models, which files, where


def hub_repo_id(entry: ModelEntry) -> str | None:
    """The hub repo of a registry entry (`hf-hub:` stripped); None for local checkpoints (tiny models, folders)."""
    if entry.is_local:
        return None
    return entry.id[len(HUB_PREFIX):] if entry.id.startswith(HUB_PREFIX) else entry.id


def hub_entries(keys: Iterable[str] | None = None) -> list[ModelEntry]:
    """Registry entries that live on a hub: the given keys (local ones dropped), or every hub model."""
    entries = [model(k) for k in keys] if keys is not None else list(models().values())
    return _unique_hub(entries)


def _unique_hub(entries: Iterable[ModelEntry]) -> list[ModelEntry]:
    by_key = {e.key: e for e in entries}  # a key may repeat (one checkpoint in two roles)
    return [e for e in by_key.values() if hub_repo_id(e) is not None]


def select_files(family: str, files: Iterable[str]) -> list[str]:
    """The files of a repo listing that `family`'s loader reads (see BAKE_FILES), sorted."""
    if family not in BAKE_FILES:
        raise ModelLockError(f"no bake file list for model family `{family}` (known: {', '.join(BAKE_FILES)})")
    spec, files = BAKE_FILES[family], sorted(set(files))
    chosen = {f for f in files if any(fnmatch.fnmatchcase(f, p) for p in spec["files"])}
    for group, alternatives in spec["weights"].items():
        for patterns in alternatives:
            hits = [f for f in files if any(fnmatch.fnmatchcase(f, p) for p in patterns)]
            if hits:
                chosen.update(hits)
                break
        else:
            raise ModelLockError(f"no `{group}` weights among the repo's files (looked for "
                                 f"{' or '.join(a[0] for a in alternatives)})")
    return sorted(chosen)


def hub_cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The hub cache: the given folder, else huggingface_hub's (HF_HUB_CACHE, else HF_HOME/hub)."""
    if cache is not None:
        return Path(cache)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_dir(cache: str | os.PathLike, repo_id: str) -> Path:
    """models--ORG--NAME inside the cache (huggingface_hub's naming)."""
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def default_lock_path(root: str | os.PathLike | None = None) -> Path:
    """$VW_MODELS_LOCK (the image sets it), else models.lock.json beside params.yaml (or in `root`)."""
    env = os.environ.get(LOCK_ENV)
    if env:
        return Path(env)
    if root is None:
        from visual_words.models.loading import repo_root

        root = repo_root()
    return Path(root) / LOCK_NAME


def required_refs(entry: ModelEntry) -> list[str]:
    """The refs/ names the loader follows offline for this entry (none when the revision is itself a commit)."""
    refs = [] if COMMIT_RE.fullmatch(entry.revision) else [entry.revision]
    if entry.family in LOADS_MAIN and "main" not in refs:
        refs.append("main")
    return refs


def sha256_file(path: Path, progress=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return h.hexdigest()


def _snapshot_listing(snapshot: Path) -> list[str]:
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False,
                disable=total < (64 << 20))


# ---------------------------------------------------------------------------------------------------------------
# bake: download + refs (online), then lock from the cache (offline)


def download(entry: ModelEntry, cache: str | os.PathLike) -> str:
    """Fetch what `entry`'s loader reads, at its registry revision, into the hub cache. Returns the commit."""
    from huggingface_hub import HfApi, constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise ModelLockError("baking downloads the weights from the hub: run it with HF_HUB_OFFLINE=0")
    repo_id = hub_repo_id(entry)
    info = HfApi().model_info(repo_id, revision=entry.revision)  # one resolution: revision -> commit + listing
    wanted = select_files(entry.family, (s.rfilename for s in info.siblings or []))
    print(f"[bake] {entry.key}: {repo_id} @ {entry.revision} = {info.sha} ({len(wanted)} files)", flush=True)
    snapshot_download(repo_id, revision=info.sha, allow_patterns=wanted, cache_dir=str(cache))
    pin_refs(cache, entry, info.sha)
    return info.sha


def pin_refs(cache: str | os.PathLike, entry: ModelEntry, commit: str) -> None:
    """Point the refs the loader follows offline at `commit` (snapshot_download of a commit writes none)."""
    for ref in required_refs(entry):
        write_text(repo_dir(cache, hub_repo_id(entry)) / "refs" / ref, commit)


def resolve_commit(cache: str | os.PathLike, entry: ModelEntry) -> str:
    """The commit the registry revision names in the cache (refs/<revision>, or the revision itself)."""
    if COMMIT_RE.fullmatch(entry.revision):
        return entry.revision
    ref = repo_dir(cache, hub_repo_id(entry)) / "refs" / entry.revision
    if not ref.is_file():
        raise ModelLockError(f"model `{entry.key}`: {hub_repo_id(entry)} @ {entry.revision} is not in the hub cache "
                             f"{cache} (no {ref}); bake it first (HF_HUB_OFFLINE=0 vw bake-models)")
    return ref.read_text().strip()


def lock_entry(entry: ModelEntry, cache: str | os.PathLike, commit: str | None = None) -> dict[str, Any]:
    """The lock record of one model, hashed from its snapshot in the cache."""
    repo_id = hub_repo_id(entry)
    commit = commit or resolve_commit(cache, entry)
    snapshot = repo_dir(cache, repo_id) / "snapshots" / commit
    if not snapshot.is_dir():
        raise ModelLockError(f"model `{entry.key}`: no snapshot {snapshot} in the hub cache")
    names = select_files(entry.family, _snapshot_listing(snapshot))
    sizes = {n: (snapshot / n).stat().st_size for n in names}
    with _progress(sum(sizes.values()), f"hash {entry.key}") as bar:
        files = {n: {"sha256": sha256_file(snapshot / n, bar), "size": sizes[n]} for n in names}
    return {"repo_id": repo_id, "family": entry.family, "revision": entry.revision, "commit": commit,
            "bytes": sum(sizes.values()), "files": files}


def lock_from_cache(entries: Iterable[ModelEntry], cache: str | os.PathLike | None = None,
                    commits: dict[str, str] | None = None) -> dict[str, Any]:
    """A lock for `entries` as they are in the cache now (commits: key -> commit, else the refs are followed)."""
    from huggingface_hub import __version__ as hub_version

    cache = hub_cache_dir(cache)
    return {
        "format": LOCK_FORMAT,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "huggingface_hub": hub_version,
        "models": {e.key: lock_entry(e, cache, (commits or {}).get(e.key)) for e in entries},
    }


def bake(keys: Iterable[str] | None = None, cache: str | os.PathLike | None = None,
         lock_path: str | os.PathLike | None = None, fetch: bool = True) -> dict[str, Any]:
    """Download (unless `fetch=False`) the hub models `keys` (default: all) and write their lock. Returns the lock."""
    entries = hub_entries(keys)
    if not entries:
        raise ModelLockError("nothing to bake: none of the given models lives on a hub")
    cache = hub_cache_dir(cache)
    commits = {e.key: download(e, cache) for e in entries} if fetch else None
    lock = lock_from_cache(entries, cache, commits)
    path = Path(lock_path) if lock_path else default_lock_path()
    write_json(path, lock)
    total = sum(m["bytes"] for m in lock["models"].values())
    print(f"[bake] locked {len(entries)} models ({total / 2**30:.2f} GiB) in {path}", flush=True)
    return lock


# ---------------------------------------------------------------------------------------------------------------
# check (offline, before a paper run)


def read_lock(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelLockError(
            f"no model lock at {path}: the paper profile runs only on pinned weights. In the container, build the "
            f"image with --build-arg BAKE_MODELS=1; elsewhere run `HF_HUB_OFFLINE=0 vw bake-models` once (it "
            f"downloads the weights into the Hugging Face cache and writes the lock). ${LOCK_ENV} points at another lock.")
    try:
        lock = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLockError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(lock, dict) or lock.get("format") != LOCK_FORMAT or not isinstance(lock.get("models"), dict):
        raise ModelLockError(f"{path}: not a model lock of format {LOCK_FORMAT}")
    return lock


def _problems(entry: ModelEntry, rec: dict[str, Any], cache: Path, hashes: bool) -> list[str]:
    """Everything that differs between the lock record of `entry` and the cache (empty list = as locked)."""
    key, repo_id, commit = entry.key, hub_repo_id(entry), rec.get("commit", "")
    if rec.get("repo_id") != repo_id:
        return [f"`{key}`: the lock has {rec.get('repo_id')} but the registry says {repo_id}; re-bake"]
    if rec.get("revision") != entry.revision:
        return [f"`{key}`: the registry asks for revision {entry.revision}, the lock was baked from "
                f"{rec.get('revision')}; re-bake"]
    if COMMIT_RE.fullmatch(entry.revision) and commit != entry.revision:
        return [f"`{key}`: the registry pins commit {entry.revision}, the lock has {commit}; re-bake"]
    snapshot = repo_dir(cache, repo_id) / "snapshots" / commit
    if not snapshot.is_dir():
        return [f"`{key}`: weights missing: {repo_id} @ {commit} is not in the hub cache {cache}"]
    out = []
    for ref in required_refs(entry):
        path = repo_dir(cache, repo_id) / "refs" / ref
        found = path.read_text().strip() if path.is_file() else "nothing"
        if found != commit:
            out.append(f"`{key}`: {path} names {found}, the lock {commit} (the loader would read another snapshot)")
    locked = rec.get("files") or {}
    try:
        loads = set(select_files(entry.family, _snapshot_listing(snapshot)))
    except ModelLockError as e:
        loads = set()
        out.append(f"`{key}`: {e}")
    out += [f"`{key}`: missing file {n}" for n in sorted(set(locked) - loads) if not (snapshot / n).is_file()]
    out += [f"`{key}`: the loader would also read {n}, which is not in the lock" for n in sorted(loads - set(locked))]
    present = [n for n in sorted(locked) if (snapshot / n).is_file()]
    for n in present:
        if (snapshot / n).stat().st_size != locked[n]["size"]:
            out.append(f"`{key}`: file {n} differs from the lock (size {(snapshot / n).stat().st_size} ≠ "
                       f"{locked[n]['size']})")
    if hashes and not out:
        with _progress(sum(locked[n]["size"] for n in present), f"verify {key}") as bar:
            for n in present:
                digest = sha256_file(snapshot / n, bar)
                if digest != locked[n]["sha256"]:
                    out.append(f"`{key}`: file {n} differs from the lock (sha256 {digest[:12]}… ≠ "
                               f"{locked[n]['sha256'][:12]}…)")
    return out


def check_models(keys, lock_path: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None, hashes: bool = True) -> list[str]:
    """Verify the hub models among `keys` against the lock; returns the keys checked, raises ModelLockError.

    `keys`: registry keys or entries, or a Config (then its study's models and, by default, the lock beside its
    params.yaml). Local checkpoints (tiny models, folders) are skipped: they are not pinned by a hub revision.
    """
    if hasattr(keys, "study"):
        return check_models_for_config(keys, lock_path, cache, hashes)
    entries = _unique_hub(k if isinstance(k, ModelEntry) else model(k) for k in keys)
    if not entries:
        return []
    lock_path = Path(lock_path) if lock_path else default_lock_path()
    lock, cache = read_lock(lock_path), hub_cache_dir(cache)
    problems = []
    for e in entries:
        rec = lock["models"].get(e.key)
        if rec is None:
            problems.append(f"`{e.key}` is not in the lock (it has: {', '.join(lock['models']) or 'nothing'}); re-bake")
        else:
            problems += _problems(e, rec, cache, hashes)
    if problems:
        raise ModelLockError(f"the pinned model weights do not match {lock_path} (cache {cache}):\n  - "
                             + "\n  - ".join(problems)
                             + "\n  Rebuild the image with --build-arg BAKE_MODELS=1, or re-run "
                               "`HF_HUB_OFFLINE=0 vw bake-models`.")
    return [e.key for e in entries]


def check_models_for_config(cfg, lock_path: str | os.PathLike | None = None,
                            cache: str | os.PathLike | None = None, hashes: bool = True) -> list[str]:
    """The pre-run check: the hub models of the config's study (none for smoke: a no-op). Call before any stage."""
    return check_models(cfg.study.models.values(), lock_path or default_lock_path(cfg.root), cache, hashes)


# ---------------------------------------------------------------------------------------------------------------
# `python -m visual_words.models.lock`: the image build bakes with this before the project is installed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m visual_words.models.lock", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["bake", "lock", "check"],
                   help="bake: download + lock; lock: lock what is in the cache; check: verify the cache")
    p.add_argument("keys", nargs="*", help="registry keys (default: every hub model)")
    p.add_argument("--cache", help="hub cache folder (default: huggingface_hub's, HF_HUB_CACHE)")
    p.add_argument("--lock", help=f"lock file (default: ${LOCK_ENV}, else ./{LOCK_NAME})")
    args = p.parse_args(argv)
    keys = args.keys or [e.key for e in hub_entries()]
    lock = args.lock or os.environ.get(LOCK_ENV) or LOCK_NAME
    try:
        if args.action == "check":
            print(f"models as locked: {', '.join(check_models(keys, lock, args.cache))}")
        else:
            bake(keys, args.cache, lock, fetch=args.action == "bake")
    except (ModelLockError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
