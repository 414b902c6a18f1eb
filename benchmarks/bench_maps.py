"""Fitting all six transfer maps at the paper's sizes vs numpy.linalg.lstsq on the same data, in one process.

Tables: random fp32 token tables of the three task models' shapes — 49,408 × 1024 (SD-2.1), × 512 (OWLv2),
× 768 (DFN CLIP) — paired over the 49,406 non-special tokens of the shared CLIP vocabulary.

- ours: `fit_pairs(…, quality=False)`: fp64 normal equations; each table's Gram matrix and each pair's cross
  product is computed once and shared by both directions (6 GEMMs + 6 small Cholesky solves).
- baseline: `numpy.linalg.lstsq` (LAPACK gelsd) on the same fp64 rows, once per ordered pair.

The two solutions are compared (max |ΔW|). Also reported: the full `maps` stage work per table set (held-out fit +
R² + retrieval@1 in the whole target table + final fit), which is what `vw maps` spends.

    vw bench maps            # ~1-3 min on 2 cores
"""

from __future__ import annotations

import time

import numpy as np
import torch

from visual_words.models.token_table import TokenTable, is_special
from visual_words.tokenizer import clip_tokenizer
from visual_words.transfer.fitting import fit_pairs
from visual_words.transfer.vocab import shared_rows

WIDTHS = {"sd21": 1024, "owlv2": 512, "dfn-clip": 768}  # text widths of the paper's three task models
V = 49408


def _tables() -> list[TokenTable]:
    vocab = {t: i for t, i in clip_tokenizer().get_vocab().items() if not is_special(t)}
    g = torch.Generator().manual_seed(0)
    return [TokenTable(torch.randn(V, d, generator=g) * 0.02, vocab=vocab, key=k) for k, d in WIDTHS.items()]


def test_bench_maps(benchmark, report_ratio):
    tables = _tables()
    by_key = {t.key: t for t in tables}

    ours = {}

    def fit_ours():
        ours.update(fit_pairs(tables, quality=False))

    benchmark.pedantic(fit_ours, rounds=1, iterations=1)
    t_ours = benchmark.stats.stats.median
    assert len(ours) == 6

    # The same rows, in fp64 (the precision ours solves in), one lstsq per ordered pair.
    rows = {k: shared_rows(t.vocab, t.vocab, V, V)[0] for k, t in by_key.items()}
    x64 = {k: by_key[k].weights[torch.from_numpy(rows[k])].double().numpy() for k in by_key}
    t0 = time.perf_counter()
    ref = {(a, b): np.linalg.lstsq(x64[a], x64[b], rcond=None)[0] for (a, b) in ours}
    t_lstsq = time.perf_counter() - t0
    max_diff = max(float(np.abs(ours[p].weight - ref[p]).max()) for p in ours)
    max_w = max(float(np.abs(ref[p]).max()) for p in ours)
    assert max_diff <= 1e-8 * max(1.0, max_w), max_diff

    t0 = time.perf_counter()
    staged = fit_pairs(tables, holdout_fraction=0.1, seed=0, quality=True)
    t_stage = time.perf_counter() - t0
    r2 = max(abs(m.meta["quality"]["r2"]) for m in staged.values())

    report_ratio("maps", t_ours / t_lstsq, ours_s=t_ours, lstsq_s=t_lstsq, max_abs_diff=max_diff,
                 stage_with_quality_s=t_stage, max_abs_heldout_r2=r2, tokens=len(rows["sd21"]))
