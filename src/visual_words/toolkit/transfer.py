"""`vw transfer`: move a textual-inversion embedding into another model through the linear map between the two
models' token tables (docs/paper.md §5), and say honestly what that is worth.

    result = transfer_embedding(read_embedding(path), load_model("tiny-clip"), load_model("tiny-sd"), cfg, out)

The map comes from `transfer.map_between`: the cached map file under `maps.out_dir` when it was fitted on these
very tables (hashes match), otherwise fitted now on the shared vocabulary with the `maps` settings (estimator,
held-out share for R² and retrieval@1) and cached. The output is our embedding format — safetensors
`{token: [n, d]}`, which diffusers' `load_textual_inversion` loads as it is (SD family), and which the project's
readers load for every family — with a sidecar naming the source, the map and its held-out quality, the nearest
target words of the mapped vectors, and the paper's finding about transferred tokens as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visual_words.embeddings import Embedding, EmbeddingFileError, check_width, sidecar_path, write_embedding
from visual_words.toolkit.facts import paper_finding
from visual_words.toolkit.inspection import json_safe, meta_summary, select_tokens
from visual_words.toolkit.neighbours import vector_stats

POOR_R2 = 0.1  # below this held-out R², say plainly that the map carries (almost) nothing


@dataclass
class TransferResult:
    path: Path  # the written embedding (its sidecar is sidecar_path(path))
    token: str  # the token name in the written file
    vectors: torch.Tensor  # [n, d_dst] the mapped vectors
    map_file: Path
    map_reused: bool  # True: a cached map file was used; False: fitted now (and cached)
    sidecar: dict[str, Any]  # what the sidecar says (map, quality, nearest words, warning)

    @property
    def warning(self) -> str:
        return self.sidecar["warning"]


def default_output(emb: Embedding, dst_key: str) -> Path:
    """`<input stem>.<target key>.safetensors` in the current folder (inputs often sit in read-only folders)."""
    return Path.cwd() / f"{emb.path.stem}.{dst_key}.safetensors"


def check_output(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing output (or its sidecar) unless forced; the output must be .safetensors."""
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the output is written as safetensors; give it a .safetensors name")
    for p in (out, sidecar_path(out)):
        if p.exists() and not force:
            raise ValueError(f"{p}: already exists; pass --force to overwrite it")
    from visual_words.io import check_writable

    check_writable(out.parent)  # a read-only folder fails here, before any model is loaded


def pick_token(emb: Embedding, token: str | None, width: int, model_key: str) -> tuple[str, torch.Tensor]:
    """The one token to transfer (SDXL: the part of the source model's width), checked against that width."""
    tokens = select_tokens(emb, token, width)
    if len(tokens) != 1:
        raise EmbeddingFileError(f"{emb.path}: holds {len(tokens)} tokens ({', '.join(tokens)}); pick one with --token")
    name = next(iter(tokens))
    return name, check_width(emb, name, width, model_key)


def _stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


def _same_map(path: Path, lmap) -> bool:
    from visual_words.transfer import load_map

    try:
        meta = load_map(path).meta
    except (OSError, ValueError):
        return False
    return all(meta.get(k) == lmap.meta.get(k) for k in ("src_table_hash", "dst_table_hash"))


def quality_sentence(lmap) -> str:
    q = lmap.meta.get("quality") or {}
    n_fit = lmap.meta.get("n_fit_tokens", "?")
    if q.get("r2") is None:
        return (f"The map ({lmap.estimator}, fitted on {n_fit} shared tokens) has no held-out quality "
                "(maps.holdout_fraction = 0).")
    text = (f"The map ({lmap.estimator}, fitted on {n_fit} shared tokens) reproduces {q['n_heldout']} held-out "
            f"vocabulary words with R² = {q['r2']:.3f} and nearest-word retrieval@1 = {q['retrieval_at_1']:.3f}")
    if q["r2"] < POOR_R2:
        text += (": the two tables share almost no linear structure, so the mapped vectors keep almost nothing of "
                 "the source")
    return text + "."


