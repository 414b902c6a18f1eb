"""The verdicts section ("Verdicts on the paper's claims"): each claim the profile decides (claims/interval.py) as
supported / contradicted / inconclusive / not run, part by part with our value, its structured CI (at the part's
level), the paper's value and the region that supports it; sanity checks in a table apart (not counted); the
calibration of these verdicts at this profile's design (claims/simulate.py); claims.csv (one row per part);
metrics.json `verdicts`, `verdicts_summary`, `sanity`, `calibration`."""

from __future__ import annotations

import math

import pandas as pd

from visual_words.claims.interval import check_claims
from visual_words.claims.simulate import DRAWS, RESAMPLES, TARGET_FALSE, TARGET_TRUE, calibrate
from visual_words.report.section import CsvFile, Section, Table

STATUS_CLASS = {"supported": "ok", "contradicted": "flag", "inconclusive": "na", "not run": "na"}
COUNTED = ("claim", "reading")  # sanity checks are shown apart and never counted as the paper's claims


def _num(x, digits=3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else (
        "∞" if math.isinf(x) and x > 0 else "-∞" if math.isinf(x) else f"{x:.{digits}f}")


def _rows(results) -> list[dict]:
    rows = []
    for c in results:
        label = f"{c.id}: {c.text}" + (" [the project's reading]" if c.kind == "reading" else "")
        for i, p in enumerate(c.parts):
            first = [label, c.status] if i == 0 else ["", ""]
            ci = "" if math.isnan(p.ci[0]) else f" [{_num(p.ci[0], 2)}, {_num(p.ci[1], 2)}]"
            rows.append({"class": STATUS_CLASS.get(p.status, "na"), "cells": [
                *first, p.name, _num(p.value) + ci, _num(p.paper),
                f"[{_num(p.region[0], 2)}, {_num(p.region[1], 2)}]", f"{p.margin}; level {p.level:g}", p.cells,
                p.status]})
    return rows


def calibration_table(cal) -> Table:
    rhos = sorted({c.rho for c in cal})
    header = ["claim", "checked", *[f"ρ = {r:g}: P(sup | true) / P(con | true) / P(sup | false)" for r in rhos]]
    by = {(c.id, c.rho): c for c in cal}
    rows = []
    for cid in dict.fromkeys(c.id for c in cal):
        cells = [cid, "yes" if by[(cid, rhos[0])].checked else "no"]
        for r in rhos:
            c = by[(cid, r)]
            cells.append("not in this design" if not c.runnable else
                         f"{c.supported_true:.2f} / {c.contradicted_true:.2f} / {c.supported_false:.2f}")
        ok = by.get((cid, 0.3))
        rows.append({"class": "ok" if ok and ok.runnable and ok.meets else "na", "cells": cells})
    return Table("Calibration of these verdicts (simulated studies of this design)", header, rows,
                 f"{DRAWS} simulated studies per scenario, {RESAMPLES} bootstrap resamples each "
                 "(src/visual_words/claims/simulate.py; `vw claims simulate`). Targets at ρ = 0.3: "
                 f"P(supported | true) ≥ {TARGET_TRUE}, P(supported | false) ≤ {TARGET_FALSE} (green rows). "
                 "ρ = within-concept correlation of the words.")


def claims_profile_section(cfg, evaluation: pd.DataFrame | None, eps: pd.DataFrame | None,
                           calibration=None) -> Section:
    """The section for the claims `cfg` decides, on this run's evaluation and ε-ball tables. `calibration`:
    claims.simulate.calibrate(cfg) when already computed (else computed here)."""
    results = check_claims(cfg, evaluation, eps, cfg.evaluate.bootstrap_resamples, cfg.evaluate.bootstrap_seed)
    cal = calibration if calibration is not None else calibrate(cfg)
    counted = [c for c in results if c.kind in COUNTED]
    sanity = [c for c in results if c.kind == "sanity"]
    parts = [{"claim": c.id, "kind": c.kind, "claim_status": c.status, "part": p.name, "rule": p.rule,
              "status": p.status, "ours": p.value, "ci_low": p.ci[0], "ci_high": p.ci[1], "paper": p.paper,
              "supported_low": p.region[0], "supported_high": p.region[1], "margin": p.margin, "level": p.level,
              "cells": p.cells}
             for c in results for p in c.parts]
    header = ["claim", "verdict", "part", "ours [CI]", "paper", "supported inside", "margin; level", "cells (trials)",
              "part verdict"]
    summary = {s: sum(c.status == s for c in counted) for s in ("supported", "contradicted", "inconclusive",
                                                                  "not run")}
    text = ("Each claim is decided on this run's trials. A part's CI comes from a bootstrap that resamples the "
            "study's structure: the concepts of each cell, then the words (anchors) within each drawn concept; its "
            "bounds are one-sided bounds at the part's level (written in claims.yaml before any run; the CI shown "
            "is the two-sided 2·level − 1 one). A part "
            "is supported when the whole CI lies inside the region around the paper's value set by the part's "
            "margin (or above a threshold), contradicted when the whole CI lies outside, inconclusive otherwise; a "
            "claim is supported when all its parts are. Margins and their reasons: "
            "src/visual_words/claims/claims.yaml. The calibration below says how often these verdicts are right "
            "at this design.")
    tables = [Table("Verdicts", header, _rows(counted),
                    "File: claims.csv (one row per part); metrics.json `verdicts`. Per-cell agreement with the "
                    "paper is in comparison.csv: a description, not a verdict.")]
    if sanity:
        tables.append(Table("Sanity checks (the code, not the paper's claims; not counted)", header, _rows(sanity)))
    tables.append(calibration_table(cal))
    return Section(
        "claims-profile", "Verdicts on the paper's claims", text, tables=tables,
        csv={"claims.csv": CsvFile(pd.DataFrame(parts))},
        headline=[{"value": f"{summary['supported']} / {len(counted)}",
                   "label": f"claims supported ({summary['contradicted']} contradicted, {summary['inconclusive']} "
                            f"inconclusive, {summary['not run']} not run)"}],
        metrics={"verdicts": {c.id: c.to_dict() for c in counted}, "verdicts_summary": summary,
                 "sanity": {c.id: c.to_dict() for c in sanity},
                 "calibration": [c.to_dict() for c in cal]},
    )
