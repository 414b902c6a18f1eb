"""The verdict: each claim a profile decides (`report.claims`, or every claim with parts), from its parts
(claims.yaml), on the profile's evaluation / analysis tables.

Per part: the statistic on our trials (claims/design.py), its CI from a bootstrap that resamples the study's
own structure — the concepts of each cell with replacement, then the anchors (words) within each drawn concept
with replacement; and the datasets too where the part pools them as replicates (`resample_datasets`) — and
  supported     the whole CI lies inside the part's supported region (within the margin of the paper's value, or on
                the claimed side of a threshold)
  contradicted  the whole CI lies outside it
  inconclusive  the CI straddles its edge (or the statistic is undefined)
  not run       a cell the part needs has no trials in this run
A claim is supported when every part is, contradicted when any part is, "not run" when any part is, and
inconclusive otherwise. Why resample concepts and not words: a cell's words are concepts × anchors, and words of one
concept are alike (the paper's finding is that the anchor barely matters), so resampling words independently would
treat near-replicates as independent evidence and give intervals that are too narrow.

The same functions decide one real study (draws = 1) and the thousands of simulated ones of claims/simulate.py, so
the calibration measures the code that gives the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visual_words.claims import Claim, Part, claims_of
from visual_words.claims.design import PartDesign, Unit, design_counts, design_part, dkey

VERDICTS = ("supported", "contradicted", "inconclusive")
SUPPORTED, CONTRADICTED, INCONCLUSIVE = range(3)
COVERAGE_LEVEL = 0.95  # the two-sided interval whose coverage the calibration reports (claims/simulate.py)


@dataclass
class PartResult:
    name: str
    rule: str
    status: str
    value: float  # ours: the quantity the part compares (pooled mean, difference, share or gap)
    ci: tuple[float, float]  # of `value`
    paper: float  # the same quantity on the paper's numbers
    region: tuple[float, float]  # `value` supports the claim inside this interval
    margin: str
    cells: str
    level: float = 0.975  # the confidence of each one-sided test (the CI is the two-sided 2·level − 1 one)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "status": self.status, "ours": _r(self.value),
                "ci": [_r(self.ci[0]), _r(self.ci[1])], "paper": _r(self.paper),
                "supported_inside": [_r(self.region[0]), _r(self.region[1])], "margin": self.margin,
                "level": self.level, "cells": self.cells}


@dataclass
class IntervalResult:
    id: str
    text: str
    kind: str  # claim | reading | sanity
    status: str
    parts: list[PartResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "kind": self.kind, "status": self.status,
                "parts": [p.to_dict() for p in self.parts]}


def _r(x, digits: int = 4):
    return None if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else round(float(x), digits)


def designs(cfg, claim: Claim, counts=None) -> list[PartDesign | None]:
    counts = counts if counts is not None else design_counts(cfg)
    return [None if p.rule == "exact" else design_part(p, list(cfg.study.datasets), counts) for p in claim.parts]


# ---- the bootstrap -------------------------------------------------------------------------------------------------


def unit_arrays(evaluation) -> dict[Unit, np.ndarray]:
    """evaluation.csv's primary metric per unit as [1, concepts, anchors] (NaN where a concept has fewer anchors)."""
    out = {}
    ev = evaluation[evaluation["value"].notna()]
    for key, g in ev.groupby(["dataset", "trained_task", "eval_task", "delta"], sort=False):
        per = [c["value"].astype(float).to_numpy() for _, c in g.groupby("concept", sort=True)]
        arr = np.full((1, len(per), max(len(v) for v in per)), np.nan)
        for i, v in enumerate(per):
            arr[0, i, : len(v)] = v
        out[(key[0], key[1], key[2], dkey(key[3]))] = arr
    return out


