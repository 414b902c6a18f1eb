"""Check, offline, that the models a run will load are the locked and published ones (`vw models check`, the
pre-run check of every profile with real models).

Each hub model of the profile must be in the lock (models/lock.py writes it), its snapshot in the cache at the
locked commit, the refs the loader follows pointing there, the files the loader would read exactly the locked ones,
every sha256 equal, and a baked lock's files equal to the publisher's pins. A paper model pointed at a local folder
or single file is compared with its pins directly. The result is one `ModelStatus` per model (OK, UNVERIFIED,
REHEARSAL usable; MISSING, MISMATCH not); `check_models` raises one `ModelLockError` listing every difference.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from visual_words.io import sha256_file
from visual_words.models.hub_cache import (
    COMMIT_RE,
    ModelLockError,
    hub_cache_dir,
    hub_repo_id,
    repo_dir,
    single_file_config,
)
from visual_words.models.lock import (
    REHEARSAL_ENV,
    REHEARSAL_PROFILE,
    bake_files,
    config_lock_path,
    default_lock_path,
    progress_bar,
    read_lock,
    required_refs,
    select_files,
    snapshot_listing,
)
from visual_words.models.pins import compare, pin, single_file_match
from visual_words.registry import ModelEntry, model

MODELS_CHECKED_ENV = "VW_MODELS_CHECKED"  # "1": `vw reproduce` verified every sha256 before its stages ran


def _problems(entry: ModelEntry, rec: dict[str, Any], cache: Path, hashes: bool) -> list[str]:
    """Everything that differs between the lock record of `entry` and the cache (empty list = as locked)."""
    key, repo_id, commit = entry.key, hub_repo_id(entry), rec.get("commit", "")
    if rec.get("repo_id") != repo_id:
        return [f"`{key}`: the lock has {rec.get('repo_id')} but the registry says {repo_id}; re-bake"]
    if entry.revision and COMMIT_RE.fullmatch(entry.revision) and commit != entry.revision:
        return [f"`{key}`: the registry pins commit {entry.revision}, the lock has {commit}; re-bake"]
    if rec.get("revision") != entry.revision:
        return [f"`{key}`: the registry asks for revision {entry.revision}, the lock was baked from "
                f"{rec.get('revision')}; re-bake"]
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
        loads = set(select_files(entry.family, snapshot_listing(snapshot)))
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
        with progress_bar(sum(locked[n]["size"] for n in present), f"verify {key}") as bar:
            for n in present:
                digest = sha256_file(snapshot / n, bar)
                if digest != locked[n]["sha256"]:
                    out.append(f"`{key}`: file {n} differs from the lock (sha256 {digest[:12]}… ≠ "
                               f"{locked[n]['sha256'][:12]}…)")
    return out


@dataclass
class ModelStatus:
    """Where one model's weights come from and how they compare with the lock and the publisher's pins."""

    key: str
    source: str
    state: str  # OK | UNVERIFIED | REHEARSAL (usable), MISSING | MISMATCH (not)
    detail: str
    problems: list[str] = field(default_factory=list)  # every difference, each prefixed with the model key
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("OK", "UNVERIFIED", "REHEARSAL")

    def line(self) -> str:
        """One line: key, state, source, what was found, and what to do if it is not usable."""
        return f"{self.key:<16} {self.state:<10} {self.source}: {self.detail}" + (f" → {self.fix}" if self.fix else "")


def _bake_fix(key: str) -> str:
    return f"run `HF_HUB_OFFLINE=0 vw bake-models {key}` (or build the image with --build-arg BAKE_MODELS=1)"


def _failed(entry: ModelEntry, source: str, problems: list[str], fix: str) -> ModelStatus:
    first = problems[0].removeprefix(f"`{entry.key}`: ")
    # MISSING only when nothing present differs: a wrong byte anywhere makes the copy a MISMATCH
    missing = all(any(w in p for w in ("missing", "not in the hub cache", "does not exist", "not in the lock",
                                       "no model lock", "no diffusers configs")) for p in problems)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ModelStatus(entry.key, source, "MISSING" if missing else "MISMATCH", first + more, problems, fix)


def _judged(entry: ModelEntry, source: str, verdict, n_files: int, what: str) -> ModelStatus:
    """OK when some file matched a published sha256 and none differed; UNVERIFIED when nothing could be compared."""
    if verdict.problems:
        return _failed(entry, source, [f"`{entry.key}`: {p}" for p in verdict.problems],
                       "this copy is not the published checkpoint: fetch it again from the registry source")
    state = "OK" if verdict.verified or verdict.size_only else "UNVERIFIED"
    if not entry.revision and not entry.is_local:
        state = "UNVERIFIED"
        what += " (no pinned commit in registry/models.yaml)"
    return ModelStatus(entry.key, source, state, f"{n_files} files {what}; {verdict.summary()}")


def _present(folder: Path, names: Iterable[str], expected: dict[str, Any] | None, hashes: bool) -> dict[str, dict]:
    """name -> size and (where a published sha256 exists to compare with, and `hashes`) sha256."""
    files = (expected or {}).get("files") or {}
    out = {}
    for n in names:
        want_hash = hashes and (files.get(n) or {}).get("sha256") is not None
        out[n] = {"size": (folder / n).stat().st_size, "sha256": sha256_file(folder / n) if want_hash else None}
    return out


def _folder_status(entry: ModelEntry, expected: dict[str, Any] | None, hashes: bool) -> ModelStatus:
    folder = entry.local_dir
    source = f"folder {folder}"
    if not folder.is_dir():
        return _failed(entry, source, [f"`{entry.key}`: folder {folder} does not exist"],
                       f"fix `folder:` in {entry.override or 'registry/models.yaml'}")
    try:
        names = select_files(entry.family, snapshot_listing(folder))
    except ModelLockError as e:
        return _failed(entry, source, [f"`{entry.key}`: {e}"], "the folder is not in the library's layout")
    verdict = compare(expected, _present(folder, names, expected, hashes))
    return _judged(entry, source, verdict, len(names), "in the folder")


def _single_file_status(entry: ModelEntry, expected: dict[str, Any] | None, cache: Path, hashes: bool) -> ModelStatus:
    path = Path(entry.single_file)
    source = f"single file {path}"
    if not path.is_file():
        return _failed(entry, source, [f"`{entry.key}`: {path} does not exist"], "fix `single_file:` in the overrides")
    size = path.stat().st_size
    name, why = single_file_match(expected, size, sha256_file(path) if hashes else None)
    if name is None:
        return _failed(entry, source, [f"`{entry.key}`: {path.name}: {why[0]}"],
                       "use the original checkpoint (docs/models.md)")
    config = single_file_config(entry, cache)
    if not (config / "model_index.json").is_file():
        return _failed(entry, source, [f"`{entry.key}`: no diffusers configs at {config} (model_index.json missing)"],
                       f"`HF_HUB_OFFLINE=0 vw bake-models {entry.key} --configs-only`, or set `config:` to a folder "
                       "holding the diffusers configs")
    small = [n for n in snapshot_listing(config)
             if any(fnmatch.fnmatchcase(n, p) for p in bake_files(entry.family)["files"])]
    verdict = compare(expected, _present(config, small, expected, hashes), complete=False)
    if verdict.problems:
        return _judged(entry, source, verdict, len(small), "")
    checked = "sha256" if hashes else "size"
    return ModelStatus(entry.key, source, "OK",
                       f"the publisher's {name} ({checked} matches); configs from {config}: {verdict.summary()}")


def accept_rehearsal_default(flag: bool | None) -> bool:
    return flag if flag is not None else os.environ.get(REHEARSAL_ENV) == "1"


def model_status(entry: ModelEntry, lock: dict[str, Any] | None, lock_path: Path, cache: Path, hashes: bool = True,
                 accept_rehearsal: bool = False, pins_table: dict[str, Any] | None = None) -> ModelStatus:
    """The status of one model (offline). `lock` None: no lock could be read at `lock_path`."""
    expected = pin(entry.key) if pins_table is None else pins_table.get(entry.key)
    if entry.single_file:
        return _single_file_status(entry, expected, cache, hashes)
    if entry.local_dir is not None:
        return _folder_status(entry, expected, hashes)
    repo_id = hub_repo_id(entry)
    source = f"{repo_id} @ {entry.revision[:12] if entry.revision else 'main (unpinned)'}"
    if lock is None:
        return _failed(entry, source, [f"`{entry.key}`: no model lock at {lock_path}"], _bake_fix(entry.key))
    rehearsal = lock.get("origin") == "rehearsal"
    if rehearsal and not accept_rehearsal:
        return ModelStatus(entry.key, source, "MISMATCH", f"{lock_path} locks a rehearsal build (random weights), "
                           "not the publisher's checkpoint", [f"`{entry.key}`: {lock_path} is a rehearsal lock"],
                           f"for a rehearsal run set {REHEARSAL_ENV}=1 (or pass --rehearsal); for the paper, "
                           + _bake_fix(entry.key))
    rec = lock["models"].get(entry.key)
    if rec is None:
        return _failed(entry, source, [f"`{entry.key}` is not in the lock (it has: "
                                       f"{', '.join(lock['models']) or 'nothing'}); re-bake"], _bake_fix(entry.key))
    problems = _problems(entry, rec, cache, hashes)
    if problems:
        return _failed(entry, source, problems, _bake_fix(entry.key))
    n = len(rec.get("files") or {})
    if rehearsal:
        return ModelStatus(entry.key, source, "REHEARSAL", f"{n} files as locked by a rehearsal build (random "
                           "weights; the publisher's hashes are not applied)")
    verdict = compare(expected, rec.get("files") or {})
    return _judged(entry, source, verdict, n, "as locked" if hashes else "as locked (sizes only)")


def checked_entries(keys) -> list[ModelEntry]:
    """The entries a check covers: hub models, and paper models pointed at a local copy (they have pins)."""
    by_key = {}
    for k in keys:
        e = k if isinstance(k, ModelEntry) else model(k)
        by_key[e.key] = e
    return [e for e in by_key.values() if hub_repo_id(e) is not None or pin(e.key) is not None]


def model_statuses(keys, lock_path: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                   hashes: bool = True, accept_rehearsal: bool | None = None,
                   pins_table: dict[str, Any] | None = None) -> list[ModelStatus]:
    """One status per model (what `vw models check` prints); never raises for a missing or broken lock."""
    entries = checked_entries(keys)
    lock_path = Path(lock_path) if lock_path else default_lock_path()
    cache = hub_cache_dir(cache)
    try:
        lock = read_lock(lock_path) if any(not e.is_local for e in entries) else None
    except ModelLockError as e:
        if lock_path.is_file():  # a lock that is there but unreadable is wrong for every hub model
            return [ModelStatus(x.key, hub_repo_id(x) or "local", "MISMATCH", str(e), [str(e)], "re-bake")
                    if not x.is_local else model_status(x, None, lock_path, cache, hashes, False, pins_table)
                    for x in entries]
        lock = None
    return [model_status(e, lock, lock_path, cache, hashes, accept_rehearsal_default(accept_rehearsal), pins_table)
            for e in entries]


def check_models(keys, lock_path: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None, hashes: bool = True, accept_rehearsal: bool | None = None,
                 pins_table: dict[str, Any] | None = None, needed_by: str = "a run on the real models") -> list[str]:
    """Verify the models among `keys` against the lock and the publisher's pins; returns the keys checked, raises
    ModelLockError listing every difference.

    `keys`: registry keys or entries, or a Config (then its study's models and, by default, the lock beside its
    params.yaml). Tiny checkpoints are skipped (no hub revision, no pins); a paper model pointed at a local folder
    or single file is checked against its pins. `accept_rehearsal` (default: ${REHEARSAL_ENV}=1) accepts a lock of
    origin "rehearsal" (see the module doc).
    """
    if hasattr(keys, "study"):
        return check_models_for_config(keys, lock_path, cache, hashes, accept_rehearsal)
    entries = checked_entries(keys)
    if not entries:
        return []
    lock_path = Path(lock_path) if lock_path else default_lock_path()
    cache = hub_cache_dir(cache)
    lock = read_lock(lock_path, needed_by) if any(not e.is_local for e in entries) else None
    accept = accept_rehearsal_default(accept_rehearsal)
    statuses = [model_status(e, lock, lock_path, cache, hashes, accept, pins_table) for e in entries]
    problems = [p for s in statuses if not s.ok for p in (s.problems or [f"`{s.key}`: {s.detail}"])]
    if problems:
        raise ModelLockError(f"the pinned model weights do not match {lock_path} (cache {cache}):\n  - "
                             + "\n  - ".join(problems)
                             + "\n  Rebuild the image with --build-arg BAKE_MODELS=1, or re-run "
                               "`HF_HUB_OFFLINE=0 vw bake-models`; `vw models check` says what each model needs.")
    for s in statuses:
        if s.state in ("REHEARSAL", "UNVERIFIED"):
            print(f"[models] {s.line()}", file=sys.stderr)
    return [e.key for e in entries]


def check_models_for_config(cfg, lock_path: str | os.PathLike | None = None,
                            cache: str | os.PathLike | None = None, hashes: bool = True,
                            accept_rehearsal: bool | None = None) -> list[str]:
    """The pre-run check: the real models of the config's study (none for smoke: a no-op). Call before any stage.

    The `rehearsal` profile accepts a rehearsal lock (it exists to run the paper's code paths on random weights);
    every other profile needs ${REHEARSAL_ENV}=1 for that. A profile with its own hub cache (`study.hub_cache`) is
    checked against that cache and the lock inside it."""
    if accept_rehearsal is None and getattr(cfg, "profile", None) == REHEARSAL_PROFILE:
        accept_rehearsal = True
    cache = cache or (cfg.path(cfg.study.hub_cache) if cfg.study.hub_cache else None)
    keys = list(cfg.study.models.values())
    return check_models(keys, lock_path or config_lock_path(cfg), cache, hashes, accept_rehearsal,
                        needed_by=f"profile `{cfg.profile}` ({', '.join(getattr(k, 'key', k) for k in keys)})")


def check_models_before_stage(cfg) -> list[str]:
    """The check every stage command that loads models runs when it has read its config, before any heavy work
    (a Ray cluster, a data pass): a run on weights that are missing or not the locked ones cannot succeed.

    Standalone (or under `dvc repro`) it hashes every file; under `vw reproduce`, which hashed them once before the
    first stage (and says so in ${MODELS_CHECKED_ENV}), each stage checks presence, commits and sizes only."""
    return check_models_for_config(cfg, hashes=os.environ.get(MODELS_CHECKED_ENV) != "1")
