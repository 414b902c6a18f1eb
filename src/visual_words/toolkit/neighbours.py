"""Where vectors sit in a model's token table: nearest words by L2 and by cosine, and the ε-ball statistics
(distance to an init word in units of its d_nn, rank, tokens inside δ-balls), all from the table's own searches
(`TokenTable`, models/token_table.py)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from visual_words.models.token_table import TokenTable

PAPER_DELTAS = (0.1, 0.2, 0.5, 1.0)  # the paper's ε-ball radii, in units of d_nn(init) (docs/paper.md §4.1)


def vector_stats(vectors: torch.Tensor, table: TokenTable, name_of: Callable[[int], str], init_id: int | None = None,
                 k: int = 5, deltas: Sequence[float] = PAPER_DELTAS) -> list[dict]:
    """One dict per vector of `vectors` [n, d] against `table`: norm, nearest words (L2, cosine), how far the
    nearest word is in units of its own d_nn, and, given `init_id`, the ε-ball statistics around that init word."""
    vecs = torch.as_tensor(vectors, dtype=torch.float32)
    n = vecs.shape[0]
    k = max(1, min(k, len(table)))
    deltas = sorted(float(d) for d in deltas)
    # TokenTable.ball measures against an anchor; without an init word the anchor fields are not used.
    anchors = np.full(n, init_id if init_id is not None else 0, dtype=np.int64)
    radii = None
    if init_id is not None:
        d_nn_init = float(table.d_nn([init_id])[0])
        radii = np.outer(np.full(n, d_nn_init), deltas)
    st = table.ball(vecs, anchors, radii, k=k)
    cos_ids, cos_vals = table.nearest(vecs, k, metric="cosine")
    top = st["nearest_ids"][:, 0]
    d_nn_top = table.d_nn(top)
    out = []
    for i in range(n):
        row = {
            "index": i,
            "norm": float(torch.linalg.vector_norm(vecs[i].double())),
            "nearest_l2": [{"id": int(j), "token": name_of(int(j)), "distance": float(d)}
                           for j, d in zip(st["nearest_ids"][i], st["nearest_dists"][i])],
            "nearest_cosine": [{"id": int(j), "token": name_of(int(j)), "cosine": float(c)}
                               for j, c in zip(cos_ids[i], cos_vals[i])],
        }
        rel_top = float(st["nearest_dists"][i, 0] / d_nn_top[i]) if d_nn_top[i] > 0 else float("inf")
        row["nearest_word"] = {"id": int(top[i]), "token": name_of(int(top[i])),
                               "distance": float(st["nearest_dists"][i, 0]), "d_nn": float(d_nn_top[i]),
                               "relative": rel_top}
        if init_id is not None:
            rel = float(st["dist_anchor"][i] / d_nn_init) if d_nn_init > 0 else float("inf")
            row["init"] = {
                "id": int(init_id), "token": name_of(int(init_id)), "d_nn": d_nn_init,
                "distance": float(st["dist_anchor"][i]), "relative": rel, "cosine": float(st["cos_anchor"][i]),
                "rank": int(st["anchor_rank"][i]), "nearest_is_init": bool(st["nearest_is_anchor"][i]),
                "inside": {f"{d:g}": rel <= d for d in deltas},
                "tokens_within": {f"{d:g}": int(c) for d, c in zip(deltas, st["counts"][i])},
            }
        out.append(row)
    return out
