"""Map files: safetensors ``{weight [d_src, d_dst] f64, bias [d_dst] f64 (affine only)}`` + a JSON sidecar.

The sidecar ties the map to the two token tables it was fitted on (``src_table_hash``/``dst_table_hash``, as
``visual_words.embeddings.table_hash`` computes them), and records the estimator, the models, how many tokens it was
fitted on and its held-out quality. A map used with another table than its own is refused (``check_tables``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from visual_words.errors import UserError
from visual_words.io import save_safetensors, sha256_file, write_json
from visual_words.transfer.estimators import LinearMap

MAP_FORMAT = "visual-words-map"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
CONTENT_HASH = "file_sha256"  # sidecar field: sha256 of the map file's bytes (load_map checks it)


class MapFileError(UserError, ValueError):
    """A map file that cannot be used; the message names the file and the problem."""


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


def map_filename(src_key: str, dst_key: str, estimator: str) -> str:
    return f"{src_key}__to__{dst_key}.{estimator}{SUFFIX}"


def map_path(cfg: Any, src_key: str, dst_key: str, estimator: str | None = None) -> Path:
    """Where the map from model ``src_key`` to ``dst_key`` (registry keys) lives: ``<maps.out_dir>/…``."""
    return cfg.path(cfg.maps.out_dir) / map_filename(src_key, dst_key, estimator or cfg.maps.estimator)


def save_map(path: str | os.PathLike, lmap: LinearMap) -> Path:
    """Write the map and its sidecar atomically (sidecar last: a map file with a sidecar is complete)."""
    path = Path(path)
    tensors = {"weight": np.ascontiguousarray(lmap.weight, dtype=np.float64)}
    if lmap.bias is not None:
        tensors["bias"] = np.ascontiguousarray(lmap.bias, dtype=np.float64)
    digest = save_safetensors(path, tensors, {"format": MAP_FORMAT, "format_version": str(FORMAT_VERSION),
                                              "estimator": lmap.estimator})
    write_json(sidecar_path(path), {"format": MAP_FORMAT, "format_version": FORMAT_VERSION,
                                    "estimator": lmap.estimator, "src_dim": lmap.d_src, "dst_dim": lmap.d_dst,
                                    **lmap.meta, CONTENT_HASH: digest})
    return path


def load_map(path: str | os.PathLike) -> LinearMap:
    """Read a map file and its sidecar; clear errors for a missing, foreign or damaged file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such map file (run `vw maps` to fit the transfer maps)")
    side = sidecar_path(path)
    if not side.is_file():
        raise MapFileError(f"{path}: the sidecar {side.name} is missing (an interrupted write?); rerun `vw maps`")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapFileError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise MapFileError(f"{side}: not a JSON object")
    want = meta.get(CONTENT_HASH)
    if want is not None and sha256_file(path) != want:
        raise MapFileError(f"{path}: damaged: its content hash differs from the one its sidecar records; "
                           "rerun `vw maps` (the damaged map is never used)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise MapFileError(f"{path}: not a readable safetensors file ({e})") from None
    if header.get("format") != MAP_FORMAT or "weight" not in tensors:
        raise MapFileError(f"{path}: not a visual-words map file (format {header.get('format')!r}, "
                           f"tensors {sorted(tensors)})")
    weight, bias = tensors["weight"], tensors.get("bias")
    if weight.ndim != 2 or (bias is not None and bias.shape != (weight.shape[1],)):
        raise MapFileError(f"{path}: weight {weight.shape} / bias {None if bias is None else bias.shape} do not fit")
    if not np.isfinite(weight).all() or (bias is not None and not np.isfinite(bias).all()):
        raise MapFileError(f"{path}: holds NaN/inf values")
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "src_dim", "dst_dim", CONTENT_HASH)}
    return LinearMap(weight.astype(np.float64), None if bias is None else bias.astype(np.float64),
                     str(header.get("estimator", meta.get("estimator", "ols"))), meta)


def check_tables(lmap: LinearMap, src_hash: str | None, dst_hash: str | None, where: str = "") -> None:
    """Refuse a map fitted on other token tables than the ones at hand (a changed checkpoint means a stale map)."""
    for side, have in (("src", src_hash), ("dst", dst_hash)):
        want = lmap.meta.get(f"{side}_table_hash")
        if have is not None and want is not None and have != want:
            raise MapFileError(f"{where or 'map'}: fitted on a {side} token table with hash {want}, but the table at "
                               f"hand has hash {have} (the checkpoint changed); rerun `vw maps`")
