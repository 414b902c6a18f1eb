"""The paper's headline claims as checks with stated power (a profile lists the ones it checks in `report.claims`).

- `claims.yaml` (beside this file): each claim's parts, rules and tolerances, as data.
- `design.py`: a claim part against a profile's trial grid -> the cells it reads, their trial counts and the paper's
  values (the statistic, its acceptance interval).
- `power.py`: the probability that the part (and the claim) passes if the paper is right (exact binomial for
  accuracies, a parametric bootstrap from the paper's CIs for AP).
- `check.py`: the same parts on this run's evaluation / analysis tables -> pass / fail / inconclusive.

Interface for the report (and for merging with any other claim table): `check.check_claims(cfg, evaluation, eps)`
returns one `ClaimResult` per claim id of `cfg.report.claims`, each with `to_dict()` giving
{id, text, status: pass|fail|inconclusive|not run, power, parts: [...]}.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources

import yaml

KINDS = ("at_least", "at_most", "close", "share", "order", "exact")
TASKS = ("generation", "detection", "classification")


class ClaimSpecError(ValueError):
    """A bad entry in claims.yaml or an unknown claim id in report.claims."""


@dataclass(frozen=True)
class CellSpec:
    trained: str
    eval: str
    deltas: tuple[float, ...]


@dataclass(frozen=True)
class Part:
    claim: str
    name: str
    kind: str
    cell: CellSpec | None = None
    versus: CellSpec | None = None
    low: str = ""
    high: str = ""
    deltas: tuple[float, ...] = ()
    tol: float | None = None  # None = report.tolerance
    max_delta: float = 0.5


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    parts: tuple[Part, ...]


def _delta(v) -> float:
    return math.inf if str(v).lower() in ("inf", "infinity", ".inf") else float(v)


def _cell(raw, where: str) -> CellSpec:
    if not isinstance(raw, dict) or raw.get("trained") not in TASKS or raw.get("eval") not in TASKS:
        raise ClaimSpecError(f"claims.yaml: `{where}` needs trained/eval tasks ({', '.join(TASKS)}) and deltas")
    return CellSpec(raw["trained"], raw["eval"], tuple(_delta(d) for d in raw.get("deltas", ["inf"])))


@functools.cache
def load_claims() -> dict[str, Claim]:
    raw = yaml.safe_load(resources.files(__package__).joinpath("claims.yaml").read_text())
    out = {}
    for cid, c in raw.items():
        parts = []
        for i, p in enumerate(c["parts"]):
            where = f"{cid}.parts[{i}]"
            if p.get("kind") not in KINDS:
                raise ClaimSpecError(f"claims.yaml: `{where}.kind` must be one of {', '.join(KINDS)}")
            parts.append(Part(
                claim=cid, name=p["name"], kind=p["kind"],
                cell=_cell(p["cell"], f"{where}.cell") if "cell" in p else None,
                versus=_cell(p["versus"], f"{where}.versus") if "versus" in p else None,
                low=p.get("low", ""), high=p.get("high", ""),
                deltas=tuple(_delta(d) for d in p.get("deltas", ["inf"])),
                tol=float(p["tol"]) if "tol" in p else None, max_delta=float(p.get("max_delta", 0.5))))
        out[cid] = Claim(cid, c["text"], tuple(parts))
    return out


def claims_of(cfg) -> list[Claim]:
    """The claims `cfg.report.claims` names, in that order (an unknown id is an error naming params.yaml)."""
    table = load_claims()
    unknown = [c for c in cfg.report.claims if c not in table]
    if unknown:
        raise ClaimSpecError(f"{cfg.source}: `report.claims`: unknown claim `{unknown[0]}` "
                             f"(src/visual_words/claims/claims.yaml has: {', '.join(table)})")
    return [table[c] for c in cfg.report.claims]
