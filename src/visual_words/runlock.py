"""One writer per checkout: the run lock that keeps two runs from doing the same trial twice.

The stage commands (`vw data prepare`, `maps`, `sweep`, `train`, `evaluate run`, `analyze`, `report`) hold an
exclusive `flock` on `<repo>/.vw-run.lock` while they run, with or without DVC (`dvc repro` runs those same
commands). A second run in the same checkout stops at once with one line naming the holder (pid, command, start
time) instead of training the same trials again. The lock is the kernel's: a killed run (even SIGKILL) releases it,
so no stale lock ever needs deleting by hand. Nested use in one process (`vw reproduce --no-dvc` runs the stages in
process) is re-entrant.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from visual_words.errors import UserError

LOCK_NAME = ".vw-run.lock"

_held: dict[str, int] = {}  # lock path -> nesting depth in this process


class RunLockError(UserError):
    """Another run holds this checkout's run lock."""


def lock_path(params_file: str | os.PathLike | None = None) -> Path:
    """The lock of the checkout whose params file is `params_file` (default: the one `vw` would read)."""
    from visual_words.config import find_params_file

    params = Path(params_file) if params_file else find_params_file()
    return params.resolve().parent / LOCK_NAME


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
def run_lock(params_file: str | os.PathLike | None = None, command: str = "vw") -> Iterator[Path]:
    """Hold the checkout's run lock for the duration of the block; RunLockError when another run holds it."""
    path = lock_path(params_file)
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
        raise RunLockError(f"{path}: another run is working in this checkout ({_holder(path)}); wait for it to "
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
