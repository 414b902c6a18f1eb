"""The paper's claims (ARTIFACT.md §5), each computed and flagged: claims.yaml holds the definitions, this module
evaluates them. No figure or file I/O here, so the same evaluator serves the report, tests and power studies:

    from visual_words.report.claims import definitions, evaluate_claims
    results = evaluate_claims(cells, eps, tolerance=0.1)     # cells: evaluate.stats.summarize(evaluation table)
    {r.id: r.status for r in results}                         # "pass" | "fail" | "not run" | "not judged"

`cells` has one row per (dataset, trained_task, eval_task, delta) with `mean`, `ci_low`, `ci_high` and `n`; `eps` is
the analysis stage's eps_stats table (or None). Each result says what was compared (`value`, `expected`, the
`tolerance` in words, `checks` = how many comparisons, `failed` = which) so a reader can match it to a cell.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from visual_words.tasks import short

TASKS = ("generation", "detection", "classification")
STATUSES = ("pass", "fail", "not run", "not judged")


@dataclass
class ClaimResult:
    id: str
    claim: str
    test: str
    status: str  # pass | fail | not run | not judged
    tolerance: str  # in words, e.g. "paper CI, else ±0.1"
    expected: str  # the paper's side
    value: Any = None  # ours: a number, or a mapping (per δ, per dataset)
    checks: int = 0  # comparisons made
    failed: list[str] = field(default_factory=list)  # which comparisons failed
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def definitions() -> tuple[dict, ...]:
    """The claim definitions of claims.yaml, in ARTIFACT.md's order."""
    data = yaml.safe_load(resources.files(__package__).joinpath("claims.yaml").read_text())
    return tuple(data["claims"])


def _delta_label(d: float) -> str:
    return "inf" if math.isinf(float(d)) else f"{float(d):g}"


def _tol(defn: dict, tolerance: float) -> float:
    t = defn.get("tolerance", "report")
    return float(tolerance) if t == "report" else float(t)


def _result(defn: dict, status: str, tolerance: str, expected: str, **kw) -> ClaimResult:
    return ClaimResult(defn["id"], defn["claim"], defn["test"], status, tolerance, expected, **kw)


# ---- transfer shares (C2-C5) -------------------------------------------------------------------------------------


def transfer_shares(cells: pd.DataFrame) -> pd.DataFrame:
    """Transferred performance as a share of in-domain (unconstrained words), per dataset: the paper's §5 headline
    numbers ("cls→gen reaches up to 84 % of in-domain") are the best dataset of these."""
    unc = cells[np.array([math.isinf(float(d)) for d in cells["delta"]], dtype=bool)]
    rows = []
    for ev in TASKS:
        own = unc[(unc["eval_task"] == ev) & (unc["trained_task"] == ev)].set_index("dataset")["mean"]
        for tr in TASKS:
            if tr == ev:
                continue
            moved = unc[(unc["eval_task"] == ev) & (unc["trained_task"] == tr)].set_index("dataset")["mean"]
            for ds in moved.index.intersection(own.index):
                share = float(moved[ds] / own[ds]) if own[ds] > 0 else math.nan
                rows.append({"trained_task": tr, "eval_task": ev, "dataset": ds, "transferred": float(moved[ds]),
                             "in_domain": float(own[ds]), "share": share})
    return pd.DataFrame(rows, columns=["trained_task", "eval_task", "dataset", "transferred", "in_domain", "share"])


def _share(defn, cells, eps, tolerance, ctx) -> ClaimResult:
    tol = _tol(defn, tolerance)
    shares, paper = ctx["shares"], {(c["trained"], c["eval"]): c for c in ctx["paper_claims"]}
    value, expected, failed, checks = {}, [], [], 0
    for tr, ev in defn["pairs"]:
        p = paper[(tr, ev)]
        key = f"{short(tr)}_to_{short(ev)}"
        expected.append(f"{key} {p['value']:.2f} ({p['dataset']})")
        sel = shares[(shares["trained_task"] == tr) & (shares["eval_task"] == ev)].dropna()
        if not len(sel):
            continue
        best = sel.loc[sel["share"].idxmax()]
        ok = abs(float(best["share"]) - p["value"]) <= tol + 1e-12
        value[key] = {"max_share": round(float(best["share"]), 4), "dataset": best["dataset"], "paper": p["value"],
                      "within_tolerance": bool(ok)}
        checks += 1
        if not ok:
            failed.append(f"{key}: {best['share']:.2f} ({best['dataset']}) vs {p['value']:.2f}")
    status = "not run" if checks < len(defn["pairs"]) else ("fail" if failed else "pass")
    return _result(defn, status, f"±{tol:g}", "; ".join(expected), value=value, checks=checks, failed=failed,
                   detail="best dataset's transferred ÷ in-domain mean, δ = ∞" +
                          ("" if status != "not run" else f"; {len(defn['pairs']) - checks} pair(s) not run"))


