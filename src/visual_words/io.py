"""File helpers in one place: atomic writes (write to a temp file beside the target, then rename: a killed writer
leaves no half file), content digests of files (`sha256_file`; `content_hash` remembers a file's digest per path,
size and modification time), byte-for-byte reproducible safetensors files (`save_safetensors`), "disk full: PATH"
for a write that ran out of space, and the writable-output check a command runs before its heavy work
(`check_writable`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from visual_words.errors import DiskFullError, UserError, is_disk_full

TEMP_SUFFIX = ".tmp"  # every temporary this project writes beside an output ends so (.dvcignore keeps them out)
WRITE_CHECK_PREFIX = ".vw-write-check."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success it replaces `path` in one rename. The temp path is
    `.<name>.<random><suffix>.tmp`: removed on failure (and on SIGTERM, which `vw` turns into an exception); one
    left by SIGKILL is removed by the next run of the stage (`remove_temporaries`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would (umask applies), so
        # outputs in a mounted folder stay readable by the host user.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except Exception as e:
        # Writers report a full disk in their own words (torch: "unexpected pos …", safetensors: an I/O error
        # string); name it once here, for every writer, when the target's file system has no room left.
        if is_disk_full(e) or _no_space(path.parent):
            raise DiskFullError(path) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def disk_full_names(path: str | os.PathLike) -> Iterator[None]:
    """For writers that are not `atomic_path` (a folder of images, a download): a full disk inside the block is
    reported as `disk full: path`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if is_disk_full(e) or (isinstance(e, OSError) and _no_space(Path(path))):
            raise DiskFullError(path) from e
        raise


def _no_space(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024  # less than one small output file left


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file as bytes that depend only on the tensors and the metadata.

    The safetensors library writes the header's `__metadata__` in the iteration order of a Rust hash map, which is
    seeded per process: the same tensors saved twice differ in about half the runs, so every retrain looked like a
    changed output to DVC. The header is re-written here with sorted metadata keys (the data bytes are untouched;
    the file is still an ordinary safetensors file)."""
    first = next(iter(tensors.values()), None)
    if first is not None and type(first).__module__.startswith("numpy"):
        from safetensors.numpy import save
    else:
        from safetensors.torch import save
    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data section stays 8-byte aligned, as the library pads it
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def save_safetensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> str:
    """Write `tensors` to `path` atomically and reproducibly (`safetensors_bytes`); return the file's sha256."""
    data = safetensors_bytes(tensors, metadata)
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail early (before loading models or training) when the folder `path` cannot be written: one line naming
    it. Probes the folder, or its nearest existing parent when it does not exist yet; leaves nothing behind."""
    folder = Path(path).absolute()
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(probe_in))
        fd, probe = tempfile.mkstemp(prefix=WRITE_CHECK_PREFIX, dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(folder) from e
        read_only = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        reason = "is read-only" if read_only else f"cannot be written ({e.strerror}: {probe_in})"
        raise UserError(f"{folder}: the {what} folder {reason}; choose another one") from None
    return folder


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer left anywhere under `folder` (hidden files ending in .tmp, write
    probes); returns them. Call it only while holding the run lock of the outputs in `folder` (runlock.py): then no
    other run can be writing one of them."""
    gone = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name.startswith(".") and (name.endswith(TEMP_SUFFIX) or name.startswith(WRITE_CHECK_PREFIX)):
                p = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    gone.append(p)
    return gone


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def json_digest(obj: Any) -> str:
    """The sha256 (hex) of `obj` as sorted-key JSON, values JSON cannot hold written as their str: the one digest of
    a structure, behind every reuse key, the feature cache's fingerprint, the manifests' and evaluation rows'
    checksums and the config hash."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: str | os.PathLike, progress=None) -> str:
    """The sha256 of a file's bytes, read in 4 MiB chunks (the content hash outputs record in their sidecars;
    `progress`: a tqdm bar advanced by the bytes read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return h.hexdigest()


_CONTENT_HASHES: dict[tuple[str, int, int], str] = {}


def content_hash(path: str | os.PathLike) -> str:
    """`sha256_file`, remembered per path, size and modification time (images are hashed once per process)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _CONTENT_HASHES:
        _CONTENT_HASHES[key] = sha256_file(path)
    return _CONTENT_HASHES[key]
