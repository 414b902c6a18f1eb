"""The description: every claim of claims.yaml described by its point rule on whatever ran, on any profile — our
cell means next to the paper's numbers, cell by cell. It says where a run agrees with the paper and where it
differs; it is never a verdict (claims/interval.py decides those, from CIs that resample concepts and anchors, so a
faithful reproduction is not failed by one of many cells missing the paper's own sampling interval). No figure
or file I/O here, so the same evaluator serves the report and tests:

    from visual_words.claims.point import evaluate_claims
    results = evaluate_claims(cells, eps, tolerance=0.1)     # cells: evaluate.stats.summarize(evaluation table)
    {r.id: r.status for r in results}                         # "agrees" | "differs" | "not run" | "not judged"

`cells` has one row per (dataset, trained_task, eval_task, delta) with `mean`, `ci_low`, `ci_high` and `n`; `eps` is
the analysis stage's eps_stats table (or None). Each result says what was compared (`value`, `expected`, the
`tolerance` in words, `checks` = how many comparisons, `failed` = which) so a reader can match it to a cell.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from visual_words.claims import SOURCE, Claim, ClaimSpecError, load_claims
from visual_words.tasks import TASKS, short

STATUSES = ("agrees", "differs", "not run", "not judged")  # a description of whatever ran, never a verdict


@dataclass
class PointResult:
    id: str
    claim: str  # the claim's text
    test: str  # its point rule
    status: str  # pass | fail | not run | not judged
    tolerance: str  # in words, e.g. "paper CI, else ±0.1"
    expected: str  # the paper's side
    value: Any = None  # ours: a number, or a mapping (per δ, per dataset)
    checks: int = 0  # comparisons made
    failed: list[str] = field(default_factory=list)  # which comparisons failed
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _delta_label(d: float) -> str:
    return "inf" if math.isinf(float(d)) else f"{float(d):g}"


def _result(claim: Claim, status: str, tolerance: str, expected: str, **kw) -> PointResult:
    return PointResult(claim.id, claim.text, claim.point.rule, status, tolerance, expected, **kw)


# ---- transfer shares (rules share, ordering) -------------------------------------------------------------------------


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


def _share(claim, cells, eps, tolerance, ctx) -> PointResult:
    tol = claim.tol(tolerance)
    tr, ev = claim.point.args["pair"]
    p = next((c for c in ctx["paper_claims"] if (c["trained"], c["eval"]) == (tr, ev)), None)
    if p is None:
        raise ClaimSpecError(f"{SOURCE}: `{claim.id}`: the paper gives no share for {tr} → {ev} "
                             "(registry/paper_numbers.yaml `claims`)")
    key = f"{short(tr)}_to_{short(ev)}"
    expected, detail = f"{key} {p['value']:.2f} ({p['dataset']})", "best dataset's transferred ÷ in-domain mean, δ = ∞"
    shares = ctx["shares"]
    sel = shares[(shares["trained_task"] == tr) & (shares["eval_task"] == ev)].dropna()
    if not len(sel):
        return _result(claim, "not run", f"±{tol:g}", expected, value={}, detail=f"{detail}; no dataset has both cells")
    best = sel.loc[sel["share"].idxmax()]
    ok = abs(float(best["share"]) - p["value"]) <= tol + 1e-12
    value = {key: {"max_share": round(float(best["share"]), 4), "dataset": best["dataset"], "paper": p["value"],
                   "within_tolerance": bool(ok)}}
    failed = [] if ok else [f"{key}: {best['share']:.2f} ({best['dataset']}) vs {p['value']:.2f}"]
    return _result(claim, "differs" if failed else "agrees", f"±{tol:g}", expected, value=value, checks=1,
                   failed=failed, detail=detail)


def _ordering(claim, cells, eps, tolerance, ctx) -> PointResult:
    shares, order = ctx["shares"], list(claim.point.args["order"])
    need = int(claim.point.args["min_datasets"])
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
        return _result(claim, "not run", f"≥ {need} datasets", expected, value=value, checks=len(value),
                       detail=f"{len(value)} dataset(s) with every trained task's transfers (need {need})")
    failed = [ds for ds in value if ds not in holds]
    return _result(claim, "agrees" if len(holds) >= need else "differs", f"≥ {need} datasets", expected, value=value,
                   checks=len(value), failed=failed,
                   detail=f"holds in {len(holds)} of {len(value)}: {', '.join(holds)}")


# ---- cells (rules cells, range, spread) ------------------------------------------------------------------------------


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


def _cells(claim, cells, eps, tolerance, ctx) -> PointResult:
    rows = _select(ctx["comparison"], claim.point.args["select"])
    ran = rows[rows["status"] != "not run"]
    ran = ran[ran["paper"].notna()]
    tol = claim.tol(tolerance)
    expected = f"{len(rows)} paper cells"
    if not len(ran):
        return _result(claim, "not run", f"paper CI, else ±{tol:g}", expected, detail="no cell of this run")
    bad = ran[~ran["agrees"].fillna(False).astype(bool)]
    return _result(claim, "differs" if len(bad) else "agrees", f"paper CI, else ±{tol:g}", expected,
                   value=f"{len(ran) - len(bad)} of {len(ran)} agree", checks=len(ran),
                   failed=[_cell_name(r) for _, r in bad.iterrows()],
                   detail=f"{len(rows) - len(ran)} paper cell(s) not run")


def _range(claim, cells, eps, tolerance, ctx) -> PointResult:
    tol = claim.tol(tolerance)
    rows = _select(ctx["comparison"], claim.point.args["select"])
    lo, hi = float(rows["paper"].min()), float(rows["paper"].max())  # the paper's own range over these cells
    ran = rows[rows["ours"].notna()]
    expected = f"{lo:.2f}–{hi:.2f} (paper_numbers.yaml, min–max of the {len(rows)} cells)"
    if not len(ran):
        return _result(claim, "not run", f"±{tol:g} around the range", expected, detail="no cell of this run")
    out = ran[(ran["ours"] < lo - tol - 1e-12) | (ran["ours"] > hi + tol + 1e-12)]
    return _result(claim, "differs" if len(out) else "agrees", f"±{tol:g} around the range", expected,
                   value=f"{ran['ours'].min():.3f}–{ran['ours'].max():.3f}", checks=len(ran),
                   failed=[f"{_cell_name(r)}: {r['ours']:.3f}" for _, r in out.iterrows()])


def _spread(claim, cells, eps, tolerance, ctx) -> PointResult:
    tol = claim.tol(tolerance)
    deltas = [float(d) for d in claim.point.args["deltas"]]
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
        return _result(claim, "not run", f"max − min ≤ {tol:g}", expected,
                       detail="no dataset × task with every one of those δ")
    return _result(claim, "differs" if failed else "agrees", f"max − min ≤ {tol:g}", expected, value=value,
                   checks=len(value), failed=failed)


# ---- ε-ball (rules eps_share, reported) ------------------------------------------------------------------------------


def nearest_is_anchor_by_delta(eps: pd.DataFrame, transferred: bool) -> dict[str, float]:
    """Share of vectors whose nearest token is the anchor, per δ (never pooled across δ)."""
    rows = eps[eps["transferred"].astype(str).str.lower().eq("true") == transferred]
    out = {}
    for d, g in rows.groupby(rows["delta"].astype(float), sort=True):
        out[_delta_label(d)] = round(float(g["nearest_is_anchor"].astype(str).str.lower().eq("true").mean()), 4)
    return out


def _eps_share(claim, cells, eps, tolerance, ctx) -> PointResult:
    tol, expected = claim.tol(tolerance), float(claim.point.args["expected"])
    max_delta = float(claim.point.args["max_delta"])
    words = f"share = {expected:g} per δ ≤ {max_delta:g}, in-domain"
    if eps is None or not len(eps):
        return _result(claim, "not run", "exact" if tol == 0 else f"±{tol:g}", words, detail="no eps_stats table")
    shares = {d: v for d, v in nearest_is_anchor_by_delta(eps, False).items() if float(d) <= max_delta}
    if not shares:
        return _result(claim, "not run", "exact" if tol == 0 else f"±{tol:g}", words,
                       detail=f"no in-domain vector with δ ≤ {max_delta:g}")
    failed = [f"δ={d}: {v:.4f}" for d, v in shares.items() if abs(v - expected) > tol]
    return _result(claim, "differs" if failed else "agrees", "exact" if tol == 0 else f"±{tol:g}", words, value=shares,
                   checks=len(shares), failed=failed)


def _reported(claim, cells, eps, tolerance, ctx) -> PointResult:
    value = nearest_is_anchor_by_delta(eps, True) if eps is not None and len(eps) else None
    return _result(claim, "not judged", "reported, not judged", "qualitative (no number in the paper)", value=value,
                   detail="share of transferred vectors whose nearest token is the anchor, per δ"
                   if value else "no transferred vectors in eps_stats")


def _not_computed(claim, cells, eps, tolerance, ctx) -> PointResult:
    if claim.point.rule == "benchmark":
        return _result(claim, "not run", "ratio ≤ 1.2", "—",
                       detail=f"`{claim.point.args['command']}` prints it; the report runs no benchmark")
    return _result(claim, "not judged", "visual inspection", "qualitative", detail="figures on the page")


RULES: dict[str, Callable[..., PointResult]] = {  # one function per point rule of claims.yaml
    "cells": _cells, "share": _share, "ordering": _ordering, "range": _range, "spread": _spread,
    "eps_share": _eps_share, "reported": _reported, "qualitative": _not_computed, "benchmark": _not_computed}


def evaluate_claims(cells: pd.DataFrame | None, eps: pd.DataFrame | None, tolerance: float,
                    claims: list[Claim] | None = None) -> list[PointResult]:
    """Every claim of `claims` (default: all of claims.yaml) by its point rule on our cells and ε-ball table."""
    from visual_words.claims.compare import compare
    from visual_words.paper import claims as paper_claims
    from visual_words.paper import paper_table

    if cells is None:
        cells = pd.DataFrame(columns=["dataset", "trained_task", "eval_task", "delta", "metric", "transferred", "n",
                                      "mean", "ci_low", "ci_high"])
    ctx = {"comparison": compare(cells, paper_table(), tolerance), "shares": transfer_shares(cells),
           "paper_claims": paper_claims()}
    out = []
    for claim in claims if claims is not None else load_claims().values():
        out.append(RULES[claim.point.rule](claim, cells, eps, tolerance, ctx))
    return out
