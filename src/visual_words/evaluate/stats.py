"""Cell statistics for the figures (docs/design.md D11): per (dataset, trained task, evaluated task, δ) — and per
source and evaluated model, so a cell never pools words of two models — the mean over the cell's trials and a
percentile-bootstrap confidence interval (what seaborn's bar/line plots draw by default), computed by
``scipy.stats.bootstrap(method="percentile")`` with a fixed seed. (Two profiles never share a table: each writes
its own evaluation.csv under artifacts/<profile>/.)"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

CELL = ("dataset", "trained_task", "eval_task", "delta")  # the paper's cell
MODELS = ("source_model", "eval_model")  # evaluation.csv's models: a cell of ours is also one (source, evaluated) pair


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its ``level`` percentile-bootstrap interval over ``resamples`` resamples.

    NaN values (an undefined metric) are dropped. One value has no interval: ``(v, nan, nan)``; none: all NaN.
    Identical values give the degenerate interval ``(v, v, v)``.
    """
    import scipy.stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if len(x) == 1:
        return (mean, math.nan, math.nan)
    if np.all(x == x[0]):  # scipy warns on degenerate data; the interval is the value itself
        return (mean, mean, mean)
    res = scipy.stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=level, method="percentile",
                                rng=np.random.default_rng(seed))
    return (mean, float(res.confidence_interval.low), float(res.confidence_interval.high))


def summarize(rows: Any, resamples: int = 1000, seed: int = 0, level: float = 0.95):
    """Per-cell statistics of an evaluation table (a pandas DataFrame with the evaluation.csv columns): one row per
    (dataset, trained_task, eval_task, delta, source_model, eval_model) with metric, transferred, n, mean, ci_low,
    ci_high. A table without the model columns (a hand-made one) is grouped by the paper's cell alone."""
    import pandas as pd

    keys = [*CELL, *(m for m in MODELS if m in rows.columns)]
    out = []
    for key, g in rows.groupby(keys, sort=True, dropna=False):
        mean, lo, hi = bootstrap_ci(g["value"].astype(float).tolist(), resamples, seed, level)
        out.append({**dict(zip(keys, key)), "metric": g["metric"].iloc[0],
                    "transferred": bool(g["transferred"].iloc[0]),
                    "n": int(g["value"].notna().sum()), "mean": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out, columns=[*keys, "metric", "transferred", "n", "mean", "ci_low", "ci_high"])
