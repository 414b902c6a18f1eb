"""The description section: every claim of ARTIFACT.md §5 described cell by cell (claims/claims.yaml,
claims/point.py: agrees / differs / not run / not judged, never a verdict — the verdicts are the claims-profile
section's), and the paper's "reaches up to X % of in-domain" numbers next to ours as a table of the quantitative
section."""

from __future__ import annotations

import pandas as pd

from visual_words.claims.point import evaluate_claims
from visual_words.report.section import Section, Table
from visual_words.report.sections import quantitative
from visual_words.tasks import short

ID, TITLE = "claims", "The paper's claims described cell by cell (ARTIFACT.md §5; not verdicts)"
STATUS_CLASS = {"agrees": "ok", "differs": "flag"}


def artifact_claims(cells: pd.DataFrame | None, eps: pd.DataFrame | None, tolerance: float
                    ) -> tuple[Section, Section]:
    """The claims section, and the transfer-share table for the quantitative section (empty without `cells`)."""
    results = evaluate_claims(cells, eps, tolerance)
    transfer = transfer_table(results, tolerance) if cells is not None else Section(quantitative.ID)
    return claims_section(results), transfer


def claims_section(results) -> Section:
    """`results`: claims.point.evaluate_claims's PointResults, one row each."""
    counts = {s: sum(r.status == s for r in results) for s in ("agrees", "differs", "not run", "not judged")}
    rows = [{"class": STATUS_CLASS.get(r.status, "na"), "cells": [
        r.id, r.claim, r.status, _value(r.value), r.expected, r.tolerance,
        "; ".join(filter(None, [r.detail, ("failed: " + ", ".join(r.failed)) if r.failed else ""]))]}
        for r in results]
    return Section(
        ID, TITLE,
        tables=[Table("Claims", ["#", "claim", "status", "ours", "paper", "tolerance", "details"], rows,
                      note="Definitions: src/visual_words/claims/claims.yaml; metrics.json `claims` holds the same "
                           "rows. A description of whatever ran, cell by cell against the paper's numbers; the "
                           "verdicts are in \"Verdicts on the paper's claims\". Not run = this profile has none of "
                           "the claim's cells.")],
        headline=[{"value": f"{counts['agrees']} agree / {counts['differs']} differ",
                   "label": f"claims described cell by cell ({counts['not run']} not run, "
                            f"{counts['not judged']} not judged)"}],
        metrics={"claims": {r.id: {k: v for k, v in r.to_dict().items() if k != "id"} for r in results},
                 "claims_summary": counts})


def _value(v) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_value(x)}" for k, x in v.items())
    return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def transfer_table(results, tolerance: float) -> Section:
    """The paper's six "reaches up to X % of in-domain" numbers next to ours (best dataset): the pairs of the share
    claims, as metrics.json `transfer_share` and a table of the quantitative section."""
    from visual_words.paper import claims

    share_claims = [r.id for r in results if r.test == "share"]
    values = {k: v for r in results if r.test == "share" and isinstance(r.value, dict) for k, v in r.value.items()}
    if not values:
        return Section(quantitative.ID, skipped=[("transfer claims", "no unconstrained in-domain and transferred "
                                                                     "cells of one dataset")])
    table = []
    for c in claims():
        v = values.get(f"{short(c['trained'])}_to_{short(c['eval'])}")
        paper = f"{c['value']:.2f} ({c['dataset']})"
        table.append((c["claim"], paper, "not run", "", "not run") if v is None else
                     (c["claim"], paper, f"{v['max_share']:.2f} ({v['dataset']})",
                      f"{v['max_share'] - c['value']:+.2f}",
                      "agrees" if v["within_tolerance"] else "outside tolerance"))
    rows = [{"class": "ok" if r[4] == "agrees" else ("flag" if r[4] != "not run" else "na"), "cells": list(r)}
            for r in table]
    return Section(quantitative.ID, quantitative.TITLE, metrics={"transfer_share": values}, tables=[Table(
        "Transfer as a share of in-domain (the paper's §5 headline claims)",
        ["paper claim", "paper", "ours (best dataset)", "diff", "status"], rows,
        note=f"Share = transferred mean / in-domain mean of the evaluated task, unconstrained words; best "
             f"dataset. Agrees within ±{tolerance:g} (claims {', '.join(share_claims)}). File: transfer_shares.csv "
             "(every dataset).")])