def _ordering(defn, cells, eps, tolerance, ctx) -> ClaimResult:
    shares, order = ctx["shares"], list(defn["order"])
    need = int(defn["min_datasets"])
    value, holds = {}, []
    for ds, g in shares.dropna().groupby("dataset", sort=True):
        per_task = g.groupby("trained_task")["share"].mean()
        if set(per_task.index) != set(order):
            continue  # the dataset lacks a trained task's transfers
        ranked = list(per_task.sort_values(ascending=False).index)
        value[ds] = {t: round(float(per_task[t]), 4) for t in ranked}
        if ranked == order:
            holds.append(ds)
    expected = f"{' > '.join(short(t) for t in order)} (mean transfer share) in ≥ {need} datasets"
    if len(value) < need:
        return _result(defn, "not run", f"≥ {need} datasets", expected, value=value, checks=len(value),
                       detail=f"{len(value)} dataset(s) with every trained task's transfers (need {need})")
    failed = [ds for ds in value if ds not in holds]
    return _result(defn, "pass" if len(holds) >= need else "fail", f"≥ {need} datasets", expected, value=value,
                   checks=len(value), failed=failed,
                   detail=f"holds in {len(holds)} of {len(value)}: {', '.join(holds)}")


# ---- cells (C1, C6, C7, C9, C10) --------------------------------------------------------------------------------


def _select(comp: pd.DataFrame, sel: dict) -> pd.DataFrame:
    m = pd.Series(True, index=comp.index)
    if "figure" in sel:
        m &= comp["figure"] == sel["figure"]
    if "in_domain" in sel:
        m &= (comp["trained_task"] == comp["eval_task"]) == bool(sel["in_domain"])
    if "max_delta" in sel:
        m &= comp["delta"].astype(float) <= float(sel["max_delta"])
    if "delta" in sel:
        m &= np.isclose(comp["delta"].astype(float), float(sel["delta"]))
    return comp[m]


def _cell_name(r) -> str:
    return (f"{r['figure']} {r['dataset']} {short(r['trained_task'])}→{short(r['eval_task'])} "
            f"δ={_delta_label(r['delta'])}")


def _cells(defn, cells, eps, tolerance, ctx) -> ClaimResult:
    rows = _select(ctx["comparison"], defn["select"])
    ran = rows[rows["status"] != "not run"]
    ran = ran[ran["paper"].notna()]
    tol = _tol(defn, tolerance)
    expected = f"{len(rows)} paper cells"
    if not len(ran):
        return _result(defn, "not run", f"paper CI, else ±{tol:g}", expected, detail="no cell of this run")
    bad = ran[~ran["agrees"].fillna(False).astype(bool)]
    return _result(defn, "fail" if len(bad) else "pass", f"paper CI, else ±{tol:g}", expected,
                   value=f"{len(ran) - len(bad)} of {len(ran)} agree", checks=len(ran),
                   failed=[_cell_name(r) for _, r in bad.iterrows()],
                   detail=f"{len(rows) - len(ran)} paper cell(s) not run")


def _range(defn, cells, eps, tolerance, ctx) -> ClaimResult:
    tol = _tol(defn, tolerance)
    rows = _select(ctx["comparison"], defn["select"])
    lo, hi = float(rows["paper"].min()), float(rows["paper"].max())  # the paper's own range over these cells
    ran = rows[rows["ours"].notna()]
    expected = f"{lo:.2f}–{hi:.2f} (paper_numbers.yaml, min–max of the {len(rows)} cells)"
    if not len(ran):
        return _result(defn, "not run", f"±{tol:g} around the range", expected, detail="no cell of this run")
    out = ran[(ran["ours"] < lo - tol - 1e-12) | (ran["ours"] > hi + tol + 1e-12)]
    return _result(defn, "fail" if len(out) else "pass", f"±{tol:g} around the range", expected,
                   value=f"{ran['ours'].min():.3f}–{ran['ours'].max():.3f}", checks=len(ran),
                   failed=[f"{_cell_name(r)}: {r['ours']:.3f}" for _, r in out.iterrows()])


