"""Fit the maps between every ordered pair of a set of token tables, sharing the expensive products.

For tables A, B, C the six maps need the Gram matrices AᵀA, BᵀB, CᵀC and the cross products AᵀB, AᵀC, BᵀC (the
reverse directions use their transposes): six GEMMs instead of six independent least-squares solves. Each product
is computed separately on the fit rows and the held-out rows, so the held-out quality fit (fit rows only) and the
final map (all shared tokens: fit + held-out moments) both come from the same products.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np
import torch

from visual_words.models.token_table import TokenTable
from visual_words.transfer.estimators import LinearMap, Moments, fit_from_moments, gram
from visual_words.transfer.quality import holdout_split, map_quality
from visual_words.transfer.vocab import shared_rows


def _digest(ids: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(ids).tobytes()).hexdigest()


class _Products:
    """Caches row blocks (fp64), their Gram matrices and cross products, keyed by (table, row ids)."""

    def __init__(self, tables: dict[str, TokenTable]):
        self.tables = tables
        self._rows: dict[tuple[str, str], np.ndarray] = {}
        self._gram: dict[tuple[str, str], np.ndarray] = {}
        self._cross: dict[tuple[str, str, str, str], np.ndarray] = {}

    def rows(self, key: str, ids: np.ndarray) -> tuple[str, np.ndarray]:
        d = _digest(ids)
        if (key, d) not in self._rows:
            self._rows[(key, d)] = self.tables[key].weights[torch.from_numpy(ids)].to(torch.float64).numpy()
        return d, self._rows[(key, d)]

    def moments(self, src: str, src_ids: np.ndarray, dst: str, dst_ids: np.ndarray) -> Moments:
        ds, x = self.rows(src, src_ids)
        dd, y = self.rows(dst, dst_ids)
        if (src, ds) not in self._gram:
            self._gram[(src, ds)] = gram(x)
        if (src, ds, dst, dd) not in self._cross:
            rev = self._cross.get((dst, dd, src, ds))
            self._cross[(src, ds, dst, dd)] = rev.T if rev is not None else x.T @ y
        return Moments(self._gram[(src, ds)], self._cross[(src, ds, dst, dd)], x.sum(0), y.sum(0), x.shape[0])


def fit_pairs(tables: Iterable[TokenTable], pairs: Iterable[tuple[str, str]] | None = None, estimator: str = "ols",
              ridge_alpha: float = 1.0, holdout_fraction: float = 0.1, seed: int = 0, quality: bool = True,
              progress: bool = False) -> dict[tuple[str, str], LinearMap]:
    """Fit a map for each ordered pair (default: all of them) on the non-special tokens both tables share.

    With ``quality``, a first fit on the rows outside a seeded held-out share (``holdout_fraction``) is scored on
    the held-out rows (R², retrieval@1 in the whole target table); the returned map is then fitted on all shared
    rows. Each map's ``meta`` holds the keys, table metadata, estimator settings and quality.
    """
    tables = {t.key: t for t in tables}
    keys = list(tables)
    pairs = list(pairs) if pairs is not None else [(a, b) for a in keys for b in keys if a != b]
    products = _Products(tables)
    out = {}
    it = pairs
    if progress:
        from tqdm import tqdm

        it = tqdm(pairs, desc="maps", unit="map")
    for src, dst in it:
        ta, tb = tables[src], tables[dst]
        src_ids, dst_ids = shared_rows(ta.vocab, tb.vocab, len(ta), len(tb))
        q = {"r2": None, "retrieval_at_1": None, "n_heldout": 0}
        if quality and holdout_fraction > 0:
            fit_pos, held_pos = holdout_split(len(src_ids), holdout_fraction, seed)
            m_fit = products.moments(src, src_ids[fit_pos], dst, dst_ids[fit_pos])
            m_held = products.moments(src, src_ids[held_pos], dst, dst_ids[held_pos])
            probe = fit_from_moments(m_fit, estimator, ridge_alpha)
            q = map_quality(probe, products.rows(src, src_ids[held_pos])[1], products.rows(dst, dst_ids[held_pos])[1],
                            tb, dst_ids[held_pos])
            m_all = m_fit + m_held
        else:
            m_all = products.moments(src, src_ids, dst, dst_ids)
        lmap = fit_from_moments(m_all, estimator, ridge_alpha)
        lmap.meta.update({
            "src_key": src, "dst_key": dst,
            **{f"src_{k}": v for k, v in ta.meta.items()}, **{f"dst_{k}": v for k, v in tb.meta.items()},
            "estimator": estimator, "n_fit_tokens": int(len(src_ids)),
            "holdout_fraction": holdout_fraction if quality else 0.0, "holdout_seed": seed,
            "quality": q,
        })
        out[(src, dst)] = lmap
    return out

