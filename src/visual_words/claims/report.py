"""The report's "Claims checked by this profile" section: each claim of `report.claims` with pass / fail /
inconclusive / not run, its tolerance, cell sizes and power; claims.csv (one row per part); metrics.json
`claims_profile`."""

from __future__ import annotations

import math

import pandas as pd

from visual_words.claims.interval import check_claims

STATUS_CLASS = {"pass": "ok", "fail": "flag", "inconclusive": "na", "not run": "na"}


def _num(x, digits=3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else (
        "∞" if math.isinf(x) and x > 0 else "-∞" if math.isinf(x) else f"{x:.{digits}f}")


def claims_part(rb, evaluation: pd.DataFrame | None, eps: pd.DataFrame | None) -> None:
    """Adds the section, claims.csv and metrics["claims_profile"] to a ReportBuilder (report.stage)."""
    cfg = rb.cfg
    results = check_claims(cfg, evaluation, eps, cfg.evaluate.bootstrap_resamples, cfg.evaluate.bootstrap_seed)
    rows = []
    for c in results:
        for p in c.parts:
            rows.append({"claim": c.id, "claim_status": c.status, "claim_power": round(c.power, 4), "part": p.name,
                         "rule": p.rule, "status": p.status, "ours": p.value, "ci_low": p.ci[0], "ci_high": p.ci[1],
                         "paper": p.reference, "accept_low": p.accept[0], "accept_high": p.accept[1],
                         "cells": p.cells, "power": round(p.power, 4), "power_method": p.method})
    table = pd.DataFrame(rows)
    rb.write_csv(table, rb.out_dir / "claims.csv")
    rb.metrics["claims_profile"] = {c.id: c.to_dict() for c in results}
    n_pass = sum(c.status == "pass" for c in results)
    rb.headline.insert(0, {"value": f"{n_pass} / {len(results)}", "label": "checked claims pass"})
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
    sec = rb.section("claims-profile", "Claims checked by this profile",
                     "Each claim is checked on this run's trials. A part passes when our statistic lies in the "
                     f"interval around the paper's value (tolerance {cfg.report.tolerance:g} unless stated in "
                     "src/visual_words/claims/claims.yaml), fails when its whole 95 % bootstrap CI lies outside it, "
                     "and is inconclusive otherwise; a claim passes when all its parts pass. Power = the probability "
                     "of a pass if the paper is right, at these cell sizes (src/visual_words/claims/power.py).")
    rb.sections = {"claims-profile": sec, **{k: v for k, v in rb.sections.items() if k != "claims-profile"}}
    rb.table("claims-profile", "Claims", header, rows,
             note="File: claims.csv (one row per part); metrics.json `claims_profile`.")
