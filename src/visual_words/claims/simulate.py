"""The calibration: how often the verdict code (claims/interval.py) says supported / contradicted when a claim is
true and when it is false, at a profile's design, computed by simulating whole studies.

The model of one cell (unit) with the paper's mean μ and per-trial variance V = t·μ(1 − μ) (t = 1 for an accuracy:
one success or failure per trial; for AP, t from the paper's 95 % CI, else 1):
  concept effect   each concept's mean p_c ~ Beta with mean μ and variance ρ·V
  anchor noise     each word (anchor) of that concept ~ Bernoulli(p_c) for an accuracy, else Beta with mean p_c
                   and the rest of the variance, so that every word still has mean μ and variance V
ρ is the within-concept correlation: two words of one concept correlate by ρ. ρ = 0 is the independent-words model
(every word one draw around μ; for accuracies exactly the binomial), ρ = 1 would make a concept's words copies.
Cells are drawn independently of each other (the same concept's words in two cells are not tied), which makes the
shares' denominators as noisy as their numerators: a slight overstatement of a share's noise.

Coverage: on the studies of (a), how often each part's two-sided 95 % bootstrap interval contains the statistic's
true value, whatever level the verdict uses: the honesty of the bootstrap.

Scenarios: (a) every cell at the paper's value (each claim true), (b) for each part of each claim, its cells moved
so that its statistic sits at the part's alternative (claims.yaml `false_at`, just outside its margin or on the
wrong side of its threshold: the claim false), everything else as in (a). Each scenario is `draws` whole studies;
each study is decided by the real verdict code (bootstrap with `resamples`). A claim's P(supported | false) is the
largest over its parts' alternatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from visual_words.claims import claims_of, decidable
from visual_words.claims import design as D
from visual_words.claims import interval as V
from visual_words.claims.design import PartDesign, Unit

DRAWS, RESAMPLES, RHOS = 400, 200, (0.0, 0.3, 0.6)
TARGET_TRUE, TARGET_FALSE = 0.9, 0.05  # P(supported | true) >= , P(supported | false) <= (at ρ = 0.3)


def draw_unit(mean: float, spread: float, shape: tuple[int, int, int], rho: float, rng: np.random.Generator
              ) -> np.ndarray:
    """[draws, concepts, anchors] trial values of one cell under the hierarchical model (module docstring)."""
    d, c, a = shape
    if mean <= 0 or mean >= 1 or spread <= 0:
        return np.full(shape, float(np.clip(mean, 0, 1)))
    between = rho * spread  # Var(p_c) as a fraction of μ(1 − μ)
    within = spread * (1 - rho) / (1 - between)  # Var(word | p_c) as a fraction of p_c(1 − p_c), on average
    if between > 0:
        k = 1 / between - 1
        p = rng.beta(mean * k, (1 - mean) * k, size=(d, c, 1))
    else:
        p = np.full((d, c, 1), mean)
    if within >= 1 - 1e-9:
        return (rng.random((d, c, a)) < p).astype(float)
    k = 1 / within - 1
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return rng.beta(p * k, (1 - p) * k, size=(d, c, a))


def alternative_means(d: PartDesign) -> dict[Unit, float]:
    """The part's cells' means when its statistic sits at its alternative (the others stay at the paper's)."""
    target = D.alternative_statistic(d)
    mean = {u: d.paper[u].mean for us in d.groups.values() for u in us}
    counts = {(u[0], u[1], u[3]): n for u, n in d.n.items()}
    g = D.paper_group_means(d.groups, counts, d.paper)
    rule = d.part.rule
    for name, us in d.groups.items():
        ds = d.dataset_of[name]
        if rule in ("at_least", "at_most") or (rule == "close" and name == ds):
            shift = target if rule != "close" else float(g[f"{ds} versus"]) + target - float(g[ds])
            for u in us:
                mean[u] = mean[u] + shift
        elif rule == "share" and name.endswith(" transferred"):
            share = float(g[name]) / float(g[f"{ds} in-domain"])
            for u in us:
                mean[u] = mean[u] * (share + target) / share
        elif rule == "order" and name.startswith(f"{ds} {d.part.high}→"):
            def share_of(s):
                targets = [n.split("→")[1] for n in d.groups if n.startswith(f"{ds} {s}→")]
                return sum(float(g[f"{ds} {s}→{t}"]) / float(g[f"{ds} {t}"]) for t in targets) / len(targets)
            k = (share_of(d.part.low) + target) / share_of(d.part.high)
            for u in us:
                mean[u] = mean[u] * k
    return {u: float(np.clip(m, 0.0, 1.0)) for u, m in mean.items()}


def coverage(d: PartDesign, boot: np.ndarray) -> float:
    """How often the two-sided 95 % bootstrap interval (V.COVERAGE_LEVEL) of the part's statistic, computed on
    studies drawn with the paper's values true ([draws, resamples]), contains the statistic's true value (its
    value at the paper's means): the honesty of the bootstrap, whatever level the verdict uses."""
    counts = {(u[0], u[1], u[3]): n for u, n in d.n.items()}
    truth = float(d.statistic(D.paper_group_means(d.groups, counts, d.paper), {}))
    lo, hi = V.percentile_bounds(boot, V.COVERAGE_LEVEL)
    return float(((lo <= truth) & (truth <= hi)).mean())


@dataclass
class Calibration:
    id: str
    text: str
    kind: str
    rho: float
    supported_true: float
    contradicted_true: float
    supported_false: float
    worst_part: str  # the part whose alternative is supported most often
    checked: bool = True  # the profile decides it (report.claims); else calibrated to show why it is left out
    runnable: bool = True
    parts: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def meets(self) -> bool:
        return self.supported_true >= TARGET_TRUE and self.supported_false <= TARGET_FALSE

    def to_dict(self) -> dict:
        r = lambda x: None if isinstance(x, float) and math.isnan(x) else round(x, 4)  # noqa: E731
        return {"id": self.id, "kind": self.kind, "checked": self.checked, "rho": self.rho,
                "p_supported_if_true": r(self.supported_true),
                "p_contradicted_if_true": r(self.contradicted_true),
                "p_supported_if_false": r(self.supported_false), "worst_alternative": self.worst_part,
                "meets_targets": self.meets if self.runnable else None, "parts": self.parts}


def calibrate(cfg, rhos=RHOS, draws: int = DRAWS, resamples: int = RESAMPLES, seed: int = 0,
              progress: bool = False) -> list[Calibration]:
    """P(supported | true), P(contradicted | true), P(supported | false) per ρ, for every claim with a verdict (those
    the profile does not decide too: their numbers say why they are left out). Sanity checks are deterministic."""
    counts, shape = D.design_counts(cfg), D.design_shape(cfg)
    checked = {c.id for c in claims_of(cfg)}
    plan = [(c, V.designs(cfg, c, counts)) for c in decidable() if c.kind != "sanity"]
    parts = [(c, p, d) for c, ds in plan for p, d in zip(c.parts, ds) if d is not None and d.runnable]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rhos) * 2 * len(parts), desc="vw claims simulate", unit="scenario")
    out = []
    for rho in rhos:
        rng = np.random.default_rng([seed, int(round(rho * 1000))])
        world: dict[Unit, tuple[np.ndarray, np.ndarray]] = {}  # the paper-true studies, shared by every claim

        def studies(d: PartDesign, means: dict[Unit, float] | None):
            boots = {}
            for us in d.groups.values():
                for u in us:
                    moved = means is not None and means[u] != d.paper[u].mean
                    if moved or u not in world:  # a cell the alternative leaves alone is the paper-true one
                        c, a = shape[(u[0], u[1], u[3])]
                        x = draw_unit(means[u] if moved else d.paper[u].mean, d.paper[u].spread, (draws, c, a),
                                      rho, rng)
                        (boots if moved else world)[u] = V.bootstrap_unit(x, rng, resamples)
                    boots.setdefault(u, world[u])
            point, reps = V.group_means(d, boots, d.n)
            verdict, boot = V.decide(d, point, reps, V.dataset_weights(d, rng, (draws, resamples)))[3:]
            return verdict, boot

        true_v, false_v, covered = {}, {}, {}
        for c, p, d in parts:
            true_v[(c.id, p.name)], boot = studies(d, None)
            covered[(c.id, p.name)] = coverage(d, boot)
            false_v[(c.id, p.name)] = studies(d, alternative_means(d))[0]
            if bar is not None:
                bar.update(2)
        for claim, ds in plan:
            names = [p.name for p, d in zip(claim.parts, ds) if d is not None and d.runnable]
            runnable = all(d is None or d.runnable for d in ds) and bool(names)
            if not names or not runnable:
                out.append(Calibration(claim.id, claim.text, claim.kind, rho, math.nan, math.nan, math.nan, "",
                                       claim.id in checked, runnable=False))
                continue
            v = V.combine([true_v[(claim.id, n)] for n in names])
            worst, p_false, per_part = "", -1.0, {}
            for n in names:
                others = [true_v[(claim.id, m)] == V.SUPPORTED for m in names if m != n]
                ok = (false_v[(claim.id, n)] == V.SUPPORTED) & np.logical_and.reduce(others) if others else \
                    false_v[(claim.id, n)] == V.SUPPORTED
                per_part[n] = {"p_supported_if_true": round(float((true_v[(claim.id, n)] == V.SUPPORTED).mean()), 4),
                               "p_supported_if_false": round(float(ok.mean()), 4),
                               "coverage_95": round(covered[(claim.id, n)], 4)}
                if ok.mean() > p_false:
                    worst, p_false = n, float(ok.mean())
            out.append(Calibration(claim.id, claim.text, claim.kind, rho, float((v == V.SUPPORTED).mean()),
                                   float((v == V.CONTRADICTED).mean()), p_false, worst, claim.id in checked,
                                   parts=per_part))
    if bar is not None:
        bar.close()
    return out


