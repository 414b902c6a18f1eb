"""The paper's published numbers (Fig. 3, Fig. 6, the §5 headline shares), kept as data in
registry/paper_numbers.yaml, read here at the foundation layer so that every layer above (the toolkit's facts, the
claims, the report) reads one copy:

    from visual_words.paper import paper_table, claims, raw
    paper_table()   # one row per (figure, dataset, trained task, evaluated task, δ): value and CI
    claims()        # the §5 "reaches up to X % of in-domain" shares, with their dataset
"""

from __future__ import annotations

import functools
import math
from importlib import resources

import pandas as pd
import yaml

PAPER_NUMBERS = "paper_numbers.yaml"  # in visual_words.registry
COLUMNS = ["figure", "dataset", "trained_task", "eval_task", "delta", "metric", "transferred", "paper",
           "paper_ci_low", "paper_ci_high"]


@functools.cache
def raw() -> dict:
    return yaml.safe_load(resources.files("visual_words.registry").joinpath(PAPER_NUMBERS).read_text())


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
