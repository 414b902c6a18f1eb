"""Pin the paper's real checkpoints: bake them into a Hugging Face cache, lock what was baked, check it at run time.

* **bake** (online, once: the image build with BAKE_MODELS=1, or `HF_HUB_OFFLINE=0 vw bake-models`): resolve each
  hub model's registry revision (a pinned commit) to its file listing, download the files its loader reads with
  `huggingface_hub.snapshot_download`, point the cache's refs at that commit, compare every file with the
  publisher's sha256 and size (registry/pins.yaml, see pins.py) and write the lock only if none differs. The hub
  may be a mirror (`HF_ENDPOINT`, `--endpoint`) and a token may come from a file (`HF_TOKEN_PATH`,
  `--token-file`): the pins decide what is accepted, whoever serves the bytes. tests/test_model_bake_http.py runs
  the real client against a hub served over HTTP on 127.0.0.1.
* **lock** (`models.lock.json`): model key → repo id, registry revision, resolved commit, file → sha256 and size.
  It is computed from the cache itself, so a cache filled by any means (a user's own downloads) can be locked too.
* **check** (offline, before every `paper` run; models/lock_check.py): each hub model of the profile is in the
  lock, its snapshot is in the cache at the locked commit, the refs the loader follows point there, the files the
  loader would read are exactly the locked ones and every sha256 matches. Any difference is a `ModelLockError`
  naming the model, the file and what to do. A lock made by baking is also compared with the publisher's pins, so
  the lock cannot vouch for bytes the publisher never released.
* **rehearsal** (`lock --rehearsal`): a lock of a cache whose files are known to be a local build (full-size
  random weights at the registry's ids and commits). It records `"origin": "rehearsal"`; a check accepts it only
  when asked to (`accept_rehearsal`, `--rehearsal`, VW_ACCEPT_REHEARSAL=1, or running the `rehearsal` profile of
  params.yaml), then checks the cache byte for byte against that lock, skips the publisher's pins (random weights
  cannot match them) and labels every such model REHEARSAL. Without the opt-in such a lock is an error, so a paper
  run can never start on rehearsal weights.

The cache layout is huggingface_hub's own (models--ORG--NAME/{blobs,refs,snapshots/<commit>}); loading then goes
through the unchanged production loader with HF_HUB_OFFLINE=1. This module imports only huggingface_hub, yaml, the
registry and the model families (their file lists), so the image can bake before the rest of the project is copied
in (a code change does not re-download 8 GB): `python -m visual_words.models.lock bake --cache DIR --lock FILE`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fnmatch
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from visual_words.io import sha256_file, write_json, write_text
from visual_words.models.hub_cache import (  # the cache layout, shared with the loaders (no family import there)
    COMMIT_RE,
    ModelLockError,
    hub_cache_dir,
    hub_repo_id,
    repo_dir,
    resolve_commit,
)
from visual_words.models.pins import compare, pin
from visual_words.registry import ModelEntry, model, models

LOCK_NAME = "models.lock.json"
LOCK_FORMAT = 1
LOCK_ENV = "VW_MODELS_LOCK"  # the image points this at the lock it carries
REHEARSAL_ENV = "VW_ACCEPT_REHEARSAL"  # "1": a lock of origin "rehearsal" is accepted (random-weight rehearsals)
REHEARSAL_PROFILE = "rehearsal"  # running this params.yaml profile is the same opt-in
ORIGINS = ("bake", "rehearsal")
ENDPOINT_ENV = "HF_ENDPOINT"  # huggingface_hub's own names: a mirror of the hub, and a file holding the token
TOKEN_PATH_ENV = "HF_TOKEN_PATH"

def bake_files(family: str) -> dict[str, Any]:
    """What a family's loader reads from a hub repo (`Family.bake_files`: fnmatch patterns, `*` also matches `/`).
    Repos carry far more than that: SD-2.1 holds two 5 GB single-file checkpoints and every weight twice (.bin and
    .safetensors), the CLIP repos add TF and Flax copies."""
    from visual_words.models.families import families

    known = families()
    if family not in known or not known[family].bake_files:
        raise ModelLockError(f"no bake file list for model family `{family}` "
                             f"(known: {', '.join(f for f, v in known.items() if v.bake_files)})")
    return known[family].bake_files


def loads_main(entry: ModelEntry) -> bool:
    """Whether the entry's loader takes no revision and reads whatever refs/main names (open_clip): then refs/main
    must be the locked commit too. The other loaders are given the registry revision (loading.py)."""
    from visual_words.models.families import family_of

    return family_of(entry).loads_main


# ---------------------------------------------------------------------------------------------------------------
# which models, which files, where


def hub_entries(keys: Iterable[str | ModelEntry] | None = None) -> list[ModelEntry]:
    """Registry entries that live on a hub: the given keys or entries (local ones dropped), or every hub model."""
    entries = [k if isinstance(k, ModelEntry) else model(k) for k in keys] if keys is not None \
        else list(models().values())
    return _unique_hub(entries)


def _unique_hub(entries: Iterable[ModelEntry]) -> list[ModelEntry]:
    by_key = {e.key: e for e in entries}  # a key may repeat (one checkpoint in two roles)
    return [e for e in by_key.values() if hub_repo_id(e) is not None]


def select_files(family: str, files: Iterable[str], prefer: Iterable[str] = ()) -> list[str]:
    """The files of a repo listing that `family`'s loader reads (see `bake_files`), sorted. Of each weights group the
    first alternative present wins, in the loader's order — unless another alternative's files are all in `prefer`
    (the files the publisher's pins cover): then that one, so a bake downloads bytes it can verify (OWLv2 publishes
    its pickle's hash, not its later safetensors conversion's), and the loader reads what was downloaded."""
    spec, files, prefer = bake_files(family), sorted(set(files)), set(prefer)
    chosen = {f for f in files if any(fnmatch.fnmatchcase(f, p) for p in spec["files"])}
    for group, alternatives in spec["weights"].items():
        present = [hits for patterns in alternatives
                   if (hits := [f for f in files if any(fnmatch.fnmatchcase(f, p) for p in patterns)])]
        if not present:
            raise ModelLockError(f"no `{group}` weights among the repo's files (looked for "
                                 f"{' or '.join(a[0] for a in alternatives)})")
        chosen.update(next((hits for hits in present if set(hits) <= prefer), present[0]))
    return sorted(chosen)


def default_lock_path(root: str | os.PathLike | None = None) -> Path:
    """$VW_MODELS_LOCK (the image sets it), else models.lock.json beside params.yaml (or in `root`)."""
    env = os.environ.get(LOCK_ENV)
    if env:
        return Path(env)
    if root is None:
        from visual_words.models.location import repo_root

        root = repo_root()
    return Path(root) / LOCK_NAME


def required_refs(entry: ModelEntry) -> list[str]:
    """The refs/ names the loader follows offline for this entry (none when the revision is itself a commit)."""
    revision = entry.revision or "main"  # no pinned commit: the loader follows main
    refs = [] if COMMIT_RE.fullmatch(revision) else [revision]
    if loads_main(entry) and "main" not in refs:
        refs.append("main")
    return refs


def snapshot_listing(snapshot: Path) -> list[str]:
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())


def progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False,
                disable=total < (64 << 20))


# ---------------------------------------------------------------------------------------------------------------
# bake: download + refs (online), then lock from the cache (offline)


def hub_access(endpoint: str | None = None, token_file: str | os.PathLike | None = None) -> tuple[str, str | None]:
    """The hub to bake from and the token to send it.

    `endpoint`, else $HF_ENDPOINT (read now: huggingface_hub reads it once, at import), else the hub itself.
    `token_file`, else the file $HF_TOKEN_PATH names: its first line is the token. Neither: None, and
    huggingface_hub looks for one itself ($HF_TOKEN, a stored `hf auth login`). A token is only needed for gated
    repos or a mirror that asks for one; it is never written anywhere by the bake."""
    from huggingface_hub import constants

    endpoint = (endpoint or os.environ.get(ENDPOINT_ENV) or constants._HF_DEFAULT_ENDPOINT).rstrip("/")
    token_file = token_file or os.environ.get(TOKEN_PATH_ENV)
    if not token_file:
        return endpoint, None
    path = Path(token_file)
    try:
        token = path.read_text().strip().splitlines()[0].strip() if path.is_file() else ""
    except (OSError, IndexError, UnicodeDecodeError):
        token = ""
    if not token:
        raise ModelLockError(f"token file {path} does not exist or holds no token (its first line is the token)")
    return endpoint, token


def download(entry: ModelEntry, cache: str | os.PathLike, configs_only: bool = False,
             expected: dict[str, Any] | None = None, endpoint: str | None = None, token: str | None = None) -> str:
    """Fetch what `entry`'s loader reads, at its registry revision, from `endpoint` (default: the hub) into the hub
    cache. Returns the commit. `expected`: the model's pin record (default: registry/pins.yaml's).

    `configs_only`: only the small files (configs, tokenizer), e.g. the diffusers configs a single-file SD
    checkpoint is loaded with."""
    from huggingface_hub import HfApi, constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise ModelLockError("baking downloads the weights from the hub: run it with HF_HUB_OFFLINE=0")
    expected = pin(entry.key) if expected is None else expected
    repo_id = hub_repo_id(entry)
    revision = entry.revision or "main"
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors_named(entry, api.endpoint):
        info = api.model_info(repo_id, revision=revision)  # one resolution: revision -> commit + listing
    listing = [s.rfilename for s in info.siblings or []]
    wanted = select_files(entry.family, listing, prefer=pinned_files(entry.key, expected))
    if configs_only:
        wanted = [f for f in listing if any(fnmatch.fnmatchcase(f, p) for p in bake_files(entry.family)["files"])]
    note = "" if entry.revision else " — UNPINNED: no commit in registry/models.yaml, `main` was resolved"
    print(f"[bake] {entry.key}: {repo_id} @ {revision} = {info.sha} from {api.endpoint} ({len(wanted)} of "
          f"{len(listing)} files){note}", flush=True)
    listing_note = listing_differences(expected, listing, wanted)
    if listing_note:
        print(f"[bake] {entry.key}: {listing_note}", flush=True)
    # allow_patterns are the exact names: the client downloads these files and nothing else of the repo
    with hub_errors_named(entry, api.endpoint):
        snapshot_download(repo_id, revision=info.sha, allow_patterns=wanted, cache_dir=str(cache), endpoint=endpoint,
                          token=token)
    pin_refs(cache, entry, info.sha)
    return info.sha


@contextlib.contextmanager
def hub_errors_named(entry: ModelEntry, endpoint: str):
    """The hub client's failures as one ModelLockError line: which model, which server, what it said, what to do."""
    import httpx2
    from huggingface_hub import errors

    where = f"model `{entry.key}`: {hub_repo_id(entry)} @ {entry.revision or 'main'} from {endpoint}"
    try:
        yield
    except errors.RevisionNotFoundError:
        raise ModelLockError(f"{where}: the server has no such revision (registry/models.yaml pins it)") from None
    except (errors.GatedRepoError, errors.RepositoryNotFoundError, errors.HfHubHTTPError) as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403) or isinstance(e, errors.GatedRepoError):
            raise ModelLockError(f"{where}: access refused ({status}): give a token with --token-file or "
                                 f"${TOKEN_PATH_ENV} (a file holding it)") from None
        if isinstance(e, errors.RepositoryNotFoundError):
            raise ModelLockError(f"{where}: the server has no such repository") from None
        raise ModelLockError(f"{where}: {str(e).splitlines()[0]}") from None
    except (httpx2.HTTPError, errors.LocalEntryNotFoundError) as e:  # the server could not be reached
        raise ModelLockError(f"{where}: cannot reach the server ({str(e).splitlines()[0][:200]})") from None
    except OSError as e:
        raise ModelLockError(f"{where}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") \
            from None