def transfer_embedding(emb: Embedding, src: Any, dst: Any, cfg: Any, out: str | Path, token: str | None = None,
                       name: str | None = None, force: bool = False, k: int = 5) -> TransferResult:
    """Map `emb`'s token from loaded model `src` into `dst` and write it to `out` (+ sidecar), atomically."""
    from visual_words.models.adapters import adapter_for
    from visual_words.models.token_table import TokenTable
    from visual_words.provenance import provenance
    from visual_words.transfer import map_between, map_path

    out = Path(out)
    check_output(out, force)
    if src.entry.key == dst.entry.key:
        raise ValueError(f"--from and --to are the same model `{src.entry.key}`; nothing to transfer")
    sa, da = adapter_for(src), adapter_for(dst)
    tok_name, vecs = pick_token(emb, token, sa.width, src.entry.key)

    from visual_words.cachedir import user_cache_dir

    cache = user_cache_dir("maps")
    candidates = [map_path(cfg, src.entry.key, dst.entry.key)]
    candidates.append(cache / candidates[0].name)
    before = {p: _stamp(p) for p in candidates}
    lmap = map_between(cfg, src, dst, cache_dir=cache)
    # the file the map came from: the study's (read only) when it fitted these tables, else the user cache
    map_file = next((p for p in candidates if before[p] is not None and _stamp(p) == before[p]
                     and _same_map(p, lmap)), candidates[1])
    reused = before[map_file] is not None and _stamp(map_file) == before[map_file]
    mapped = lmap(vecs).to(torch.float32)
    if not torch.isfinite(mapped).all():
        raise EmbeddingFileError(f"{emb.path}: token `{tok_name}` maps to non-finite values through {map_file}")

    dst_table = TokenTable.of(da)
    anchor = emb.meta.get("anchor")
    init_id = None
    if anchor:
        try:
            init_id = da.anchor_id(anchor)
        except ValueError:
            init_id = None  # the word is not one token of the target model: no distance to it
    stats = vector_stats(mapped, dst_table, da.token_name, init_id, k)
    nearest = [[{k_: r[k_] for k_ in ("token", "id", "distance")} for r in v["nearest_l2"]] for v in stats]
    words = "; ".join(f"vector {i}: " + ", ".join(repr(r["token"]) for r in row[:3]) for i, row in enumerate(nearest))
    warning = (paper_finding(src.entry.family, dst.entry.family) + " " + quality_sentence(lmap)
               + f" Nearest {dst.entry.key} words of the mapped vectors: {words}.")
    out_token = name or (f"<{emb.path.stem}>" if emb.format == "sdxl" else tok_name)
    src_hash = lmap.meta.get("src_table_hash") or sa.table_identity
    meta = {
        "model_key": dst.entry.key, "model_id": dst.entry.id, "model_revision": dst.entry.revision,
        "token_table_hash": dst_table.identity, "num_vectors": int(mapped.shape[0]),
        **({"anchor": anchor} if anchor else {}),
        "transferred_from": {"file": str(emb.path), "format": emb.format, "token": tok_name,
                             "model_key": src.entry.key, "model_id": src.entry.id,
                             "model_revision": src.entry.revision, "token_table_hash": src_hash,
                             "meta": meta_summary(emb.meta)},
        "map": {"file": str(map_file), "reused": reused, "estimator": lmap.estimator,
                **{k_: lmap.meta[k_] for k_ in ("src_table_hash", "dst_table_hash", "n_fit_tokens",
                                                "holdout_fraction", "holdout_seed", "ridge_alpha", "quality")
                   if k_ in lmap.meta}},
        "nearest_tokens": nearest,
        "vector_stats": stats,
        "warning": warning,
        "provenance": provenance(cfg, "transfer"),
    }
    meta = json_safe(meta)
    write_embedding(out, out_token, mapped, meta)
    return TransferResult(path=out, token=out_token, vectors=mapped, map_file=map_file, map_reused=reused,
                          sidecar=meta)
