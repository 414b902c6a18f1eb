"""A claim part against a profile's design: which cells it reads, how many trials each has, the paper's value of
each, the statistic and the region of it that supports the claim.

A *unit* is one cell of the evaluation table: (dataset, trained task, evaluated task, δ). A *group* pools units of
one dataset (mean over all their trials). Every statistic is a distance from the paper, computed per dataset and
then averaged over the datasets the part reads (weighted by trials, or equally for shares), so that a bootstrap
that resamples the datasets compares each resampled dataset with the paper's own number for it:

  at_least / at_most   pooled (ours − paper) over the datasets: supported inside [−margin, ∞) / (−∞, margin]
  close                pooled (ours at `cell` − ours at `versus`): supported inside [−margin, margin]
  share                transferred ÷ in-domain, minus the paper's share: on the paper's best dataset of those run
                       (`over: best`) or averaged over them (`over: pooled`); supported inside [−margin, margin],
                       or [−margin, ∞) with `side: at_least` (a lower bound on how much transfers)
  order                per dataset, the mean transfer share of words trained for `high` minus that of `low`,
                       averaged: supported above 0 (the claimed side), contradicted below
A relative margin is a fraction of the paper's own value of the quantity (its pooled mean, share or gap).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from visual_words.claims import CellSpec, Part
from visual_words.tasks import TASKS

Unit = tuple[str, str, str, float]  # dataset, trained task, evaluated task, δ
ACCURACY = {"generation", "classification"}  # eval tasks whose per-trial metric is an accuracy (AP otherwise)
PAPER_TRIALS_PER_CELL = 100  # the paper's cells: 10 concepts x 10 anchors
Groups = dict[str, np.ndarray]  # group name -> its means (any shape: draws x resamples)
Weights = dict[str, np.ndarray]  # dataset -> its weight (1, or how often a dataset resample drew it)


@dataclass(frozen=True)
class PaperCell:
    mean: float
    sd: float  # per-trial standard deviation under the paper (from its CI, else the largest a [0,1] score can have)
    accuracy: bool  # an accuracy (one success or failure per trial) rather than an AP
    basis: str

    @property
    def spread(self) -> float:
        """The per-trial variance as a fraction of the largest a [0,1] score with this mean can have (1: binary)."""
        top = self.mean * (1 - self.mean)
        return 1.0 if self.accuracy or top <= 0 else min(1.0, self.sd * self.sd / top)


@dataclass
class PartDesign:
    part: "Part"
    groups: dict[str, list[Unit]]  # group -> its units (one dataset each)
    dataset_of: dict[str, str]  # group -> dataset
    datasets: list[str]  # the datasets the statistic averages over
    n: dict[Unit, int]  # trials per unit in the profile
    paper: dict[Unit, PaperCell]
    statistic: Callable[[Groups, Weights], np.ndarray]  # vectorised over the means' shape
    accept: tuple[float, float]  # the statistic supports the claim inside [low, high]
    paper_value: float  # the quantity on the paper's numbers (pooled mean, difference, share or gap), for display
    scale: float  # what a relative margin is a fraction of

    @property
    def runnable(self) -> bool:
        return bool(self.groups) and all(self.groups.values())

    def cells_text(self) -> str:
        words = Counter()
        for name, units in self.groups.items():
            for u in units:
                words[(u[1], u[2])] += self.n[u]
        where = ",".join(self.datasets)
        return "; ".join(f"{_short(t)}→{_short(e)}: {k}" if t != e else f"{_short(t)}: {k}"
                         for (t, e), k in words.items()) + f" ({where})"


def _short(t: str) -> str:
    from visual_words.tasks import short

    return short(t)


def design_counts(cfg) -> Counter:
    """Trials per (dataset, trained task, δ) of the profile's grid."""
    from visual_words.trials import trial_grid

    return Counter((t.dataset, t.task, dkey(t.delta)) for t in trial_grid(cfg))