def _spread(defn, cells, eps, tolerance, ctx) -> ClaimResult:
    tol = _tol(defn, tolerance)
    deltas = [float(d) for d in defn["deltas"]]
    own = cells[cells["trained_task"] == cells["eval_task"]]
    value, failed = {}, []
    for (ds, task), g in own.groupby(["dataset", "eval_task"], sort=True):
        means = {}
        for d in deltas:
            hit = g[np.isclose(g["delta"].astype(float), d) | (np.isinf(d) & np.isinf(g["delta"].astype(float)))]
            if len(hit) and not math.isnan(float(hit["mean"].iloc[0])):
                means[_delta_label(d)] = round(float(hit["mean"].iloc[0]), 4)
        if len(means) < len(deltas):
            continue
        spread = max(means.values()) - min(means.values())
        value[f"{ds}/{short(task)}"] = means | {"spread": round(spread, 4)}
        if spread > tol + 1e-9:
            failed.append(f"{ds} {short(task)}: spread {spread:.3f}")
    expected = f"in-domain means at δ = {', '.join(_delta_label(d) for d in deltas)} agree"
    if not value:
        return _result(defn, "not run", f"max − min ≤ {tol:g}", expected,
                       detail="no dataset × task with every one of those δ")
    return _result(defn, "fail" if failed else "pass", f"max − min ≤ {tol:g}", expected, value=value,
                   checks=len(value), failed=failed)


# ---- ε-ball (C11, C12) -------------------------------------------------------------------------------------------


def nearest_is_anchor_by_delta(eps: pd.DataFrame, transferred: bool) -> dict[str, float]:
    """Share of vectors whose nearest token is the anchor, per δ (never pooled across δ)."""
    rows = eps[eps["transferred"].astype(str).str.lower().eq("true") == transferred]
    out = {}
    for d, g in rows.groupby(rows["delta"].astype(float), sort=True):
        out[_delta_label(d)] = round(float(g["nearest_is_anchor"].astype(str).str.lower().eq("true").mean()), 4)
    return out


def _eps_share(defn, cells, eps, tolerance, ctx) -> ClaimResult:
    tol, expected = _tol(defn, tolerance), float(defn["expected"])
    words = f"share = {expected:g} per δ ≤ {defn['max_delta']:g}, in-domain"
    if eps is None or not len(eps):
        return _result(defn, "not run", "exact" if tol == 0 else f"±{tol:g}", words, detail="no eps_stats table")
    shares = {d: v for d, v in nearest_is_anchor_by_delta(eps, False).items() if float(d) <= float(defn["max_delta"])}
    if not shares:
        return _result(defn, "not run", "exact" if tol == 0 else f"±{tol:g}", words,
                       detail=f"no in-domain vector with δ ≤ {defn['max_delta']:g}")
    failed = [f"δ={d}: {v:.4f}" for d, v in shares.items() if abs(v - expected) > tol]
    return _result(defn, "fail" if failed else "pass", "exact" if tol == 0 else f"±{tol:g}", words, value=shares,
                   checks=len(shares), failed=failed)


def _reported(defn, cells, eps, tolerance, ctx) -> ClaimResult:
    value = nearest_is_anchor_by_delta(eps, True) if eps is not None and len(eps) else None
    return _result(defn, "not judged", "reported, not judged", "qualitative (no number in the paper)", value=value,
                   detail="share of transferred vectors whose nearest token is the anchor, per δ"
                   if value else "no transferred vectors in eps_stats")


def _not_computed(defn, cells, eps, tolerance, ctx) -> ClaimResult:
    if defn["test"] == "benchmark":
        return _result(defn, "not run", "ratio ≤ 1.2", "—", detail=f"`{defn['command']}` prints it; the report runs no "
                                                                   "benchmark")
    return _result(defn, "not judged", "visual inspection", "qualitative", detail="figures on the page")


TESTS: dict[str, Callable[..., ClaimResult]] = {
    "cells": _cells, "share": _share, "ordering": _ordering, "range": _range, "spread": _spread,
    "eps_share": _eps_share, "reported": _reported, "qualitative": _not_computed, "benchmark": _not_computed}


def evaluate_claims(cells: pd.DataFrame | None, eps: pd.DataFrame | None, tolerance: float,
                    defs: tuple[dict, ...] | None = None) -> list[ClaimResult]:
    """Every claim of `defs` (default claims.yaml) on our cells and ε-ball table."""
    from visual_words.report.compare import compare
    from visual_words.report.paper import claims as paper_claims
    from visual_words.report.paper import paper_table

    if cells is None:
        cells = pd.DataFrame(columns=["dataset", "trained_task", "eval_task", "delta", "metric", "transferred", "n",
                                      "mean", "ci_low", "ci_high"])
    ctx = {"comparison": compare(cells, paper_table(), tolerance), "shares": transfer_shares(cells),
           "paper_claims": paper_claims()}
    out = []
    for defn in defs or definitions():
        if defn["test"] not in TESTS:
            raise ValueError(f"claims.yaml: claim {defn.get('id')} has unknown test `{defn['test']}` "
                             f"(known: {', '.join(TESTS)})")
        out.append(TESTS[defn["test"]](defn, cells, eps, tolerance, ctx))
    return out
