"""The probability that a claim check passes if the paper is right: its power at the profile's cell sizes.

Under "the paper is right", each cell's trials are draws around the paper's value:
- accuracies (generation, classification): each trial counted as one Bernoulli draw with the paper's mean. A trial's
  accuracy lies in [0, 1], and no [0,1]-valued score with that mean has a larger variance than a Bernoulli one, so
  this is the pessimistic case; a pooled group's count is then a sum of binomials, whose distribution is computed
  exactly (convolution), and the part's pass probability is summed exactly over the groups' joint distribution.
- AP (detection): per-trial values from a Beta distribution with the paper's mean and the per-trial spread its 95 %
  CI implies over its 100 trials (where it prints no CI, the largest spread a [0,1] score can have), resampled many
  times (a parametric bootstrap of the paper's CIs, fixed seed).
A part passes when its statistic lies in its acceptance interval (check.py); a claim passes when all its parts do,
and its power is the product of its parts' (parts treated as independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from visual_words.claims.design import PartDesign, Unit, in_interval

SIMULATIONS = 20_000
EXACT_LIMIT = 4_000_000  # largest joint support summed exactly; beyond it (or with AP) the power is simulated


@dataclass(frozen=True)
class PartPower:
    power: float
    method: str  # "exact binomial" | "simulation (N draws)" | "deterministic"


def group_pmf(units: list[Unit], d: PartDesign) -> tuple[np.ndarray, np.ndarray]:
    """(means, probabilities) of a pooled accuracy group: the exact distribution of its total count / its n."""
    pmf = np.array([1.0])
    for u in units:
        pmf = np.convolve(pmf, stats.binom.pmf(np.arange(d.n[u] + 1), d.n[u], d.paper[u].mean))
    total = sum(d.n[u] for u in units)
    return np.arange(total + 1) / total, pmf


def sample_unit(u: Unit, d: PartDesign, rng: np.random.Generator, reps: int) -> np.ndarray:
    """`reps` draws of the unit's mean over its n trials under the paper's model."""
    n, c = d.n[u], d.paper[u]
    if c.accuracy:
        return rng.binomial(n, c.mean, size=reps) / n
    return sample_ap_trials(c.mean, c.sd, rng, (reps, n)).mean(axis=1)


def sample_ap_trials(mean: float, sd: float, rng: np.random.Generator, shape) -> np.ndarray:
    """Per-trial AP values with the given mean and spread: Beta when a Beta can have that spread, else Bernoulli
    (the largest spread a [0,1] score can have)."""
    var = sd * sd
    if mean <= 0 or mean >= 1:
        return np.full(shape, float(np.clip(mean, 0, 1)))
    if var >= mean * (1 - mean) - 1e-12:
        return (rng.random(shape) < mean).astype(float)
    common = mean * (1 - mean) / var - 1
    return rng.beta(mean * common, (1 - mean) * common, size=shape)


def part_power(d: PartDesign, simulations: int = SIMULATIONS, seed: int = 0) -> PartPower:
    if not d.runnable:
        return PartPower(math.nan, "not in this profile's grid")
    units = [u for us in d.groups.values() for u in us]
    if all(d.paper[u].accuracy for u in units):
        pmfs = {name: group_pmf(us, d) for name, us in d.groups.items()}
        size = math.prod(len(p[0]) for p in pmfs.values())
        if size <= EXACT_LIMIT:
            names = list(pmfs)
            grids = np.meshgrid(*[pmfs[k][0] for k in names], indexing="ij", sparse=True)
            probs = np.meshgrid(*[pmfs[k][1] for k in names], indexing="ij", sparse=True)
            joint = math.prod(probs) if len(probs) > 1 else probs[0]
            ok = in_interval(d.statistic(dict(zip(names, grids))), d.accept)
            return PartPower(float(np.sum(np.broadcast_to(joint, ok.shape) * ok)), "exact binomial")
    rng = np.random.default_rng(seed)
    means = {}
    for name, us in d.groups.items():
        draws = {u: sample_unit(u, d, rng, simulations) for u in us}
        means[name] = sum(draws[u] * d.n[u] for u in us) / sum(d.n[u] for u in us)
    ok = in_interval(d.statistic(means), d.accept)
    return PartPower(float(ok.mean()), f"simulation ({simulations} draws, paper CIs)")


def claim_power(part_powers: list[PartPower]) -> float:
    return float(math.prod(p.power for p in part_powers))