def design_shape(cfg) -> dict[tuple[str, str, float], tuple[int, int]]:
    """(concepts, anchors per concept) per (dataset, trained task, δ) of the profile's grid: the structure the
    bootstrap resamples and the simulation draws."""
    from visual_words.trials import trial_grid

    concepts, anchors = {}, {}
    for t in trial_grid(cfg):
        k = (t.dataset, t.task, dkey(t.delta))
        concepts.setdefault(k, set()).add(t.concept)
        anchors.setdefault((k, t.concept), set()).add(t.anchor)
    return {k: (len(cs), max(len(anchors[(k, c)]) for c in cs)) for k, cs in concepts.items()}


def dkey(d) -> float:
    d = float(d)
    return math.inf if math.isinf(d) else round(d, 6)


@functools.cache
def paper_cells() -> dict[Unit, PaperCell]:
    from visual_words.paper import paper_table

    out = {}
    for _, r in paper_table().iterrows():
        m = float(r["paper"])
        worst = math.sqrt(max(m * (1 - m), 0.0))
        acc = r["eval_task"] in ACCURACY
        if not acc and not (math.isnan(r["paper_ci_low"]) or math.isnan(r["paper_ci_high"])):
            # a 95 % CI over the paper's 100 trials -> the per-trial spread it implies (normal approximation)
            sd = (r["paper_ci_high"] - r["paper_ci_low"]) / (2 * 1.959964) * math.sqrt(PAPER_TRIALS_PER_CELL)
            sd, basis = min(sd, worst), "paper CI"
        else:
            sd, basis = worst, ("binomial" if acc else "no paper CI: largest spread of a [0,1] score")
        out[(r["dataset"], r["trained_task"], r["eval_task"], dkey(r["delta"]))] = PaperCell(m, sd, acc, basis)
    return out


def _ratio(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(b) > 0, np.asarray(a, dtype=float) / np.asarray(b, dtype=float), np.nan)


def _weighted(per_ds: dict[str, np.ndarray], weight: dict[str, float], w: Weights) -> np.ndarray:
    num = sum(per_ds[ds] * weight[ds] * w.get(ds, 1.0) for ds in per_ds)
    den = sum(weight[ds] * w.get(ds, 1.0) for ds in per_ds)
    return num / den


