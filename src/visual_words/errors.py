"""The one home of "the user can fix this" errors and of how the `vw` command reports them.

Code anywhere raises a `UserError` (or one of its subclasses: `ConfigError`, `EmbeddingFileError`, `MapFileError`,
`CocoFormatError`, `DiskFullError`, `RunLockError`…) whose message is one line naming the file or key and the
problem. `vw`'s top-level handler (`report`) prints that line and exits with code 2; the stack trace is shown only
with `VW_DEBUG=1`. Errors that are not the user's (bugs) keep their traceback.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys

EXIT_USER_ERROR = 2
DEBUG_ENV = "VW_DEBUG"


class UserError(Exception):
    """Bad input or a fixable condition of the environment; the message is the one line the user sees."""


class DiskFullError(UserError, OSError):
    """A write ran out of space; the message is `disk full: PATH`."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(errno.ENOSPC, f"disk full: {path} (free some space and re-run; finished outputs are kept)")
        self.path = str(path)

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(e: BaseException) -> bool:
    """True when `e` (or an exception it was raised from) is a write that ran out of space."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        if isinstance(e, sqlite3.OperationalError) and "disk is full" in str(e):  # the MLflow store
            return True
        e = e.__cause__ or e.__context__
    return False


def printable(text: object) -> str:
    """`text` with control characters escaped, so a name read from a file cannot move the cursor, recolour the
    terminal or fake extra output lines (ANSI escapes, carriage returns, newlines)."""
    s = str(text)
    if all(ch.isprintable() for ch in s):
        return s
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in s)


def _expected(e: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug (which keeps its traceback)."""
    if is_disk_full(e):
        path = getattr(e, "path", None) or getattr(e, "filename", None)
        return str(e) if isinstance(e, DiskFullError) else f"disk full: {path or 'a write ran out of space'}"
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename or e}"
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    # Older modules still raise the built-in kinds for bad input; their messages name the file or key.
    if isinstance(e, (FileNotFoundError, ValueError)):
        return str(e)
    return None


def report(e: BaseException, command: str | None) -> int:
    """Print an expected failure as one line on stderr and return the exit code; re-raise anything else (and
    everything with VW_DEBUG=1)."""
    msg = _expected(e)
    if msg is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise e
    lines = [printable(line) for line in str(msg).strip().splitlines()] or [type(e).__name__]
    prefix = f"vw {command}: error: " if command else "vw: error: "
    print(prefix + "\n  ".join(lines), file=sys.stderr)
    return EXIT_USER_ERROR
