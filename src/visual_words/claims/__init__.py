"""The paper's claims (ARTIFACT.md §5): one definition per claim id, read by the verdict, the description and the
calibration.

- `claims.yaml` (beside this file): one entry per id — its text, its kind (the paper's claim, the project's reading
  of a figure, a sanity check of the code, or a description), its point rule and, where a profile can decide it,
  its parts, each with the margin and the alternative written down before any run. `load_claims()` is the one
  loader.
- `interval.py` with `design.py`: the verdict. Each part's statistic, its CI (one-sided bounds at the part's
  `level`) from a bootstrap that resamples
  the study's own structure (concepts, then anchors within a concept; datasets where the part pools them), and
  supported / contradicted / inconclusive / not run against the part's margin -> an `IntervalResult`.
- `simulate.py`: the calibration. Whole studies drawn from a hierarchical model (concept effect + anchor noise),
  with the paper's values true and with each part false; the verdict code above run on every draw -> per claim
  P(supported | true), P(contradicted | true), P(supported | false) (`vw claims simulate`, `vw plan`).
- `point.py` and `compare.py`: the description. Each claim's point rule on whatever ran (our cell means next to the
  paper's numbers, per cell): "agrees" / "differs" / "not run" / "not judged", never a verdict.
- Their report sections: `report/sections/claims_profile.py` (verdicts: claims.csv, metrics.json `verdicts`) and
  `report/sections/claims.py` (the description, metrics.json `claims`).

Layer: claims (docs/design.md, "Layers"; `make lint` enforces it). It may import analysis, evaluate, toolkit, train,
transfer, plan, reuse, data, models, eps_ball and the foundations; never report or commands.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from visual_words.tasks import TASKS

# point rule -> the keys it needs (claims.yaml's header says what each rule does)
POINT_RULES: dict[str, tuple[str, ...]] = {
    "cells": ("select",), "share": ("pair",), "ordering": ("order", "min_datasets"), "range": ("select",),
    "spread": ("deltas",), "eps_share": ("max_delta", "expected"), "reported": (), "qualitative": (),
    "benchmark": ("command",)}
# part rule -> the keys it needs (every rule but `exact` also needs a margin and the alternative `false_at`)
PART_RULES: dict[str, tuple[str, ...]] = {
    "at_least": ("cell",), "at_most": ("cell",), "close": ("cell", "versus"), "share": ("cell",),
    "order": ("low", "high"), "exact": ()}
KINDS = ("claim", "reading", "sanity", "description")  # claim/reading: a verdict; sanity: shown apart, not counted
SOURCE = "src/visual_words/claims/claims.yaml"


class ClaimSpecError(ValueError):
    """A bad entry in claims.yaml or an unknown claim id in report.claims."""


@dataclass(frozen=True)
class CellSpec:
    trained: str
    eval: str
    deltas: tuple[float, ...]


@dataclass(frozen=True)
class Part:
    """One part of a claim's interval check (claims.yaml `parts`)."""

    claim: str
    name: str
    rule: str
    cell: CellSpec | None = None
    versus: CellSpec | None = None
    low: str = ""
    high: str = ""
    deltas: tuple[float, ...] = ()
    max_delta: float = 0.5
    margin: float = 0.0  # absolute, or a fraction of the paper's value when `relative`
    relative: bool = False
    false_at: float = 0.0  # the alternative simulated: the statistic's distance from the paper, in the margin's units
    over: str = "pooled"  # share: `best` (the paper's best dataset of those run) or `pooled` (mean over datasets)
    side: str = "both"  # share: `both` (within ±margin of the paper's share) or `at_least` (at most margin below it)
    resample_datasets: bool = False  # the CI also resamples the datasets the part pools
    # The confidence of each of the verdict's one-sided tests (claims.yaml `level`): supported when the bound on the
    # claim's side clears the margin at this level, contradicted when the other bound does. The interval shown is
    # the two-sided (2·level − 1) one; 0.975 = today's two-sided 95 % interval.
    level: float = 0.975

    def margin_text(self) -> str:
        return f"±{self.margin:.0%} of the paper's value" if self.relative else f"{self.margin:g}"


@dataclass(frozen=True)
class PointRule:
    """A claim's point rule (claims.yaml `point`): its name and the keys it reads."""

    rule: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    tolerance: float | None  # None: params.yaml `report.tolerance`
    point: PointRule
    parts: tuple[Part, ...] = ()
    kind: str = "claim"
    why: str = ""  # why the margins are what they are (claims.yaml `why`)

    def tol(self, report_tolerance: float) -> float:
        return float(report_tolerance) if self.tolerance is None else self.tolerance


def delta_value(v) -> float:
    return math.inf if str(v).lower() in ("inf", "infinity", ".inf") else float(v)


def _cell(raw, where: str) -> CellSpec:
    if not isinstance(raw, dict) or raw.get("trained") not in TASKS or raw.get("eval") not in TASKS:
        raise ClaimSpecError(f"{SOURCE}: `{where}` needs trained/eval tasks ({', '.join(TASKS)}) and deltas")
    return CellSpec(raw["trained"], raw["eval"], tuple(delta_value(d) for d in raw.get("deltas", ["inf"])))


def _needs(raw: dict, rules: dict[str, tuple[str, ...]], where: str) -> str:
    rule = raw.get("rule") if isinstance(raw, dict) else None
    if rule not in rules:
        raise ClaimSpecError(f"{SOURCE}: `{where}.rule` must be one of {', '.join(rules)}")
    missing = [k for k in rules[rule] if k not in raw]
    if missing:
        raise ClaimSpecError(f"{SOURCE}: `{where}`: rule {rule} needs `{missing[0]}`")
    return rule


