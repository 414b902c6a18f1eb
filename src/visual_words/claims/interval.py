"""The interval check: the claims a profile names (`report.claims`), each by its parts (claims.yaml), on the
profile's evaluation / analysis tables, with their power.

Per part: the statistic on our trials, its 95 % percentile-bootstrap CI (trials resampled within each cell), and
  pass          the statistic lies inside the acceptance interval (the paper's value ± tolerance, per rule)
  fail          the whole CI lies outside it: our data are inconsistent with the paper at 95 %
  inconclusive  the statistic is outside but the CI still reaches the interval
  not run       a cell the part needs has no trials in this run
A claim passes when every part passes, fails when any part fails, is "not run" when any part is, and is
inconclusive otherwise. `power` is the probability of "pass" if the paper is right (claims.power).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visual_words.claims import Claim, claims_of
from visual_words.claims.design import PartDesign, design_counts, design_part, in_interval
from visual_words.claims.power import PartPower, claim_power, part_power


@dataclass
class PartResult:
    name: str
    rule: str
    status: str
    value: float
    ci: tuple[float, float]
    reference: float
    accept: tuple[float, float]
    cells: str
    power: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "status": self.status, "ours": _r(self.value),
                "ci": [_r(self.ci[0]), _r(self.ci[1])], "paper": _r(self.reference),
                "accept": [_r(self.accept[0]), _r(self.accept[1])], "cells": self.cells, "power": _r(self.power),
                "power_method": self.method}


@dataclass
class IntervalResult:
    id: str
    text: str
    status: str
    power: float
    parts: list[PartResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "status": self.status, "power": _r(self.power),
                "parts": [p.to_dict() for p in self.parts]}


def _r(x, digits: int = 4):
    return None if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else round(float(x), digits)


def designs(cfg, claim: Claim, counts=None) -> list[PartDesign | None]:
    counts = counts if counts is not None else design_counts(cfg)
    tol = claim.tol(cfg.report.tolerance)
    return [None if p.rule == "exact" else design_part(p, list(cfg.study.datasets), counts, tol) for p in claim.parts]


def power_table(cfg) -> list[IntervalResult]:
    """Each claim the profile names with its parts' cell sizes, the paper's reference and the power (no data)."""
    out = []
    counts = design_counts(cfg)
    for claim in claims_of(cfg):
        parts = []
        for p, d in zip(claim.parts, designs(cfg, claim, counts)):
            pw = _exact_power(cfg) if d is None else part_power(d)
            parts.append(_result(p, d, "planned", math.nan, (math.nan, math.nan), pw))
        out.append(IntervalResult(claim.id, claim.text, "planned", claim_power([_pp(x) for x in parts]), parts))
    return out


def _pp(r: PartResult) -> PartPower:
    return PartPower(r.power, r.method)


def _exact_power(cfg) -> PartPower:
    # Inside δ·d_nn of the anchor with δ <= 0.5, every other token is at least (1 - δ)·d_nn >= δ·d_nn away (triangle
    # inequality), so the anchor is the nearest token for every word the profile trains there: certain, not random.
    deltas = {d for t, g in _grids(cfg) for d in g}
    return PartPower(1.0 if any(d <= 0.5 for d in deltas) else math.nan, "deterministic (triangle inequality)")


def _grids(cfg):
    from visual_words.trials import TASKS, grid_of

    for t in TASKS:
        yield t, grid_of(cfg, t)["deltas"]


def _result(p, d: PartDesign | None, status, value, ci, pw: PartPower) -> PartResult:
    if d is None:
        return PartResult(p.name, p.rule, status, value, ci, 1.0, (1.0, 1.0),
                          f"in-domain vectors, δ <= {p.max_delta:g}", pw.power, pw.method)
    return PartResult(p.name, p.rule, status, value, ci, d.reference, d.accept, d.cells_text(), pw.power, pw.method)


def check_claims(cfg, evaluation=None, eps=None, resamples: int = 1000, seed: int = 0,
                 powers: list[IntervalResult] | None = None) -> list[IntervalResult]:
    """The claims of `cfg.report.claims` on this run: `evaluation` = evaluation.csv as a DataFrame
    (evaluate.runner.read_table), `eps` = eps_stats.csv as a DataFrame (either may be None: its parts are "not
    run"). `resamples` = 0 skips the CIs (a part is then pass or inconclusive). `powers` = power_table(cfg), when
    already computed."""
    powers = powers or power_table(cfg)
    values = _unit_values(evaluation) if evaluation is not None else {}
    rng = np.random.default_rng(seed)
    out = []
    counts = design_counts(cfg)
    for claim, planned in zip(claims_of(cfg), powers):
        parts = []
        for p, d, pl in zip(claim.parts, designs(cfg, claim, counts), planned.parts):
            pw = PartPower(pl.power, pl.method)
            if d is None:
                parts.append(_check_exact(p, eps, pw))
                continue
            have = {name: [values.get(u) for u in us] for name, us in d.groups.items()}
            if not d.runnable or any(v is None or not len(v) for vs in have.values() for v in vs):
                parts.append(_result(p, d, "not run", math.nan, (math.nan, math.nan), pw))
                continue
            means = {name: np.asarray(np.concatenate(vs).mean()) for name, vs in have.items()}
            value = float(d.statistic(means))
            ci = _bootstrap_ci(d, have, rng, resamples) if resamples else (math.nan, math.nan)
            parts.append(_result(p, d, _decide(value, ci, d.accept), value, ci, pw))
        statuses = [x.status for x in parts]
        status = ("not run" if "not run" in statuses else "fail" if "fail" in statuses
                  else "pass" if all(s == "pass" for s in statuses) else "inconclusive")
        out.append(IntervalResult(claim.id, claim.text, status, planned.power, parts))
    return out


def _unit_values(evaluation) -> dict:
    out = {}
    for key, g in evaluation.groupby(["dataset", "trained_task", "eval_task", "delta"], sort=False):
        d = float(key[3])
        d = math.inf if math.isinf(d) else round(d, 6)
        out[(key[0], key[1], key[2], d)] = g["value"].astype(float).dropna().to_numpy()
    return out


def _bootstrap_ci(d: PartDesign, have: dict, rng, resamples: int) -> tuple[float, float]:
    means = {}
    for name, vs in have.items():
        total = sum(len(v) for v in vs)
        s = np.zeros(resamples)
        for v in vs:  # resample each cell's trials, then pool the group
            s += v[rng.integers(0, len(v), size=(resamples, len(v)))].sum(axis=1)
        means[name] = s / total
    stat = np.asarray(d.statistic(means), dtype=float)
    stat = stat[~np.isnan(stat)]
    if not len(stat):
        return (math.nan, math.nan)
    return (float(np.percentile(stat, 2.5)), float(np.percentile(stat, 97.5)))


def _decide(value: float, ci: tuple[float, float], accept: tuple[float, float]) -> str:
    if bool(in_interval(value, accept)):
        return "pass"
    lo, hi = ci
    if not (math.isnan(lo) or math.isnan(hi)) and (hi < accept[0] or lo > accept[1]):
        return "fail"
    return "inconclusive"


def _check_exact(p, eps, pw: PartPower) -> PartResult:
    if eps is None or not len(eps):
        return _result(p, None, "not run", math.nan, (math.nan, math.nan), pw)
    own = eps[~eps["transferred"].astype(str).str.lower().eq("true") & (eps["delta"].astype(float) <= p.max_delta)]
    if not len(own):
        return _result(p, None, "not run", math.nan, (math.nan, math.nan), pw)
    share = float(own["nearest_is_anchor"].astype(str).str.lower().eq("true").mean())
    r = _result(p, None, "pass" if share == 1.0 else "fail", share, (share, share), pw)
    r.cells = f"{len(own)} in-domain vectors, δ <= {p.max_delta:g}"
    return r


def format_power_table(results: list[IntervalResult]) -> str:
    """The claims a profile checks, one line per part: rule, the paper's value, the agreeing interval, cell sizes
    and power (what `vw plan` prints for a profile with `report.claims`)."""
    lines = ["[claims] power = probability of a pass if the paper is right (src/visual_words/claims/power.py)"]
    for c in results:
        lines.append(f"[claims] {c.id}: power {c.power:.2f} - {c.text}")
        for p in c.parts:
            lines.append(f"[claims]   {p.name}: {p.rule}, paper {_fmt(p.reference)}, agrees in [{_fmt(p.accept[0])}, "
                         f"{_fmt(p.accept[1])}], {p.cells}; power {p.power:.3f} ({p.method})")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) and x > 0 else "-inf" if math.isinf(x) else f"{x:.2f}"