def listing_differences(expected: dict[str, Any] | None, listing: Iterable[str], wanted: Iterable[str]) -> str:
    """How a served repo listing differs from the publisher's recorded one (pins.yaml `listing`): a line naming the
    extra and the missing files ("" when equal or nothing is recorded). Not a refusal by itself: a file the
    loader reads is judged by its pin (a pinned file missing, or other bytes, refuse the bake)."""
    recorded = (expected or {}).get("listing")
    if not recorded:
        return ""
    served, wanted = set(listing), set(wanted)
    extra = sorted(served - set(recorded))
    missing = sorted(set(recorded) - served)
    if not extra and not missing:
        return ""
    parts = [f"extra {', '.join(n + (' (read by the loader)' if n in wanted else '') for n in extra)}"] if extra \
        else []
    parts += [f"missing {', '.join(missing)}"] if missing else []
    return "the served repo listing differs from the publisher's (registry/pins.yaml `listing`): " + "; ".join(parts)


def pinned_files(key: str, expected: dict[str, Any] | None = None) -> list[str]:
    """The files whose sha256 the publisher's pins record for registry key `key` (registry/pins.yaml, or the pin
    record `expected`)."""
    rec = pin(key) if expected is None else expected
    return [name for name, f in ((rec or {}).get("files") or {}).items() if f and f.get("sha256")]


