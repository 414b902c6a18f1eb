"""Embedding files: our canonical format, and readers for the formats people actually have.

Canonical: safetensors ``{token: tensor[n_vectors, d]}`` (so diffusers' ``load_textual_inversion`` loads our SD
tokens as they are: it adds ``<tok>``, ``<tok>_1`` …) plus a JSON sidecar ``<file>.json`` with provenance (model id
and revision, token-table hash, trial id, anchor, δ, seed, steps, optimizer, final metrics).

Readers (``read_embedding``): ours; diffusers ``learned_embeds.bin`` (a torch pickle ``{token: tensor}``) and
``.safetensors``; Automatic1111 ``.pt`` (``string_to_param``); SDXL ``{clip_l, clip_g}``; tensor shapes
``[d]``, ``[1, d]`` and ``[n, d]``. Pickles are read with ``torch.load(weights_only=True)`` only: a payload that
would run code is refused with a clear error, never executed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visual_words.errors import UserError
from visual_words.io import save_safetensors, sha256_file, write_json

SIDECAR_SUFFIX = ".json"
FORMAT_VERSION = 1
CONTENT_HASH = "file_sha256"  # sidecar field: sha256 of the .safetensors file's bytes (checked by every reader)


class EmbeddingFileError(UserError, ValueError):
    """An embedding file that cannot be used: the message names the file and what is wrong."""


@dataclass
class Embedding:
    """What a file holds: one or more tokens, each ``[n_vectors, d]`` float32, and what we know about them."""

    path: Path
    format: str  # visual-words | diffusers-bin | diffusers-safetensors | a1111-pt | sdxl
    tokens: dict[str, torch.Tensor]  # token name -> [n, d]
    meta: dict[str, Any] = field(default_factory=dict)  # our sidecar, or whatever the file carried

    @property
    def widths(self) -> dict[str, int]:
        return {k: int(v.shape[-1]) for k, v in self.tokens.items()}

    def single(self) -> tuple[str, torch.Tensor]:
        """The file's one token (most files hold one); a clear error when it holds several."""
        if len(self.tokens) != 1:
            raise EmbeddingFileError(f"{self.path}: holds {len(self.tokens)} tokens ({', '.join(self.tokens)}); "
                                     "pick one with --token")
        return next(iter(self.tokens.items()))


