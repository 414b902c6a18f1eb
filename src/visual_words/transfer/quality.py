"""How good a map is, on tokens it was not fitted on: R² and nearest-token retrieval@1 (docs/design.md D8).

- R²: scikit-learn's ``r2_score`` with ``multioutput="variance_weighted"``, i.e. ``1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖²`` over
  the held-out rows and all target dimensions.
- retrieval@1: a held-out token counts as retrieved when its mapped vector's nearest row of the *whole* target
  table (L2, the distance the ε-ball uses) is the token itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from visual_words.transfer.estimators import LinearMap, as_float64


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``range(n)`` into (fit, held-out) positions; the held-out share is ``fraction`` (rounded
    up)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"maps.holdout_fraction must be in [0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    k = math.ceil(fraction * n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def r2(y_true: Any, y_pred: Any) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(as_float64(y_true), as_float64(y_pred), multioutput="variance_weighted"))


def nearest_rows(queries: torch.Tensor, table: torch.Tensor, block: int = 512) -> torch.Tensor:
    """Index of each query's L2-nearest row of ``table``: ‖t‖² − 2 q·t ranks the rows, one fused GEMM (addmm) per
    block of queries, so the [block, V] score matrix is written once."""
    queries = queries.to(torch.float32)
    table = table.to(torch.float32)
    t_sq = (table * table).sum(1).expand(min(block, max(len(queries), 1)), -1)
    out = []
    for i in range(0, queries.shape[0], block):
        q = queries[i : i + block]
        scores = torch.addmm(t_sq[: len(q)], q, table.T, alpha=-2.0)
        out.append(torch.argmin(scores, dim=1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def retrieval_at_1(mapped: Any, target_table: Any, target_ids: Any) -> float:
    """Share of mapped vectors whose nearest target-table row is their own token (``target_ids``)."""
    mapped = torch.as_tensor(np.asarray(mapped)) if not isinstance(mapped, torch.Tensor) else mapped
    table = torch.as_tensor(np.asarray(target_table)) if not isinstance(target_table, torch.Tensor) else target_table
    ids = torch.as_tensor(np.asarray(target_ids), dtype=torch.long)
    if len(ids) == 0:
        return float("nan")
    return float((nearest_rows(mapped, table) == ids).to(torch.float64).mean())


def map_quality(lmap: LinearMap, x_held: Any, y_held: Any, target_table: Any, target_ids: Any) -> dict[str, float]:
    """R² and retrieval@1 of ``lmap`` on held-out paired rows (``target_ids``: their rows in ``target_table``)."""
    pred = lmap.apply(as_float64(x_held))
    return {"r2": r2(y_held, pred), "retrieval_at_1": retrieval_at_1(pred.astype(np.float32), target_table, target_ids),
            "n_heldout": int(len(target_ids))}
