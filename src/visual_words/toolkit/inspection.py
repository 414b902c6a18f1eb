"""`vw inspect`: what an embedding file holds, and, given a model, where its vectors sit in that model's table.

    emb = read_embedding(path)
    report = inspect_embedding(emb)                                   # format, tokens, shapes, norms, fitting models
    report = inspect_embedding(emb, load_model("tiny-clip"), init="cat", k=5)   # + neighbours and ε-ball statistics
    print(format_report(report))                                      # or json.dumps(report)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from visual_words import registry
from visual_words.embeddings import Embedding, EmbeddingFileError, check_width
from visual_words.errors import printable
from visual_words.toolkit.facts import COMMUNITY_WIDTHS
from visual_words.toolkit.neighbours import PAPER_DELTAS, vector_stats

# Sidecar / file fields worth showing (ours, A1111's); the rest stays in --json's `meta`.
SHOWN_META = ("model_key", "model_id", "anchor", "delta", "d_nn", "seed", "steps", "final_loss", "token_table_hash",
              "name", "step", "sd_checkpoint_name", "transferred_from", "map")


def select_tokens(emb: Embedding, token: str | None = None, width: int | None = None) -> dict[str, torch.Tensor]:
    """The tokens to look at: `token` if named; for an SDXL file with a model width, the part of that width
    (clip_l 768 / clip_g 1280); otherwise every token of the file."""
    if token is not None:
        if token not in emb.tokens:
            raise EmbeddingFileError(f"{emb.path}: no token `{token}` (the file holds: {', '.join(emb.tokens)})")
        return {token: emb.tokens[token]}
    if emb.format == "sdxl" and width is not None:
        match = {k: v for k, v in emb.tokens.items() if v.shape[-1] == width}
        if match:
            return match
    return dict(emb.tokens)


def fitting_models(width: int) -> dict[str, list[str]]:
    """Which known models a vector width fits: registry keys, and the text encoders community files come from."""
    return {"registry": [k for k, w in registry.text_widths().items() if w == width],
            "community": list(COMMUNITY_WIDTHS.get(width, ()))}


def meta_summary(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: meta[k] for k in SHOWN_META if k in meta}
    trial = meta.get("trial")
    if isinstance(trial, dict) and "id" in trial:
        out["trial_id"] = trial["id"]
    return out


def json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


SHOWN_VECTORS = 16  # vectors listed per token unless every one is asked for (`vw inspect --all-vectors`)


def _norm_summary(norms: list[float], nonfinite: int) -> dict[str, Any]:
    return {"min": min(norms), "mean": sum(norms) / len(norms), "max": max(norms), "nonfinite": nonfinite} \
        if norms else {"nonfinite": nonfinite}


def inspect_large(path: Path, shapes: dict[str, list[int]], all_vectors: bool = False) -> dict[str, Any]:
    """The report of a safetensors file that declares more values than an embedding holds (EmbeddingTooLarge),
    read in chunks: memory stays at one chunk whatever the file's size; the first SHOWN_VECTORS vectors are
    listed (every one with `all_vectors`), and the norms of all of them summarized."""
    from visual_words.embeddings import stream_rows

    report: dict[str, Any] = {"file": str(path), "format": "safetensors", "meta": {}, "tokens": [],
                              "notes": ["the file declares far more values than an embedding holds: read in chunks "
                                        "and summarized; no other command reads it"]}
    for name, shape in shapes.items():
        entry: dict[str, Any] = {"name": name, "shape": list(shape), "width": int(shape[-1]) if shape else 0,
                                 "fits": fitting_models(int(shape[-1])) if shape else {"registry": [], "community": []},
                                 "vectors": []}
        report["tokens"].append(entry)
        if len(shape) != 2:
            report["notes"].append(f"entry `{name}` has shape {shape}; an embedding is [n, d]")
            continue
        norms: list[float] = []
        nonfinite = 0
        for chunk in stream_rows(path, name):
            finite = torch.isfinite(chunk)
            nonfinite += int((~finite).sum())
            n = torch.linalg.vector_norm(torch.where(finite, chunk, 0.0).double(), dim=1).tolist()
            keep = len(n) if all_vectors else max(0, SHOWN_VECTORS - len(entry["vectors"]))
            entry["vectors"] += [{"index": len(norms) + i, "norm": v} for i, v in enumerate(n[:keep])]
            norms += n
        entry["norms"] = _norm_summary(norms, nonfinite)
    return json_safe(report)


def inspect_embedding(emb: Embedding, loaded: Any = None, init: str | None = None, token: str | None = None,
                      k: int = 5, deltas: Sequence[float] = PAPER_DELTAS, all_vectors: bool = False) -> dict[str, Any]:
    """A JSON-ready report. Without `loaded`: format, tokens, shapes, norms, which models the widths fit. With a
    `LoadedModel`: per vector the nearest words (L2 and cosine, decoded), the nearest word's distance in units of
    its d_nn, and — for `init` or the sidecar's recorded `anchor` — the distance to that word in units of
    d_nn(init), its rank and the ε-ball statistics."""
    report: dict[str, Any] = {"file": str(emb.path), "format": emb.format, "meta": meta_summary(emb.meta),
                              "notes": [], "tokens": []}
    if "transferred_from" in emb.meta:
        report["notes"].append("a transferred token: the paper found such tokens act like their nearest shared word, "
                               "not like the concept they were trained on (the sidecar's `warning` says more)")
    adapter = width = None
    if loaded is not None:
        from visual_words.models.adapters import adapter_for
        from visual_words.models.token_table import TokenTable

        adapter = adapter_for(loaded)
        table = TokenTable.of(adapter)
        width = table.width
        e = loaded.entry
        report["model"] = {"key": e.key, "family": e.family, "id": e.id, "width": width,
                           "vocab_size": len(table), "table_hash": table.identity}
        recorded = emb.meta.get("token_table_hash")
        if recorded and recorded != report["model"]["table_hash"]:
            report["notes"].append(f"the file records token-table hash {recorded} "
                                   f"(model `{emb.meta.get('model_key', '?')}`); `{e.key}` has "
                                   f"{report['model']['table_hash']}: the vectors were made in another checkpoint")
    tokens = select_tokens(emb, token, width)
    init_word, init_source = (init, "--init") if init else (emb.meta.get("anchor"), "sidecar")
    init_id = None
    if adapter is not None and init_word:
        try:
            init_id = adapter.anchor_id(init_word)
        except ValueError as err:
            if init_source == "--init":
                raise
            report["notes"].append(f"recorded anchor `{init_word}` not used: {err}")
    if init_id is not None:
        report["init"] = {"word": init_word, "id": init_id, "source": init_source}
    for name, vecs in tokens.items():
        entry: dict[str, Any] = {"name": name, "shape": list(vecs.shape), "width": int(vecs.shape[1]),
                                 "fits": fitting_models(int(vecs.shape[1]))}
        if len(vecs) > SHOWN_VECTORS:
            norms = torch.linalg.vector_norm(vecs.double(), dim=1).tolist()
            entry["norms"] = _norm_summary(norms, 0)  # a reader already refused non-finite values
            vecs = vecs if all_vectors else vecs[:SHOWN_VECTORS]
        if adapter is None:
            entry["vectors"] = [{"index": i, "norm": float(torch.linalg.vector_norm(v.double()))}
                                for i, v in enumerate(vecs)]
        else:
            check_width(emb, name, width, loaded.entry.key)
            entry["vectors"] = vector_stats(vecs, table, adapter.token_name, init_id, k, deltas)
        report["tokens"].append(entry)
    return json_safe(report)


# ---------------------------------------------------------------------------------------------------------------
# Text


def _num(x: Any, fmt: str = ".4f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else str(x)  # "inf" arrives as a string (JSON-safe)


def _words(rows: list[dict], key: str) -> str:
    return " · ".join(f"{r['token']!r} {_num(r[key])}" for r in rows)


def _meta_line(key: str, v: Any) -> str:
    if key == "transferred_from" and isinstance(v, dict):
        return f"model {v.get('model_key')} ({v.get('file')}, token {v.get('token')})"
    if key == "map" and isinstance(v, dict):
        q = v.get("quality") or {}
        return (f"{v.get('estimator')} {v.get('file')}: held-out R² {_num(q.get('r2'))}, "
                f"retrieval@1 {_num(q.get('retrieval_at_1'))}")
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def format_report(report: dict[str, Any]) -> str:
    lines = [f"file:   {report['file']}", f"format: {report['format']}"]
    for k, v in report["meta"].items():
        lines.append(f"  {k}: {_meta_line(k, v)}")
    if "model" in report:
        m = report["model"]
        lines.append(f"model:  {m['key']} ({m['family']}, {m['id']}): width {m['width']}, {m['vocab_size']} tokens, "
                     f"table hash {m['table_hash']}")
    if "init" in report:
        i = report["init"]
        lines.append(f"init:   {i['word']!r} (id {i['id']}, from {i['source']})")
    for note in report["notes"]:
        lines.append(f"note:   {note}")
    for t in report["tokens"]:
        n, d = t["shape"]
        lines.append(f"token {t['name']}: {n} vector{'s' if n != 1 else ''} × {d}")
        fits = t["fits"]["registry"] + t["fits"]["community"]
        lines.append(f"  width {d} fits: {', '.join(fits) if fits else 'no known model'}")
        if "norms" in t:
            ns = t["norms"]
            lines.append(f"  norms of all {n:,} vectors: min {_num(ns.get('min'))}, mean {_num(ns.get('mean'))}, "
                         f"max {_num(ns.get('max'))}"
                         + (f"; {ns['nonfinite']:,} NaN/inf values" if ns["nonfinite"] else ""))
        for v in t["vectors"]:
            lines.append(f"  vector {v['index']}: norm {_num(v['norm'])}")
            if "nearest_l2" not in v:
                continue
            lines.append(f"    nearest (L2):     {_words(v['nearest_l2'], 'distance')}")
            lines.append(f"    nearest (cosine): {_words(v['nearest_cosine'], 'cosine')}")
            w = v["nearest_word"]
            lines.append(f"    nearest word {w['token']!r} at {_num(w['relative'], '.3f')} d_nn({w['token']}) "
                         f"(d_nn {_num(w['d_nn'])})")
            if "init" in v:
                i = v["init"]
                inside = [d for d, ok in i["inside"].items() if ok]
                lines.append(f"    init {i['token']!r}: L2 {_num(i['distance'])} = {_num(i['relative'], '.3f')} "
                             f"d_nn(init) (d_nn {_num(i['d_nn'])}), cosine {_num(i['cosine'])}, rank {i['rank']}"
                             f"{' (init is the nearest word)' if i['nearest_is_init'] else ''}")
                balls = f"inside the δ = {inside[0]} ball" if inside else \
                    f"outside every ball up to δ = {list(i['inside'])[-1]}"
                lines.append(f"    ε-ball: {balls}; tokens within δ·d_nn(init) of the vector: "
                             + ", ".join(f"δ={d}: {c}" for d, c in i["tokens_within"].items()))
        if len(t["vectors"]) < n:
            lines.append(f"  … {n - len(t['vectors']):,} more vectors (--all-vectors lists every one)")
    # Names and metadata come from the file: escape control characters (ANSI escapes, carriage returns, newlines
    # inside a name), so a file cannot recolour the terminal or fake output lines.
    return "\n".join(printable(line) for line in lines)