def table_hash(table: torch.Tensor) -> str:
    """A short content hash of a token table (V × d), to tie embeddings and maps to the table they were made in."""
    t = table.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256()
    h.update(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


# ---------------------------------------------------------------------------------------------------------------
# Writing


def write_embedding(path: str | os.PathLike, token: str, vectors: torch.Tensor, meta: dict[str, Any]) -> Path:
    """Write ``{token: vectors}`` as safetensors and its sidecar, both atomically (sidecar last = complete)."""
    path = Path(path)
    vectors = _as_matrix(vectors.detach().to("cpu", torch.float32), path, token)
    _check_finite(vectors, path, token)
    digest = save_safetensors(path, {token: vectors.contiguous()},
                              {"format": "visual-words", "format_version": str(FORMAT_VERSION)})
    write_json(sidecar_path(path), {"format_version": FORMAT_VERSION, "token": token,
                                    "n_vectors": int(vectors.shape[0]), "dim": int(vectors.shape[1]), **meta,
                                    CONTENT_HASH: digest})
    return path


def damage(path: str | os.PathLike) -> str | None:
    """Why our embedding file at `path` cannot be trusted, or None when its bytes are the ones its sidecar recorded
    (a file whose sidecar predates content hashes is trusted as before)."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        return f"{path}: missing"
    try:
        want = json.loads(side.read_text()).get(CONTENT_HASH)
    except (OSError, json.JSONDecodeError, AttributeError):
        return f"{side}: sidecar missing or not valid JSON"
    if want is None:
        return None
    have = sha256_file(path)
    if have != want:
        return (f"{path}: damaged: its content hash {have[:16]} differs from the {want[:16]} its sidecar records "
                "(re-run the stage that wrote it; the damaged file is replaced, never used)")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Reading


def _as_matrix(t: Any, path: Path, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise EmbeddingFileError(f"{path}: entry `{name}` is a {type(t).__name__}, not a tensor")
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise EmbeddingFileError(f"{path}: entry `{name}` has shape {tuple(t.shape)}; expected [d], [1, d] or [n, d]")
    if not t.is_floating_point():
        raise EmbeddingFileError(f"{path}: entry `{name}` has dtype {t.dtype}; expected floating point")
    return t.to(torch.float32)


def _check_finite(t: torch.Tensor, path: Path, name: str) -> None:
    bad = (~torch.isfinite(t)).sum().item()
    if bad:
        raise EmbeddingFileError(f"{path}: entry `{name}` has {bad} NaN/inf values")


def _check_magic(path: Path, suffix: str) -> None:
    """Refuse an empty file, a text file or a file of another kind by its first bytes, before any loader sees it."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise EmbeddingFileError(f"{path}: empty file (0 bytes)")
    if suffix == ".safetensors":
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
        if len(head) < 9 or head[8:9] != b"{" or n > path.stat().st_size - 8:
            raise EmbeddingFileError(f"{path}: not a safetensors file ({_looks_like(head)})")
    elif not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip container or a raw pickle
        raise EmbeddingFileError(f"{path}: not a torch file ({_looks_like(head)})")


def _looks_like(head: bytes) -> str:
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "it is an image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unknown header bytes {head[:8].hex()}"
    return "it is a text file" if all(c.isprintable() or c.isspace() for c in text) else \
        f"unknown header bytes {head[:8].hex()}"


def _load_pickle(path: Path) -> Any:
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # noise before our one line
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise EmbeddingFileError(
            f"{path}: refused: the pickle holds objects other than tensors and plain data, and loading it would "
            f"run code ({str(e).splitlines()[0][:200]}). Only weights_only pickles are read.") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise EmbeddingFileError(f"{path}: not a readable torch file ({str(e).splitlines()[0][:200]})") from None


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise EmbeddingFileError(f"{path}: not a readable safetensors file ({e})") from None


def _tokens_from_dict(d: dict, path: Path) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """Recognise the layout of a loaded dict: A1111, SDXL, or diffusers {token: tensor}."""
    if "string_to_param" in d:  # Automatic1111 / sd-webui
        params = d["string_to_param"]
        if not isinstance(params, dict) or not params:
            raise EmbeddingFileError(f"{path}: `string_to_param` is empty or not a mapping")
        name = d.get("name") or path.stem
        tensors = list(params.values())
        meta = {k: d[k] for k in ("name", "step", "sd_checkpoint", "sd_checkpoint_name") if k in d}
        return "a1111-pt", {str(name): _as_matrix(tensors[0], path, "string_to_param")}, meta
    if set(d) >= {"clip_l", "clip_g"}:  # SDXL: one tensor per text encoder
        return "sdxl", {k: _as_matrix(d[k], path, k) for k in ("clip_l", "clip_g")}, {}
    if not d:
        raise EmbeddingFileError(f"{path}: holds no tensors")
    tensors = {str(k): v for k, v in d.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise EmbeddingFileError(f"{path}: unknown format (keys {sorted(map(str, d))[:5]}; no tensors, no "
                                 "`string_to_param`, no `clip_l`/`clip_g`)")
    return "diffusers", {k: _as_matrix(v, path, k) for k, v in tensors.items()}, {}


def _not_a_file(path: Path) -> str | None:
    """What `path` is when it is not a regular file (a folder, a symlink loop, a FIFO…), in words; None for a file.
    Checked before opening: a FIFO would block the reader forever, a loop reads as "no such file"."""
    import errno
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop, not an embedding file"
        if path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        return "no such file" if e.errno == errno.ENOENT else f"cannot be read ({e.strerror})"
    kinds = [(stat.S_ISDIR, "is a folder"), (stat.S_ISFIFO, "is a FIFO (named pipe)"), (stat.S_ISSOCK, "is a socket"),
             (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device")]
    for test, words in kinds:
        if test(mode):
            return f"{words}, not an embedding file"
    return None


# An embedding holds a few vectors (75 × 1280 at most in the files people share); a file declaring more values
# than this is summarized by `vw inspect` in bounded memory (stream_rows) and refused by every other reader.
MAX_VALUES = 1 << 22  # 4,194,304 values: 16 MB of float32


class EmbeddingTooLarge(EmbeddingFileError):
    """A safetensors file whose header declares more values than an embedding holds (see MAX_VALUES)."""

    def __init__(self, path: Path, shapes: dict[str, list[int]]):
        self.path, self.shapes = path, shapes
        name, shape = max(shapes.items(), key=lambda kv: _count(kv[1]))
        super().__init__(f"{path}: entry `{name}` declares shape {shape} ({_count(shape):,} values), more than an "
                         f"embedding holds (at most {MAX_VALUES:,} are read); `vw inspect` summarizes such a file")


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def declared_shapes(path: str | os.PathLike) -> dict[str, list[int]]:
    """Each tensor's shape as a safetensors file's header declares it (no tensor data is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise EmbeddingFileError(f"{path}: not a readable safetensors file ({e})") from None


_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stream_rows(path: str | os.PathLike, name: str, rows: int = 8192):
    """The rows of the 2-D tensor `name` of a safetensors file, `rows` at a time as float32 [k, d]. Plain reads,
    not a memory map (whose pages count towards the process's memory): one chunk is held at a time."""
    path = Path(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        info = json.loads(f.read(n))[name]
        dtype, (count, width), (start, _) = _FLOAT_DTYPES.get(info["dtype"]), info["shape"], info["data_offsets"]
        if dtype is None:
            raise EmbeddingFileError(f"{path}: entry `{name}` has dtype {info['dtype']}; expected floating point")
        row_bytes = width * dtype.itemsize
        f.seek(8 + n + start)
        for i in range(0, count, rows):
            k = min(rows, count - i)
            buf = f.read(k * row_bytes)
            if len(buf) != k * row_bytes:
                raise EmbeddingFileError(f"{path}: entry `{name}` ends at row {i + len(buf) // row_bytes} of the "
                                         f"{count} its header declares (a truncated file)")
            yield torch.frombuffer(bytearray(buf), dtype=dtype).reshape(k, width).to(torch.float32)


def read_embedding(path: str | os.PathLike, max_values: int = MAX_VALUES) -> Embedding:
    """Read any supported embedding file; clear errors for unknown formats, bad shapes, NaNs, pickle payloads,
    special files and safetensors files declaring more than `max_values` values (EmbeddingTooLarge)."""
    path = Path(path)
    problem = _not_a_file(path)
    if problem:
        raise EmbeddingFileError(f"{path}: {problem}")
    suffix = path.suffix.lower()
    if suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
        _check_magic(path, suffix)
    if suffix == ".safetensors":
        shapes = declared_shapes(path)
        if any(_count(s) > max_values for s in shapes.values()):
            raise EmbeddingTooLarge(path, shapes)
        raw, header = _load_safetensors(path)
        kind, tokens, meta = _tokens_from_dict(raw, path)
        side = sidecar_path(path)
        if header.get("format") == "visual-words" or side.exists():
            kind = "visual-words"
            if side.exists():
                try:
                    meta = json.loads(side.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise EmbeddingFileError(f"{side}: sidecar is not valid JSON ({e})") from None
                if not isinstance(meta, dict):
                    raise EmbeddingFileError(f"{side}: sidecar is not a JSON object")
                problem = damage(path)
                if problem:
                    raise EmbeddingFileError(problem)
        elif kind == "diffusers":
            kind = "diffusers-safetensors"
    elif suffix in (".bin", ".pt", ".pth", ".ckpt"):
        raw = _load_pickle(path)
        if isinstance(raw, torch.Tensor):
            kind, tokens, meta = "tensor", {path.stem: _as_matrix(raw, path, path.stem)}, {}
        elif isinstance(raw, dict):
            kind, tokens, meta = _tokens_from_dict(raw, path)
            if kind == "diffusers":
                kind = "diffusers-bin"
        else:
            raise EmbeddingFileError(f"{path}: unknown format (a pickled {type(raw).__name__})")
    else:
        raise EmbeddingFileError(f"{path}: unknown embedding format `{suffix}` (supported: .safetensors, .bin, .pt)")
    for name, t in tokens.items():
        _check_finite(t, path, name)
    return Embedding(path=path, format=kind, tokens=tokens, meta=meta)


def check_width(emb: Embedding, token: str, width: int, model_key: str) -> torch.Tensor:
    """The token's vectors, or a clear error when their width is not the model's."""
    t = emb.tokens[token]
    if t.shape[-1] != width:
        raise EmbeddingFileError(f"{emb.path}: token `{token}` has width {t.shape[-1]}, but model `{model_key}` "
                                 f"has width {width} (use `vw transfer` to map it)")
    return t