def design_part(part: Part, datasets: list[str], counts: Counter) -> PartDesign:
    """`part` on a design: `datasets` in the profile's order, `counts` = design_counts(cfg)."""
    paper = paper_cells()

    def units(cell: CellSpec, ds: str) -> list[Unit]:
        out = []
        for d in cell.deltas:
            u = (ds, cell.trained, cell.eval, dkey(d))
            if counts.get((ds, cell.trained, dkey(d)), 0) and u in paper:
                out.append(u)
        return out

    groups: dict[str, list[Unit]] = {}
    dataset_of: dict[str, str] = {}

    def add(name: str, ds: str, us: list[Unit]) -> None:
        groups[name], dataset_of[name] = us, ds

    n = lambda us: sum(counts[(u[0], u[1], u[3])] for u in us)  # noqa: E731
    pmean = lambda us: sum(paper[u].mean * counts[(u[0], u[1], u[3])] for u in us) / n(us)  # noqa: E731
    if part.rule in ("at_least", "at_most", "close"):
        used = [ds for ds in datasets if units(part.cell, ds) and (part.rule != "close" or units(part.versus, ds))]
        for ds in used:
            add(ds, ds, units(part.cell, ds))
            if part.rule == "close":
                add(f"{ds} versus", ds, units(part.versus, ds))
        weight = {ds: n(groups[ds]) for ds in used}
        if part.rule == "close":
            paper_ds = {ds: pmean(groups[ds]) - pmean(groups[f"{ds} versus"]) for ds in used}

            def stat(g, w, used=used):
                return _weighted({ds: g[ds] - g[f"{ds} versus"] for ds in used}, weight, w)
        else:
            paper_ds = {ds: pmean(groups[ds]) for ds in used}

            def stat(g, w, used=used):
                return _weighted({ds: g[ds] - paper_ds[ds] for ds in used}, weight, w)
        value = float(_weighted(paper_ds, weight, {})) if used else math.nan
    elif part.rule == "share":
        c = part.cell
        own = CellSpec(c.eval, c.eval, c.deltas)
        used = [ds for ds in datasets if units(c, ds) and units(own, ds)]
        for ds in used:
            add(f"{ds} transferred", ds, units(c, ds))
            add(f"{ds} in-domain", ds, units(own, ds))
        paper_ds = {ds: pmean(groups[f"{ds} transferred"]) / pmean(groups[f"{ds} in-domain"]) for ds in used}
        if part.over == "best" and used:  # the paper's best dataset of those this profile runs
            best = max(used, key=lambda ds: paper_ds[ds])
            for ds in used:
                if ds != best:
                    del groups[f"{ds} transferred"], groups[f"{ds} in-domain"]
            used = [best]
        weight = {ds: 1.0 for ds in used}

        def stat(g, w, used=used):
            return _weighted({ds: _ratio(g[f"{ds} transferred"], g[f"{ds} in-domain"]) - paper_ds[ds]
                              for ds in used}, weight, w)
        value = float(_weighted({ds: paper_ds[ds] for ds in used}, weight, {})) if used else math.nan
    elif part.rule == "order":
        targets = {s: [t for t in TASKS if t != s] for s in (part.low, part.high)}
        moved = {(s, t): CellSpec(s, t, part.deltas) for s in targets for t in targets[s]}
        owns = {t: CellSpec(t, t, part.deltas) for t in TASKS}
        used = [ds for ds in datasets if all(units(c, ds) for c in moved.values())
                and all(units(c, ds) for t, c in owns.items() if any(t in targets[s] for s in targets))]
        for ds in used:
            for (s, t), cs in moved.items():
                add(f"{ds} {s}→{t}", ds, units(cs, ds))
            for t in {t for s in targets for t in targets[s]}:
                add(f"{ds} {t}", ds, units(owns[t], ds))
        weight = {ds: 1.0 for ds in used}

        def share_of(g, ds, s):
            return sum(_ratio(g[f"{ds} {s}→{t}"], g[f"{ds} {t}"]) for t in targets[s]) / len(targets[s])

        def stat(g, w, used=used):
            return _weighted({ds: share_of(g, ds, part.high) - share_of(g, ds, part.low) for ds in used}, weight, w)
        value = float(stat(paper_group_means(groups, counts, paper), {})) if used else math.nan
    else:
        raise ValueError(f"design_part: rule {part.rule!r} has no cells")

    unit_n = {u: counts[(u[0], u[1], u[3])] for us in groups.values() for u in us}
    scale = abs(value) if part.rule != "close" else _weighted(
        {ds: pmean(groups[ds]) for ds in used}, {ds: n(groups[ds]) for ds in used}, {}) if used else math.nan
    m = part.margin * (scale if part.relative else 1.0)
    accept = {"at_least": (-m, math.inf), "at_most": (-math.inf, m), "close": (-m, m),
              "share": (-m, math.inf) if part.side == "at_least" else (-m, m), "order": (0.0, math.inf)}[part.rule]
    return PartDesign(part, groups, dataset_of, list(used), unit_n, {u: paper[u] for u in unit_n}, stat, accept,
                      value, float(scale))


def paper_group_means(groups, counts, paper) -> dict[str, np.ndarray]:
    """Each group's mean under the paper: its units' paper values weighted by our trial counts."""
    n = {u: counts[(u[0], u[1], u[3])] for us in groups.values() for u in us}
    return {name: np.asarray(sum(paper[u].mean * n[u] for u in us) / sum(n[u] for u in us))
            for name, us in groups.items()}


def alternative_statistic(d: PartDesign) -> float:
    """The statistic's value under the part's alternative (claims.yaml `false_at`, in the margin's units)."""
    return d.part.false_at * (d.scale if d.part.relative else 1.0)