def format_table(cal: list[Calibration], profile: str, draws: int, resamples: int) -> str:
    """The calibration as a text table: one row per claim, one column block per ρ."""
    rhos = sorted({c.rho for c in cal})
    ids = list(dict.fromkeys(c.id for c in cal))
    by = {(c.id, c.rho): c for c in cal}
    head = f"{'claim':<6}{'kind':<9}{'checked':<8}" + "".join(
        f"| ρ={r:<3g} P(sup|true) P(con|true) P(sup|false) " for r in rhos)
    lines = [f"[claims] calibration of the verdicts on profile {profile}: {draws} simulated studies per scenario, "
             f"bootstrap {resamples} resamples (src/visual_words/claims/simulate.py); targets at ρ = 0.3: "
             f"P(sup|true) >= {TARGET_TRUE}, P(sup|false) <= {TARGET_FALSE}", head]
    for cid in ids:
        first = by[(cid, rhos[0])]
        row = f"{cid:<6}{first.kind:<9}{'yes' if first.checked else 'no':<8}"
        for r in rhos:
            c = by[(cid, r)]
            if not c.runnable:
                row += f"| {'not in this design':<43}"
                continue
            mark = "" if r != 0.3 else (" ok" if c.meets else " MISS")
            row += f"| {'':6}{c.supported_true:>11.3f} {c.contradicted_true:>11.3f} {c.supported_false:>12.3f}{mark:<5}"
        lines.append(row.rstrip())
    for r in rhos:  # the honesty of the bootstrap itself, for the claims the profile decides
        cov = [f"{c.id} {name} {v['coverage_95']:.3f}" for c in cal if c.rho == r and c.checked and c.runnable
               for name, v in c.parts.items()]
        if cov:
            lines.append(f"[claims] ρ = {r:g}: coverage of the two-sided 95 % bootstrap interval with the paper's "
                         f"values true (nominal 0.95): " + ", ".join(cov))
    lines.append("[claims] sanity checks (not counted as the paper's claims): C11 is deterministic (triangle "
                 "inequality), supported whenever the code is right")
    return "\n".join(lines)
