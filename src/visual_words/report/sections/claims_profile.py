"""The "Claims checked by this profile" section (profiles with `report.claims`): each named claim with pass / fail /
inconclusive / not run from its interval check (claims/interval.py), its tolerance, cell sizes and power;
claims.csv (one row per part); metrics.json `claims_profile`."""

from __future__ import annotations

import math

import pandas as pd

from visual_words.claims.interval import check_claims
from visual_words.report.section import CsvFile, Section, Table

STATUS_CLASS = {"pass": "ok", "fail": "flag", "inconclusive": "na", "not run": "na"}


def _num(x, digits=3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else (
        "∞" if math.isinf(x) and x > 0 else "-∞" if math.isinf(x) else f"{x:.{digits}f}")


def claims_profile_section(cfg, evaluation: pd.DataFrame | None, eps: pd.DataFrame | None) -> Section:
    """The section for `cfg.report.claims`, decided on this run's evaluation and ε-ball tables."""
    results = check_claims(cfg, evaluation, eps, cfg.evaluate.bootstrap_resamples, cfg.evaluate.bootstrap_seed)
    parts = [{"claim": c.id, "claim_status": c.status, "claim_power": round(c.power, 4), "part": p.name,
              "rule": p.rule, "status": p.status, "ours": p.value, "ci_low": p.ci[0], "ci_high": p.ci[1],
              "paper": p.reference, "accept_low": p.accept[0], "accept_high": p.accept[1],
              "cells": p.cells, "power": round(p.power, 4), "power_method": p.method}
             for c in results for p in c.parts]
    header = ["claim", "status", "power", "part", "rule", "ours [95 % CI]", "paper", "agrees inside",
              "cells (trials)", "part power", "part status"]
    rows = []
    for c in results:
        for i, p in enumerate(c.parts):
            first = [f"{c.id}: {c.text}", c.status, f"{c.power:.2f}"] if i == 0 else ["", "", ""]
            ci = "" if math.isnan(p.ci[0]) else f" [{_num(p.ci[0], 2)}, {_num(p.ci[1], 2)}]"
            rows.append({"class": STATUS_CLASS.get(p.status, "na"), "cells": [
                *first, p.name, p.rule, _num(p.value) + ci, _num(p.reference),
                f"[{_num(p.accept[0], 2)}, {_num(p.accept[1], 2)}]", p.cells, f"{p.power:.3f} ({p.method})",
                p.status]})
    n_pass = sum(c.status == "pass" for c in results)
    text = ("Each claim is checked on this run's trials. A part passes when our statistic lies in the interval "
            f"around the paper's value (tolerance {cfg.report.tolerance:g} unless stated in "
            "src/visual_words/claims/claims.yaml), fails when its whole 95 % bootstrap CI lies outside it, and is "
            "inconclusive otherwise; a claim passes when all its parts pass. Power = the probability of a pass if the "
            "paper is right, at these cell sizes (src/visual_words/claims/power.py).")
    return Section(
        "claims-profile", "Claims checked by this profile", text,
        tables=[Table("Claims", header, rows, "File: claims.csv (one row per part); metrics.json `claims_profile`.")],
        csv={"claims.csv": CsvFile(pd.DataFrame(parts))},
        headline=[{"value": f"{n_pass} / {len(results)}", "label": "checked claims pass"}],
        metrics={"claims_profile": {c.id: c.to_dict() for c in results}},
    )
