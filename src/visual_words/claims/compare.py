"""Ours next to the paper's, per cell (dataset × trained-for task × evaluated task × δ): a description, not a
verdict (the claims' verdicts come from claims/interval.py; comparison.csv shows this table).

A cell agrees when our mean lies inside the paper's 95 % CI where the paper gives one, else within
`report.tolerance` of the paper's value (Fig. 6 and a few Fig. 3 cells have no CI). Cells outside are flagged.
Paper cells this profile did not run are kept, with status "not run", so the table always covers the paper.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from visual_words.tasks import TASKS, task

KEY = ["dataset", "trained_task", "eval_task", "delta"]
COLUMNS = ["figure", "metric", *KEY, "transferred", "n", "ours", "ours_ci_low", "ours_ci_high", "paper",
           "paper_ci_low", "paper_ci_high", "diff", "basis", "agrees", "status"]


def _delta_key(d) -> float:
    d = float(d)
    return math.inf if math.isinf(d) else round(d, 6)


def compare(cells: pd.DataFrame, paper: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """`cells`: our per-cell statistics (evaluate.stats.summarize: KEY + n, mean, ci_low, ci_high); `paper`:
    visual_words.paper.paper_table(). One row per paper cell (+ our cells the paper has no number for)."""
    ours = cells.rename(columns={"mean": "ours", "ci_low": "ours_ci_low", "ci_high": "ours_ci_high"}).copy()
    theirs = paper.copy()
    for df in (ours, theirs):
        df["_d"] = [_delta_key(d) for d in df["delta"]]
    ours = ours.drop(columns=["delta", "metric", "transferred"], errors="ignore")
    m = theirs.merge(ours, how="outer", left_on=["dataset", "trained_task", "eval_task", "_d"],
                     right_on=["dataset", "trained_task", "eval_task", "_d"])
    m["delta"] = m["_d"]
    m["transferred"] = m["trained_task"] != m["eval_task"]
    m["diff"] = m["ours"] - m["paper"]
    has_ci = m["paper_ci_low"].notna() & m["paper_ci_high"].notna()
    m["basis"] = np.where(has_ci, "paper CI", f"±{tolerance:g}")
    inside_ci = (m["ours"] >= m["paper_ci_low"]) & (m["ours"] <= m["paper_ci_high"])
    within_tol = (m["diff"].abs() <= tolerance + 1e-12)
    ran = m["ours"].notna()
    compared = ran & m["paper"].notna()
    agrees = np.where(has_ci, inside_ci, within_tol)
    m["agrees"] = pd.array(np.where(compared, agrees, pd.NA), dtype="boolean")
    m["status"] = np.select(
        [~ran, m["paper"].isna(), m["agrees"].fillna(False).astype(bool), has_ci],
        ["not run", "not in paper", "agrees", "outside paper CI"], default="outside tolerance")
    m["figure"] = m["figure"].fillna("")
    m["metric"] = m["metric"].fillna(m["eval_task"].map({t: task(t).metric for t in TASKS}))
    m["n"] = m["n"].fillna(0).astype(int) if "n" in m else 0
    order = {t: i for i, t in enumerate(TASKS)}
    m = m.assign(_e=m["eval_task"].map(order), _t=m["trained_task"].map(order))
    m = m.sort_values(["figure", "_e", "dataset", "_t", "_d"]).reset_index(drop=True)
    return m[COLUMNS]


def counts(comp: pd.DataFrame) -> dict[str, int]:
    """How many cells were compared, agree, are flagged, were not run."""
    s = comp["status"].value_counts()
    flagged = int(s.get("outside paper CI", 0) + s.get("outside tolerance", 0))
    return {"compared": int(s.get("agrees", 0)) + flagged, "agree": int(s.get("agrees", 0)), "flagged": flagged,
            "not_run": int(s.get("not run", 0)), "not_in_paper": int(s.get("not in paper", 0))}
