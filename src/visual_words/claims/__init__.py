"""The paper's claims (ARTIFACT.md §5): one definition per claim, read by two checks.

- `claims.yaml` (beside this file): one entry per claim id — its text, its tolerance, its point rule and, where a
  profile can decide it with stated power, its parts. `load_claims()` below is the one loader.
- `point.py`: every profile. Each claim's point rule on whatever ran (our cell means against the paper's numbers)
  -> a `PointResult`: pass / fail / not run / not judged (the report's "The paper's claims, computed", metrics.json
  `claims`).
- `interval.py` with `design.py` and `power.py`: the claims a profile names in `report.claims`. Each part pools the
  cells it reads; its statistic's 95 % bootstrap CI against the acceptance interval gives pass / fail /
  inconclusive / not run, and its power (the probability of a pass if the paper is right) is computed for the
  profile's cell sizes -> an `IntervalResult` (`vw plan` prints the power table).
- Their report sections: `report/sections/claims.py` (point) and `report/sections/claims_profile.py` (interval:
  claims.csv, metrics.json `claims_profile`).

The two results stay two types: a point result says which of many cells disagree, an interval result carries CIs
and power per part; what they share (id, text, status) comes from the same `Claim`.

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
# part rule -> the keys it needs
PART_RULES: dict[str, tuple[str, ...]] = {
    "at_least": ("cell",), "at_most": ("cell",), "close": ("cell", "versus"), "share": ("cell",),
    "order": ("low", "high"), "exact": ()}
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


def _part(cid: str, raw: dict, where: str) -> Part:
    rule = _needs(raw, PART_RULES, where)
    return Part(claim=cid, name=raw["name"], rule=rule,
                cell=_cell(raw["cell"], f"{where}.cell") if "cell" in raw else None,
                versus=_cell(raw["versus"], f"{where}.versus") if "versus" in raw else None,
                low=raw.get("low", ""), high=raw.get("high", ""),
                deltas=tuple(delta_value(d) for d in raw.get("deltas", ["inf"])),
                max_delta=float(raw.get("max_delta", 0.5)))


def _claim(cid: str, raw) -> Claim:
    if not isinstance(raw, dict) or not {"text", "point"} <= set(raw) or set(raw) - {"text", "tolerance", "point",
                                                                                     "parts"}:
        raise ClaimSpecError(f"{SOURCE}: `{cid}` needs `text` and `point` (and may have `tolerance`, `parts`)")
    tol = raw.get("tolerance", "report")
    rule = _needs(raw["point"], POINT_RULES, f"{cid}.point")
    return Claim(cid, str(raw["text"]), None if tol == "report" else float(tol),
                 PointRule(rule, {k: v for k, v in raw["point"].items() if k != "rule"}),
                 tuple(_part(cid, p, f"{cid}.parts[{i}]") for i, p in enumerate(raw.get("parts", []))))


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


def claims_of(cfg) -> list[Claim]:
    """The claims `cfg.report.claims` names, in that order: each must exist and have parts (an interval check),
    else an error naming params.yaml."""
    table = load_claims()
    for c in cfg.report.claims:
        if c not in table:
            raise ClaimSpecError(f"{cfg.source}: `report.claims`: unknown claim `{c}` ({SOURCE} has: "
                                 f"{', '.join(table)})")
        if not table[c].parts:
            raise ClaimSpecError(f"{cfg.source}: `report.claims`: claim `{c}` has no interval check (no `parts` in "
                                 f"{SOURCE}); these have one: {', '.join(k for k, v in table.items() if v.parts)}")
    return [table[c] for c in cfg.report.claims]
