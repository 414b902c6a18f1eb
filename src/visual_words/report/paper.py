"""The paper's Fig. 3 and Fig. 6 numbers (paper_numbers.yaml beside this file) as one tidy table."""

from __future__ import annotations

import functools
import math
from importlib import resources

import pandas as pd
import yaml

COLUMNS = ["figure", "dataset", "trained_task", "eval_task", "delta", "metric", "transferred", "paper",
           "paper_ci_low", "paper_ci_high"]


@functools.cache
def raw() -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath("paper_numbers.yaml").read_text())


def _value(v) -> tuple[float, float, float]:
    if isinstance(v, (list, tuple)):
        if len(v) != 3:
            raise ValueError(f"paper_numbers.yaml: a value with a CI must be [value, low, high], got {v!r}")
        return float(v[0]), float(v[1]), float(v[2])
    return float(v), math.nan, math.nan


def paper_table() -> pd.DataFrame:
    """One row per (figure, dataset, trained task, evaluated task, δ): the paper's value and CI (NaN if none).
    δ is inf for Fig. 3 (unconstrained), as in evaluation.csv."""
    data = raw()
    metrics, datasets = data["metrics"], data["datasets"]
    rows = []
    for r in data["fig3"]:
        for ds in datasets:
            v, lo, hi = _value(r[ds])
            rows.append(["fig3", ds, r["trained"], r["eval"], math.inf, metrics[r["eval"]], r["trained"] != r["eval"],
                         v, lo, hi])
    deltas = [float(d) for d in data["fig6"]["deltas"]]
    for r in data["fig6"]["rows"]:
        for ds in datasets:
            values = r[ds]
            if len(values) != len(deltas):
                raise ValueError(f"paper_numbers.yaml: fig6 {r['trained']}→{r['eval']} {ds} has {len(values)} values "
                                 f"for {len(deltas)} deltas")
            for d, v in zip(deltas, values):
                rows.append(["fig6", ds, r["trained"], r["eval"], d, metrics[r["eval"]], r["trained"] != r["eval"],
                             float(v), math.nan, math.nan])
    return pd.DataFrame(rows, columns=COLUMNS)


def claims() -> list[dict]:
    return list(raw()["claims"])
