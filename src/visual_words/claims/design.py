"""A claim part against a profile's design: which cells it reads, how many trials each has, the paper's value of
each, the statistic and the interval of the statistic that counts as agreeing with the paper.

A *unit* is one cell of the evaluation table: (dataset, trained task, evaluated task, δ). A *group* pools units
(mean over all their trials). The part's statistic is a function of its groups' means; the same function applied
to the paper's numbers gives the reference value it is compared with, so no reference is typed in.
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


@dataclass(frozen=True)
class PaperCell:
    mean: float
    sd: float  # per-trial standard deviation under the paper (from its CI, else the largest a [0,1] score can have)
    accuracy: bool  # an accuracy (exact binomial) rather than an AP (parametric bootstrap)
    basis: str


@dataclass
class PartDesign:
    part: "Part"
    groups: dict[str, list[Unit]]
    n: dict[Unit, int]  # trials per unit in the profile
    paper: dict[Unit, PaperCell]
    statistic: Callable[[dict[str, np.ndarray]], np.ndarray]  # group means -> the statistic (vectorised)
    accept: tuple[float, float]  # the statistic agrees with the paper inside [low, high]
    reference: float  # the statistic on the paper's numbers

    @property
    def runnable(self) -> bool:
        return bool(self.groups) and all(self.groups.values())

    def cells_text(self) -> str:
        parts = []
        for name, units in self.groups.items():
            n = sum(self.n[u] for u in units)
            ds = ",".join(dict.fromkeys(u[0] for u in units))
            parts.append(f"{name}: n={n}" + ("" if name.startswith(ds) else f" ({ds})"))
        return "; ".join(parts)


def design_counts(cfg) -> Counter:
    """Trials per (dataset, trained task, δ) of the profile's grid."""
    from visual_words.trials import trial_grid

    return Counter((t.dataset, t.task, _dkey(t.delta)) for t in trial_grid(cfg))


def _dkey(d) -> float:
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
        out[(r["dataset"], r["trained_task"], r["eval_task"], _dkey(r["delta"]))] = PaperCell(m, sd, acc, basis)
    return out


def design_part(part: Part, datasets: list[str], counts: Counter, tol: float) -> PartDesign:
    """`part` on a design: `datasets` in the profile's order, `counts` = design_counts(cfg), `tol` = its claim's
    tolerance."""
    paper = paper_cells()

    def units(cell: CellSpec, only=None) -> list[Unit]:
        out = []
        for ds in (only or datasets):
            for d in cell.deltas:
                u = (ds, cell.trained, cell.eval, _dkey(d))
                if counts.get((ds, cell.trained, _dkey(d)), 0) and u in paper:
                    out.append(u)
        return out

    groups: dict[str, list[Unit]] = {}
    if part.rule in ("at_least", "at_most"):
        groups["cell"] = units(part.cell)
        stat = lambda g: g["cell"]  # noqa: E731
    elif part.rule == "close":
        groups["cell"], groups["versus"] = units(part.cell), units(part.versus)
        stat = lambda g: g["cell"] - g["versus"]  # noqa: E731
    elif part.rule == "share":
        c = part.cell
        own = CellSpec(c.eval, c.eval, c.deltas)
        used = [ds for ds in datasets if units(c, [ds]) and units(own, [ds])]
        for ds in used:
            groups[f"{ds} transferred"], groups[f"{ds} in-domain"] = units(c, [ds]), units(own, [ds])

        def stat(g, used=used):
            return np.max(_stack([_ratio(g[f"{ds} transferred"], g[f"{ds} in-domain"]) for ds in used]), axis=0)
    elif part.rule == "order":
        targets = {s: [t for t in TASKS if t != s]
                   for s in (part.low, part.high)}
        cells = {(s, t): CellSpec(s, t, part.deltas) for s in targets for t in targets[s]}
        owns = {t: CellSpec(t, t, part.deltas) for t in TASKS}
        used = [ds for ds in datasets if all(units(c, [ds]) for c in cells.values())
                and all(units(c, [ds]) for c in owns.values())]
        for ds in used:
            for (s, t), c in cells.items():
                groups[f"{ds} {s}→{t}"] = units(c, [ds])
            for t, c in owns.items():
                groups[f"{ds} {t}"] = units(c, [ds])

        def share_of(g, ds, s):
            return sum(_ratio(g[f"{ds} {s}→{t}"], g[f"{ds} {t}"]) for t in targets[s]) / len(targets[s])

        def stat(g, used=used):
            return np.min(_stack([share_of(g, ds, part.high) - share_of(g, ds, part.low) for ds in used]), axis=0)
    else:
        raise ValueError(f"design_part: rule {part.rule!r} has no cells")

    n = {u: counts[(u[0], u[1], u[3])] for us in groups.values() for u in us}
    pc = {u: paper[u] for u in n}
    runnable = bool(groups) and all(groups.values())
    reference = float(stat(paper_group_means(groups, n, pc))) if runnable else math.nan
    accept = {"at_least": (reference - tol, math.inf), "at_most": (-math.inf, reference + tol),
              "close": (-tol, tol), "share": (reference - tol, reference + tol),
              "order": (1e-12, math.inf)}[part.rule]
    return PartDesign(part, groups, n, pc, stat, accept, reference)


def _stack(arrays):
    """Stack statistics of different datasets; they may be broadcastable grids (exact power) of different shapes."""
    return np.stack(np.broadcast_arrays(*arrays))


def _ratio(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(b) > 0, np.asarray(a, dtype=float) / np.asarray(b, dtype=float), np.nan)


def paper_group_means(groups, n, paper) -> dict[str, np.ndarray]:
    """Each group's mean under the paper: its units' paper values weighted by our trial counts."""
    return {name: np.asarray(sum(paper[u].mean * n[u] for u in us) / sum(n[u] for u in us))
            for name, us in groups.items()}


def in_interval(x, accept: tuple[float, float]):
    x = np.asarray(x, dtype=float)
    return (x >= accept[0] - 1e-12) & (x <= accept[1] + 1e-12)  # NaN (an undefined share) is never inside