def bootstrap_unit(x: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """`x`: [draws, concepts, anchors] (NaN = no trial, after a concept's trials). Returns (the mean over all
    trials [draws], its two-stage resamples [draws, resamples]: concepts with replacement, then each drawn
    concept's trials with replacement, the cell's mean over the drawn trials). A binary cell's second stage is
    drawn as the binomial it is (the same distribution as resampling its 0/1 values, without materialising them)."""
    valid = ~np.isnan(x)
    n_c = valid.sum(axis=2)  # [D, C]
    total = np.nansum(x, axis=2)  # [D, C]
    point = total.sum(axis=1) / n_c.sum(axis=1)
    d, c, a = x.shape
    # c − 1 concepts per resample (c > 1): the variance of a mean of c − 1 draws from the c concepts' empirical
    # distribution is s²/c, the unbiased one; with c draws it would be (c − 1)/c of that, intervals ~5 % too narrow
    # at 10 concepts, which the calibration showed as too many "supported" under a false claim.
    pick = rng.integers(0, c, size=(d, resamples, max(c - 1, 1)))
    rows = np.arange(d)[:, None, None]
    n_pick = n_c[rows, pick]  # [D, B, C]
    vals = x[valid]
    if a == 1 or np.all((vals == 0) | (vals == 1)):
        p = total[rows, pick] / n_pick
        sums = rng.binomial(n_pick, p) if a > 1 else total[rows, pick]
    else:  # index the flattened table once (fancy indexing with three index arrays is several times slower)
        j = (rng.random(n_pick.shape + (a,), dtype=np.float32) * n_pick[..., None].astype(np.float32)
             ).astype(np.int32)
        flat = np.where(valid, x, 0.0).astype(np.float32).ravel()
        base = ((np.arange(d, dtype=np.int32)[:, None, None] * c + pick.astype(np.int32)) * a)[..., None]
        inside = np.arange(a, dtype=np.int32) < n_pick[..., None]  # a concept with fewer trials draws fewer
        sums = np.take(flat, base + j).sum(axis=3, where=inside, dtype=np.float64)
    return point, sums.sum(axis=2) / n_pick.sum(axis=2)


def group_means(d: PartDesign, units: dict[Unit, tuple[np.ndarray, np.ndarray]], counts: dict[Unit, int]
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each group's pooled mean (its units weighted by their trial counts): points [D] and resamples [D, B]."""
    point, reps = {}, {}
    for name, us in d.groups.items():
        n = sum(counts[u] for u in us)
        point[name] = sum(units[u][0] * counts[u] for u in us) / n
        reps[name] = sum(units[u][1] * counts[u] for u in us) / n
    return point, reps


def dataset_weights(d: PartDesign, rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """How often each dataset is drawn in each resample when the part resamples them (else none: weight 1)."""
    if not d.part.resample_datasets or len(d.datasets) < 2:
        return {}
    k = len(d.datasets)
    drawn = rng.multinomial(k, [1.0 / k] * k, size=shape)
    return {ds: drawn[..., i].astype(float) for i, ds in enumerate(d.datasets)}


def decide(d: PartDesign, point: dict[str, np.ndarray], reps: dict[str, np.ndarray], weights: dict[str, np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The part's statistic [D], its CI bounds [D] x 2, verdict codes [D] (SUPPORTED / CONTRADICTED /
    INCONCLUSIVE) and the bootstrap statistics [D, B], for D studies at once. Each bound is a one-sided bound at
    the part's `level` (together the two-sided 2·level − 1 interval): supported is a one-sided test of "the claim
    is false" at 1 − level (for a two-sided region, one test per edge, both needed: the two one-sided tests of an
    equivalence claim), contradicted the same test of "the claim is true"."""
    stat = np.asarray(d.statistic(point, {}), dtype=float)
    boot = np.asarray(d.statistic(reps, weights), dtype=float)
    lo, hi = percentile_bounds(boot, 2 * d.part.level - 1)
    a, b = d.accept
    strict = d.part.rule == "order"  # a threshold: zero itself is not the claimed side
    inside = ((lo > a) if strict else (lo >= a - 1e-12)) & (hi <= b + 1e-12)
    outside = ((hi <= a) if strict else (hi < a - 1e-12)) | (lo > b + 1e-12)
    verdict = np.where(inside, SUPPORTED, np.where(outside, CONTRADICTED, INCONCLUSIVE))
    verdict = np.where(np.isnan(lo) | np.isnan(hi), INCONCLUSIVE, verdict)
    return stat, lo, hi, verdict, boot


def percentile_bounds(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of each row of `boot` [..., resamples], ignoring NaN (a resample whose share has no
    denominator); NaN where a row has none. Linear interpolation, as numpy's default percentile."""
    ordered = np.sort(boot, axis=-1)  # NaN sorts last
    k = (~np.isnan(ordered)).sum(axis=-1)
    out = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        pos = q * np.maximum(k - 1, 0)
        below = np.floor(pos).astype(np.intp)
        above = np.minimum(below + 1, np.maximum(k - 1, 0))
        lo_v = np.take_along_axis(ordered, below[..., None], axis=-1)[..., 0]
        hi_v = np.take_along_axis(ordered, above[..., None], axis=-1)[..., 0]
        out.append(np.where(k > 0, lo_v + (pos - below) * (hi_v - lo_v), np.nan))
    return out[0], out[1]


def combine(verdicts: list[np.ndarray]) -> np.ndarray:
    """A claim's verdict from its parts' (codes, [D] each): supported when all are, contradicted when any is."""
    v = np.stack(verdicts)
    return np.where((v == SUPPORTED).all(axis=0), SUPPORTED,
                    np.where((v == CONTRADICTED).any(axis=0), CONTRADICTED, INCONCLUSIVE))


def shown_value(d: PartDesign, stat):
    """The statistic in the units shown next to the paper's (a distance from the paper -> ours)."""
    return d.paper_value + stat if d.part.rule in ("at_least", "at_most", "share") else stat


def region(d: PartDesign) -> tuple[float, float]:
    a, b = d.accept
    return (float(shown_value(d, a)), float(shown_value(d, b)))


# ---- one real study ------------------------------------------------------------------------------------------------


def check_claims(cfg, evaluation=None, eps=None, resamples: int = 1000, seed: int = 0) -> list[IntervalResult]:
    """The claims the profile decides on this run: `evaluation` = evaluation.csv as a DataFrame
    (evaluate.runner.read_table), `eps` = eps_stats.csv as a DataFrame (either may be None: its parts are "not
    run")."""
    arrays = unit_arrays(evaluation) if evaluation is not None else {}
    rng = np.random.default_rng(seed)
    counts = design_counts(cfg)
    boots: dict[Unit, tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for claim in claims_of(cfg):
        parts = []
        for p, d in zip(claim.parts, designs(cfg, claim, counts)):
            if d is None:
                parts.append(_check_exact(p, eps))
                continue
            need = [u for us in d.groups.values() for u in us]
            if not d.runnable or any(u not in arrays for u in need):
                parts.append(_result(p, d, "not run", math.nan, (math.nan, math.nan)))
                continue
            for u in need:
                if u not in boots:
                    boots[u] = bootstrap_unit(arrays[u], rng, resamples)
            n = {u: int((~np.isnan(arrays[u])).sum()) for u in need}
            point, reps = group_means(d, boots, n)
            stat, lo, hi, verdict, _ = decide(d, point, reps, dataset_weights(d, rng, (1, resamples)))
            parts.append(_result(p, d, VERDICTS[int(verdict[0])], float(shown_value(d, stat[0])),
                                 (float(shown_value(d, lo[0])), float(shown_value(d, hi[0])))))
        out.append(IntervalResult(claim.id, claim.text, claim.kind, claim_status([x.status for x in parts]), parts))
    return out


def claim_status(statuses: list[str]) -> str:
    if "not run" in statuses:
        return "not run"
    if "contradicted" in statuses:
        return "contradicted"
    return "supported" if all(s == "supported" for s in statuses) else "inconclusive"


def _result(p: Part, d: PartDesign | None, status, value, ci) -> PartResult:
    if d is None:
        return PartResult(p.name, p.rule, status, value, ci, 1.0, (1.0, 1.0), "exact",
                          f"in-domain vectors, δ <= {p.max_delta:g}")
    return PartResult(p.name, p.rule, status, value, ci, d.paper_value, region(d), margin_words(d), d.cells_text(),
                      p.level)


def margin_words(d: PartDesign) -> str:
    p = d.part
    if p.rule == "order":
        return "above 0"
    m = p.margin * (d.scale if p.relative else 1.0)
    side = {"at_least": "at most {m} below the paper", "at_most": "at most {m} above the paper",
            "close": "within ±{m} of each other"}.get(p.rule, "within ±{m} of the paper")
    if p.rule == "share" and p.side == "at_least":
        side = "at most {m} below the paper"
    rel = f" ({p.margin:.0%} of {d.scale:.2f})" if p.relative else ""
    return side.format(m=f"{m:.3g}") + rel


def _check_exact(p, eps) -> PartResult:
    if eps is None or not len(eps):
        return _result(p, None, "not run", math.nan, (math.nan, math.nan))
    own = eps[~eps["transferred"].astype(str).str.lower().eq("true") & (eps["delta"].astype(float) <= p.max_delta)]
    if not len(own):
        return _result(p, None, "not run", math.nan, (math.nan, math.nan))
    share = float(own["nearest_is_anchor"].astype(str).str.lower().eq("true").mean())
    r = _result(p, None, "supported" if share == 1.0 else "contradicted", share, (share, share))
    r.cells = f"{len(own)} in-domain vectors, δ <= {p.max_delta:g}"
    return r


def planned(cfg) -> list[IntervalResult]:
    """Each claim the profile decides with its parts' cells, the paper's value and the supported region (no
    data): what `vw plan` and the calibration describe."""
    out, counts = [], design_counts(cfg)
    for claim in claims_of(cfg):
        parts = [_result(p, d, "planned", math.nan, (math.nan, math.nan))
                 for p, d in zip(claim.parts, designs(cfg, claim, counts))]
        out.append(IntervalResult(claim.id, claim.text, claim.kind, "planned", parts))
    return out


def format_planned(results: list[IntervalResult]) -> str:
    """The claims a profile decides, one line per part: rule, the paper's value, the supported region, the margin
    and the cells (what `vw plan` prints before the calibration)."""
    lines = ["[claims] verdicts this profile gives (src/visual_words/claims/claims.yaml; "
             "claims/interval.py): supported when the structured bootstrap's bound(s) at the part's one-sided "
             "level lie inside the region"]
    for c in results:
        lines.append(f"[claims] {c.id} ({c.kind}): {c.text}")
        for p in c.parts:
            lines.append(f"[claims]   {p.name}: {p.rule}, paper {_fmt(p.paper)}, supported inside "
                         f"[{_fmt(p.region[0])}, {_fmt(p.region[1])}] ({p.margin}; level {p.level:g}); {p.cells}")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) and x > 0 else "-inf" if math.isinf(x) else f"{x:.2f}"
