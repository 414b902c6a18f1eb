"""The quantitative section: our per-cell means and CIs next to the paper's (Fig. 3, Fig. 6, the comparison
figure and table), cells.csv, comparison.csv / .html, transfer_shares.csv and the headline numbers."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pandas as pd

from visual_words.claims import compare as cmp
from visual_words.claims.point import transfer_shares
from visual_words.paper import paper_table
from visual_words.report import comparison as shown
from visual_words.report import figures as F
from visual_words.report.section import CsvFile, Figure, Section, Table
from visual_words.tasks import TASKS, short, task

ID, TITLE = "paper", "Fig. 3 and Fig. 6: ours next to the paper"


def quantitative(evaluation: pd.DataFrame, cells: pd.DataFrame, ec, tolerance: float, datasets,
                 banner: str = "") -> Section:
    """`evaluation`: the evaluation table; `cells`: its per-cell statistics (evaluate.stats.summarize); `ec`: the
    `evaluate` settings (bootstrap resamples, seed, CI level); `datasets`: the figures' columns."""
    paper = paper_table()
    comp = cmp.compare(cells, paper, tolerance)
    # The paper's detection figures say "mAP" without saying which: AP@[.50:.95] is the primary comparison (D6),
    # and AP50 is compared to the same paper numbers in extra rows (metric `ap50`), so either reading can be checked.
    ap50 = ap50_comparison(evaluation, paper, ec, tolerance)
    full = pd.concat([comp, ap50], ignore_index=True) if len(ap50) else comp
    rows = shown.comparison_rows(full)
    n = cmp.counts(comp)
    sec = Section(ID, TITLE,
                  "Bars and lines are this run's means over a cell's trials with 95 % percentile-bootstrap CIs "
                  f"({ec.bootstrap_resamples} resamples, seed {ec.bootstrap_seed}); black diamonds and dashed lines "
                  "are the paper's numbers (src/visual_words/registry/paper_numbers.yaml).",
                  csv={"cells.csv": CsvFile(cells), "comparison.csv": shown.csv_file(full)},
                  pages={"comparison.html": Table("Ours next to the paper", shown.COMPARISON_HEADER, rows)})
    unconstrained = np.array([math.isinf(float(d)) for d in cells["delta"]], dtype=bool)
    if unconstrained.any():
        sec.figures.append(Figure(
            "fig3", "Fig. 3", "Fig. 3 - unconstrained words (δ = ∞): each metric for words trained for generation "
            "(blue), detection (orange), classification (green); in-domain where the trained and evaluated task "
            "agree, else transferred by the linear map.", partial(F.fig3, cells, paper, datasets, banner)))
    else:
        sec.skipped.append(("Fig. 3", "no unconstrained (δ = ∞) trials in evaluation.csv"))
    if not unconstrained.all():
        sec.figures.append(Figure(
            "fig6", "Fig. 6", "Fig. 6 - words constrained to the ε-ball of relative radius δ around their anchor.",
            partial(F.fig6, cells, paper, datasets, banner)))
    else:
        sec.skipped.append(("Fig. 6", "no constrained (finite δ) trials in evaluation.csv"))
    if n["compared"]:
        sec.figures.append(Figure(
            "comparison", "Ours vs the paper", f"Every cell both have: {n['compared']} compared, {n['agree']} inside "
            f"the paper's CI (or within ±{tolerance:g} where it gives none), {n['flagged']} flagged (ringed red).",
            partial(F.comparison_scatter, comp, banner)))
    else:
        sec.skipped.append(("comparison figure", "no cell of this run is in the paper's figures"))
    sec.tables.append(Table(
        "Per cell", shown.COMPARISON_HEADER, rows,
        note=f"{n['compared']} cells compared; {n['flagged']} outside the paper's CI / tolerance (red); "
             f"{n['not_run']} paper cells not run by this profile (in comparison.csv). "
             "Files: comparison.csv, comparison.html, cells.csv."))
    sec.metrics["comparison"] = n
    if len(ap50):
        sec.metrics["comparison_ap50"] = cmp.counts(ap50)
    sec.metrics["cells"] = {cell_key(r): round(float(r["mean"]), 4) for _, r in cells.iterrows()
                            if not math.isnan(r["mean"])}
    sec.headline.append({"value": f"{n['agree']} / {n['compared']}",
                         "label": "cells inside the paper's CI / tolerance"})
    shares = transfer_shares(cells)
    if len(shares):
        sec.csv["transfer_shares.csv"] = CsvFile(shares)
    in_domain = {}
    for ev in TASKS:  # in-domain means of the unconstrained words, averaged over datasets
        sel = cells[(cells["eval_task"] == ev).to_numpy() & (cells["trained_task"] == ev).to_numpy() & unconstrained]
        if len(sel):
            in_domain[ev] = float(sel["mean"].mean())
            sec.headline.append({"value": f"{in_domain[ev]:.3f}",
                                 "label": f"in-domain {task(ev).metric_label} (δ = ∞)"})
    if in_domain:
        sec.metrics["in_domain"] = {ev: round(v, 4) for ev, v in in_domain.items()}
    return sec


def ap50_comparison(evaluation: pd.DataFrame, paper: pd.DataFrame, ec, tolerance: float) -> pd.DataFrame:
    """Detection cells scored by AP50 next to the paper's detection numbers (rows with metric `ap50`)."""
    from visual_words.evaluate.stats import summarize

    det = evaluation[(evaluation["eval_task"] == "detection")
                     & pd.to_numeric(evaluation["ap50"], errors="coerce").notna()]
    if not len(det):
        return pd.DataFrame(columns=cmp.COLUMNS)
    det = det.assign(value=pd.to_numeric(det["ap50"]), metric="ap50")
    cells = summarize(det, ec.bootstrap_resamples, ec.bootstrap_seed, ec.ci_level)
    comp = cmp.compare(cells, paper[paper["eval_task"] == "detection"], tolerance)
    return comp.assign(metric="ap50")


def cell_key(r) -> str:
    """A cell's key in metrics.json `cells`: eval task / dataset / trained task (short) / delta."""
    d = "inf" if math.isinf(float(r["delta"])) else f"{float(r['delta']):g}"
    return f"{r['eval_task']}/{r['dataset']}/{short(r['trained_task'])}/delta={d}"