def pin_refs(cache: str | os.PathLike, entry: ModelEntry, commit: str) -> None:
    """Point the refs the loader follows offline at `commit` (snapshot_download of a commit writes none)."""
    for ref in required_refs(entry):
        write_text(repo_dir(cache, hub_repo_id(entry)) / "refs" / ref, commit)


def lock_entry(entry: ModelEntry, cache: str | os.PathLike, commit: str | None = None) -> dict[str, Any]:
    """The lock record of one model, hashed from its snapshot in the cache."""
    repo_id = hub_repo_id(entry)
    commit = commit or resolve_commit(cache, entry)
    snapshot = repo_dir(cache, repo_id) / "snapshots" / commit
    if not snapshot.is_dir():
        raise ModelLockError(f"model `{entry.key}`: no snapshot {snapshot} in the hub cache")
    names = select_files(entry.family, snapshot_listing(snapshot))
    sizes = {n: (snapshot / n).stat().st_size for n in names}
    with progress_bar(sum(sizes.values()), f"hash {entry.key}") as bar:
        files = {n: {"sha256": sha256_file(snapshot / n, bar), "size": sizes[n]} for n in names}
    return {"repo_id": repo_id, "family": entry.family, "revision": entry.revision, "commit": commit,
            "bytes": sum(sizes.values()), "files": files}


