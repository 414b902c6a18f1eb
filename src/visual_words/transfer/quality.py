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

from visual_words.models.token_table import TokenTable
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


def retrieval_at_1(mapped: Any, target: TokenTable, target_ids: Any) -> float:
    """Share of mapped vectors whose nearest row of the target table is their own token (``target_ids``). The
    nearest row comes from one fp32 GEMM (``TokenTable.nearest(exact=False)``): a tie within fp32 rounding could
    move the share by one row in thousands, not worth the exact search."""
    ids = np.asarray(target_ids, dtype=np.int64)
    if len(ids) == 0:
        return float("nan")
    return float((target.nearest(mapped, exact=False).ids[:, 0] == ids).mean())


def map_quality(lmap: LinearMap, x_held: Any, y_held: Any, target: TokenTable, target_ids: Any) -> dict[str, float]:
    """R² and retrieval@1 of ``lmap`` on held-out paired rows (``target_ids``: their rows in the ``target`` table)."""
    pred = lmap.apply(as_float64(x_held))
    return {"r2": r2(y_held, pred), "retrieval_at_1": retrieval_at_1(pred.astype(np.float32), target, target_ids),
            "n_heldout": int(len(target_ids))}
