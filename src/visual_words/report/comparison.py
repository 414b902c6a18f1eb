"""The per-cell comparison (claims/compare.py) as the report shows it: comparison.csv and the table rows."""

from __future__ import annotations

import math

import pandas as pd

from visual_words.report.section import CsvFile


def csv_file(comp: pd.DataFrame) -> CsvFile:
    """The comparison as comparison.csv: δ = ∞ written `inf`, four decimals."""
    out = comp.copy()
    out["delta"] = ["inf" if math.isinf(d) else d for d in out["delta"]]
    return CsvFile(out, float_format="%.4f")


COMPARISON_HEADER = ["figure", "metric", "dataset", "trained for", "δ", "n", "ours [95 % CI]", "paper [CI]", "diff",
                     "basis", "status"]


def comparison_rows(comp: pd.DataFrame, only_run: bool = True) -> list[dict]:
    """The comparison as table rows (class `flag` for a cell outside the paper's CI / tolerance), cells of this run
    only unless `only_run` is False."""
    rows = comp[comp["status"] != "not run"] if only_run else comp

    def num(v, digits=3):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"

    def ci(v, lo, hi):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return num(v) + (f" [{num(lo, 2)}, {num(hi, 2)}]" if not (pd.isna(lo) or pd.isna(hi)) else "")

    out = []
    for _, r in rows.iterrows():
        cls = {"agrees": "ok", "outside paper CI": "flag", "outside tolerance": "flag"}.get(r["status"], "na")
        d = "∞" if math.isinf(r["delta"]) else f"{r['delta']:g}"
        out.append({"class": cls, "cells": [
            r["figure"], r["metric"], r["dataset"], r["trained_task"], d, str(r["n"]),
            ci(r["ours"], r["ours_ci_low"], r["ours_ci_high"]), ci(r["paper"], r["paper_ci_low"], r["paper_ci_high"]),
            num(r["diff"]), r["basis"], r["status"]]})
    return out