def lock_from_cache(entries: Iterable[ModelEntry], cache: str | os.PathLike | None = None,
                    commits: dict[str, str] | None = None, origin: str = "bake") -> dict[str, Any]:
    """A lock for `entries` as they are in the cache now (commits: key -> commit, else the refs are followed).

    `origin`: "bake" (the publisher's checkpoints) or "rehearsal" (a local random-weight build; see the module doc).
    """
    from huggingface_hub import __version__ as hub_version

    if origin not in ORIGINS:
        raise ModelLockError(f"lock origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
    cache = hub_cache_dir(cache)
    return {
        "format": LOCK_FORMAT,
        "origin": origin,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "huggingface_hub": hub_version,
        "models": {e.key: lock_entry(e, cache, (commits or {}).get(e.key)) for e in entries},
    }


def _expected(key: str, pins_table: dict[str, Any] | None) -> dict[str, Any] | None:
    return pins_table.get(key) if pins_table is not None else pin(key)


def refuse_unpublished(lock: dict[str, Any], pins_table: dict[str, Any] | None = None, source: str = "the cache",
                       cache: str | os.PathLike | None = None) -> None:
    """Raise one line naming every locked file that differs from the publisher's pins or is missing (the bake's
    gate; rehearsal locks skip it). With `cache` (the bake downloaded them), the differing files are also removed
    from it, so the next bake downloads them again instead of finding them cached."""
    problems, discarded = [], False
    for key, rec in lock["models"].items():
        verdict = compare(_expected(key, pins_table), rec["files"])
        problems += [f"`{key}`: {p}" for p in verdict.problems]
        if cache is not None and verdict.differing:
            _discard(Path(cache), rec, verdict.differing)
            discarded = True
    if problems:
        why = "a changed mirror or a damaged download" if cache is not None else "another copy or a damaged file"
        removed = ", and removed the differing files from the cache" if discarded else ""
        raise ModelLockError(f"refusing to lock what {source} holds: {'; '.join(problems)} — not the checkpoint the "
                             f"publisher released (registry/pins.yaml): {why}; nothing was locked{removed}")


def _discard(cache: Path, rec: dict[str, Any], names: Iterable[str]) -> None:
    """Remove files of a snapshot (its link and the blob behind it) that the bake must not keep."""
    snapshot = repo_dir(cache, rec["repo_id"]) / "snapshots" / rec["commit"]
    for name in names:
        link = snapshot / name
        blob = link.resolve() if link.is_symlink() else None
        link.unlink(missing_ok=True)
        if blob is not None:
            blob.unlink(missing_ok=True)


def uncovered(lock: dict[str, Any], pins_table: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Model key -> the locked files (read by its loader) that the publisher's pins do not name at all: the bake
    names them, `vw models check` reports them unverified."""
    out = {}
    for key, rec in lock["models"].items():
        named = set(((_expected(key, pins_table) or {}).get("files") or {}))
        if named and (extra := sorted(set(rec["files"]) - named)):
            out[key] = extra
    return out


def bake(keys: Iterable[str] | None = None, cache: str | os.PathLike | None = None,
         lock_path: str | os.PathLike | None = None, fetch: bool = True, rehearsal: bool = False,
         configs_only: bool = False, pins_table: dict[str, Any] | None = None, endpoint: str | None = None,
         token_file: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """Download (unless `fetch=False`) the hub models `keys` (default: all) and write their lock. Returns the lock.

    Every locked file must match the publisher's pins (`pins_table`, default registry/pins.yaml), or nothing is
    written. `rehearsal`: lock a local random-weight build instead (origin "rehearsal", pins not applied).
    `configs_only`: download only the configs and tokenizer (for a single-file checkpoint); no lock is written.
    `endpoint`, `token_file`: a mirror of the hub and a file holding the token (see `hub_access`).
    """
    entries = hub_entries(keys)
    if not entries:
        raise ModelLockError("nothing to bake: none of the given models lives on a hub")
    if rehearsal and fetch:
        raise ModelLockError("a rehearsal lock describes a local build: lock it without downloading (--no-download)")
    cache = hub_cache_dir(cache)
    endpoint, token = hub_access(endpoint, token_file) if fetch or configs_only else (None, None)
    if configs_only:
        for e in entries:
            download(e, cache, configs_only=True, expected=_expected(e.key, pins_table) or {}, endpoint=endpoint,
                     token=token)
        print("[bake] configs only: nothing locked", flush=True)
        return None
    commits = {e.key: download(e, cache, expected=_expected(e.key, pins_table) or {}, endpoint=endpoint, token=token)
               for e in entries} if fetch else None
    lock = lock_from_cache(entries, cache, commits, origin="rehearsal" if rehearsal else "bake")
    if not rehearsal:
        refuse_unpublished(lock, pins_table, endpoint if fetch else f"the cache {cache}", cache if fetch else None)
        for key, names in uncovered(lock, pins_table).items():
            print(f"[bake] {key}: the loader reads {', '.join(names)}, which registry/pins.yaml does not list for "
                  "this model (locked, reported unverified)", flush=True)
    path = Path(lock_path) if lock_path else default_lock_path()
    write_json(path, lock)
    total = sum(m["bytes"] for m in lock["models"].values())
    print(f"[bake] locked {len(entries)} models ({total / 2**30:.2f} GiB) in {path}", flush=True)
    return lock


# ---------------------------------------------------------------------------------------------------------------
# check (offline, before a paper run)


def read_lock(path: str | os.PathLike, needed_by: str = "a run on the real models") -> dict[str, Any]:
    """The lock at `path`; `needed_by` says who needs it in the error when there is none (e.g. a profile)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLockError(
            f"no model lock at {path}: {needed_by} runs only on pinned weights. In the container, build the "
            f"image with --build-arg BAKE_MODELS=1; elsewhere run `HF_HUB_OFFLINE=0 vw bake-models` once (it "
            f"downloads the weights into the Hugging Face cache and writes the lock). ${LOCK_ENV} points at another "
            "lock.")
    try:
        lock = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLockError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(lock, dict) or lock.get("format") != LOCK_FORMAT or not isinstance(lock.get("models"), dict):
        raise ModelLockError(f"{path}: not a model lock of format {LOCK_FORMAT}")
    return lock


def use_profile_hub_cache(cfg) -> None:
    """Point huggingface_hub at the profile's hub cache (`study.hub_cache`), when it names one: the rehearsal
    profile's full-size stand-ins live there, never in the user's own cache beside real weights."""
    if not cfg.study.hub_cache:
        return
    path = str(cfg.path(cfg.study.hub_cache))
    os.environ["HF_HUB_CACHE"] = path  # for this process's loaders and every worker it starts
    if "huggingface_hub" in sys.modules:  # the constant is read at import; loaders read it at call time
        sys.modules["huggingface_hub"].constants.HF_HUB_CACHE = path


def config_lock_path(cfg) -> Path:
    """The lock that describes the profile's hub cache: `<study.hub_cache>/models.lock.json`, else the default."""
    return cfg.path(cfg.study.hub_cache) / LOCK_NAME if cfg.study.hub_cache else default_lock_path(cfg.root)


# ---------------------------------------------------------------------------------------------------------------
# `python -m visual_words.models.lock`: the image build bakes with this before the project is installed


def add_hub_access_args(p: argparse.ArgumentParser) -> None:
    """--endpoint and --token-file, shared by this module's entry point and `vw bake-models`."""
    p.add_argument("--endpoint", help=f"a mirror of the Hugging Face hub (default: ${ENDPOINT_ENV}, else "
                   "https://huggingface.co); what it serves is still checked against registry/pins.yaml")
    p.add_argument("--token-file", help=f"a file whose first line is the hub token (default: ${TOKEN_PATH_ENV}; "
                   "else $HF_TOKEN or a stored login); only gated repos and some mirrors need one")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m visual_words.models.lock", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["bake", "lock"],
                   help="bake: download + lock; lock: lock what is in the cache (`vw models check` verifies it)")
    p.add_argument("--rehearsal", action="store_true",
                   help="lock: mark the lock as a rehearsal build (random weights)")
    p.add_argument("--configs-only", action="store_true", help="bake: only configs and tokenizer, no lock")
    p.add_argument("keys", nargs="*", help="registry keys (default: every hub model)")
    p.add_argument("--cache", help="hub cache folder (default: huggingface_hub's, HF_HUB_CACHE)")
    p.add_argument("--lock", help=f"lock file (default: ${LOCK_ENV}, else ./{LOCK_NAME})")
    add_hub_access_args(p)
    args = p.parse_args(argv)
    keys = args.keys or [e.key for e in hub_entries()]
    lock = args.lock or os.environ.get(LOCK_ENV) or LOCK_NAME
    try:
        bake(keys, args.cache, lock, fetch=args.action == "bake", rehearsal=args.rehearsal,
             configs_only=args.configs_only, endpoint=args.endpoint, token_file=args.token_file)
    except (ModelLockError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
