"""Cell statistics for the figures (docs/design.md D11): per (dataset, trained task, evaluated task, δ), the mean over
the cell's trials and a percentile-bootstrap confidence interval — what seaborn's bar/line plots draw by default —
computed by ``scipy.stats.bootstrap(method="percentile")`` with a fixed seed."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

CELL = ("dataset", "trained_task", "eval_task", "delta")


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
    """Per-cell statistics of an evaluation table (a pandas DataFrame with the evaluation.csv columns):
    one row per (dataset, trained_task, eval_task, delta) with metric, transferred, n, mean, ci_low, ci_high."""
    import pandas as pd

    out = []
    for key, g in rows.groupby(list(CELL), sort=True, dropna=False):
        mean, lo, hi = bootstrap_ci(g["value"].astype(float).tolist(), resamples, seed, level)
        out.append({**dict(zip(CELL, key)), "metric": g["metric"].iloc[0],
                    "transferred": bool(g["transferred"].iloc[0]),
                    "n": int(g["value"].notna().sum()), "mean": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out, columns=[*CELL, "metric", "transferred", "n", "mean", "ci_low", "ci_high"])