def _margin(raw: dict, rule: str, where: str) -> dict:
    if rule == "exact":
        return {}
    m, f = raw.get("margin"), raw.get("false_at")
    relative = isinstance(m, dict)
    value = m.get("relative") if relative else m
    if not isinstance(value, (int, float)) or value < 0 or (rule == "order" and value):
        raise ClaimSpecError(f"{SOURCE}: `{where}.margin` must be a number >= 0 or {{relative: fraction}}"
                             + (" (order: 0, the claimed side of zero)" if rule == "order" else ""))
    if not isinstance(f, (int, float)):
        raise ClaimSpecError(f"{SOURCE}: `{where}.false_at` (the alternative where the part is false) is missing")
    over = raw.get("over", "pooled")
    if over not in ("best", "pooled"):
        raise ClaimSpecError(f"{SOURCE}: `{where}.over` must be best or pooled")
    side = raw.get("side", "both")
    if side not in ("both", "at_least") or (side != "both" and rule != "share"):
        raise ClaimSpecError(f"{SOURCE}: `{where}.side` must be both or at_least (share parts only)")
    level = raw.get("level", 0.975)
    if not isinstance(level, (int, float)) or not 0.5 < level < 1:
        raise ClaimSpecError(f"{SOURCE}: `{where}.level` must be a number between 0.5 and 1 (the confidence of "
                             "each one-sided test, e.g. 0.95)")
    return {"margin": float(value), "relative": relative, "false_at": float(f), "over": over, "side": side,
            "resample_datasets": bool(raw.get("resample_datasets", False)), "level": float(level)}


def _part(cid: str, raw: dict, where: str) -> Part:
    rule = _needs(raw, PART_RULES, where)
    cell = _cell(raw["cell"], f"{where}.cell") if "cell" in raw else None
    versus = _cell(raw["versus"], f"{where}.versus") if "versus" in raw else None
    return Part(claim=cid, name=raw["name"], rule=rule, **_margin(raw, rule, where), cell=cell, versus=versus,
                low=raw.get("low", ""), high=raw.get("high", ""),
                deltas=tuple(delta_value(d) for d in raw.get("deltas", ["inf"])),
                max_delta=float(raw.get("max_delta", 0.5)))


def _claim(cid: str, raw) -> Claim:
    keys = {"text", "tolerance", "point", "parts", "kind", "why"}
    if not isinstance(raw, dict) or not {"text", "point"} <= set(raw) or set(raw) - keys:
        raise ClaimSpecError(f"{SOURCE}: `{cid}` needs `text` and `point` (and may have `tolerance`, `parts`, "
                             "`kind`, `why`)")
    kind = raw.get("kind", "claim")
    if kind not in KINDS:
        raise ClaimSpecError(f"{SOURCE}: `{cid}.kind` must be one of {', '.join(KINDS)}")
    tol = raw.get("tolerance", "report")
    rule = _needs(raw["point"], POINT_RULES, f"{cid}.point")
    parts = tuple(_part(cid, p, f"{cid}.parts[{i}]") for i, p in enumerate(raw.get("parts", [])))
    if parts and kind != "sanity" and not raw.get("why"):
        raise ClaimSpecError(f"{SOURCE}: `{cid}` has parts but no `why` (the reason for its margins)")
    return Claim(cid, str(raw["text"]), None if tol == "report" else float(tol),
                 PointRule(rule, {k: v for k, v in raw["point"].items() if k != "rule"}), parts,
                 kind, " ".join(str(raw.get("why", "")).split()))


class _UniqueKeys(yaml.SafeLoader):
    """YAML keeps the last of two equal keys silently; a claim id given twice must be an error instead."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if dup is not None:
            raise ClaimSpecError(f"{SOURCE}: `{dup}` is defined twice")
        return super().construct_mapping(node, deep=deep)


def parse_claims(text: str) -> dict[str, Claim]:
    """Claims from the text of a claims.yaml, by id in the file's order (a bad entry is a ClaimSpecError)."""
    raw = yaml.load(text, Loader=_UniqueKeys)
    if not isinstance(raw, dict):
        raise ClaimSpecError(f"{SOURCE}: expected a mapping of claim ids")
    return {str(cid): _claim(str(cid), c) for cid, c in raw.items()}


@functools.cache
def load_claims() -> dict[str, Claim]:
    """Every claim of claims.yaml by id, in ARTIFACT.md's order."""
    return parse_claims(resources.files(__package__).joinpath("claims.yaml").read_text())


def decidable() -> list[Claim]:
    """Every claim with parts (a verdict or a sanity check), in claims.yaml's order."""
    return [c for c in load_claims().values() if c.parts]


def claims_of(cfg) -> list[Claim]:
    """The claims a profile decides: those `cfg.report.claims` names, in that order (each must exist and have
    parts, else an error naming params.yaml); every claim with parts when it names none (the paper profile)."""
    table = load_claims()
    if not cfg.report.claims:
        return decidable()
    for c in cfg.report.claims:
        if c not in table:
            raise ClaimSpecError(f"{cfg.source}: `report.claims`: unknown claim `{c}` ({SOURCE} has: "
                                 f"{', '.join(table)})")
        if not table[c].parts:
            raise ClaimSpecError(f"{cfg.source}: `report.claims`: claim `{c}` has no interval check (no `parts` in "
                                 f"{SOURCE}); these have one: {', '.join(k for k, v in table.items() if v.parts)}")
    return [table[c] for c in cfg.report.claims]
