"""One writer per set of outputs: the run lock that keeps two runs from doing the same trial twice.

The stage commands (`vw data prepare`, `maps`, `sweep`, `train`, `evaluate run`, `analyze`, `report`) hold an
exclusive `flock` while they run, with or without DVC (`dvc repro` runs those same commands). The lock belongs to
the outputs: its file sits beside params.yaml and its name hashes the resolved output folders of the config, so
two runs in one checkout that write the same outputs exclude each other, while a run whose outputs are elsewhere
(`--set train.out_dir=…`, a test's temp folders) does not wait for them. A second run stops at once with one line
naming the holder (pid, command, start time) instead of training the same trials again. The lock is the kernel's:
a killed run (even SIGKILL) releases it, so no stale lock ever needs deleting by hand. Nested use in one process
(`vw reproduce --no-dvc` runs the stages in process) is re-entrant.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Iterator

from visual_words.errors import UserError

LOCK_PREFIX = ".vw-run-"
OUTPUT_DIRS = ("prepare.manifests_dir", "prepare.cache_dir", "prepare.synthetic_root", "maps.out_dir",
               "train.out_dir", "evaluate.out_dir", "analyze.out_dir", "report.out_dir")

_held: dict[str, int] = {}  # lock path -> nesting depth in this process


class RunLockError(UserError):
    """Another run holds this checkout's run lock."""


def lock_path(cfg: Any) -> Path:
    """The lock of the outputs `cfg` writes: `<repo>/.vw-run-<hash of the resolved output folders>.lock`."""
    dirs = []
    for dotted in OUTPUT_DIRS:
        section, key = dotted.split(".")
        dirs.append(str(cfg.path(getattr(getattr(cfg, section), key)).resolve()))
    digest = hashlib.sha256("\n".join(dirs).encode()).hexdigest()[:12]
    return Path(cfg.root).resolve() / f"{LOCK_PREFIX}{digest}.lock"


def _open_locked(path: Path) -> int | None:
    """An fd holding the lock on `path`, or None when another process holds it. Re-checks the inode after locking,
    because the holder unlinks the file on release and a waiter may have locked the unlinked one."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


@contextlib.contextmanager
def run_lock(cfg: Any, command: str = "vw") -> Iterator[Path]:
    """Hold the run lock of `cfg`'s outputs for the duration of the block; RunLockError when another run holds it."""
    path = lock_path(cfg)
    key = str(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    fd = _open_locked(path)
    if fd is None:
        raise RunLockError(f"{path}: another run is writing these outputs ({_holder(path)}); wait for it to "
                           "finish or stop it, then re-run (finished trials are kept)")
    started = _dt.datetime.now().isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, `{command}`, since {started}\n".encode())
    _held[key] = 1
    try:
        yield path
    finally:
        _held.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: the next run creates a fresh file
        os.close(fd)
