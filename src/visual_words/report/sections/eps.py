"""The ε-ball section: where the trained words land in their own and the other models' token tables
(the analysis stage's eps_stats.csv): a figure, a table per trained task × table × δ, eps_summary.csv."""

from __future__ import annotations

from functools import partial

import pandas as pd

from visual_words.claims.point import nearest_is_anchor_by_delta
from visual_words.report import figures as F
from visual_words.report.section import CsvFile, Figure, Section, Table, frame_rows

ID, TITLE = "eps", "Where the words land: ε-ball statistics"


def eps_section(eps: pd.DataFrame, banner: str = "") -> Section:
    """`eps`: the analysis stage's eps_stats table (one row per trained vector and token table)."""
    from visual_words.analysis.spaces import summary

    s = summary(eps)
    header, rows = frame_rows(s)
    own = eps[~eps["transferred"].astype(bool)]
    # per δ, never pooled: inside δ ≤ 0.5 the share is 1 by construction, so pooling would hide the other radii
    own_by, moved_by = nearest_is_anchor_by_delta(eps, False), nearest_is_anchor_by_delta(eps, True)
    headline = [{"value": f"{v:.2f}", "label": f"share of trained vectors whose nearest token is the anchor, "
                                               f"δ = {F.delta_label(float(d))}"} for d, v in own_by.items()]
    headline += [{"value": f"{v:.2f}", "label": f"the same after transfer, δ = {F.delta_label(float(d))} "
                                                "(the paper: words snap to the nearest shared word)"}
                 for d, v in moved_by.items()]
    return Section(
        ID, TITLE,
        "For every trained vector, in its own model's token table and (transferred) in the other two: distance to "
        "the anchor in units of the anchor's nearest-neighbour distance d_nn, whether the nearest vocabulary token "
        "is the anchor, the anchor's rank among all tokens, cosine to the anchor "
        "(artifacts/<profile>/analysis/eps_stats.csv).",
        figures=[Figure("eps_stats", "ε-ball statistics",
                        "Top left: in-domain ‖v − anchor‖ / d_nn per δ (the dotted line: δ = 0.5, inside which the "
                        "anchor is always the nearest token). Top right: share of vectors whose nearest token is the "
                        "anchor. Bottom: the anchor's rank and the cosine to the anchor, in-domain (grey) and "
                        "transferred (purple).", partial(F.eps_figure, eps, banner))],
        tables=[Table("Per trained task, table and δ", header, rows, note="File: eps_summary.csv.")],
        csv={"eps_summary.csv": CsvFile(s)},
        metrics={"eps": {"vectors": int(len(own)), "nearest_is_anchor_in_domain": own_by,
                         "nearest_is_anchor_transferred": moved_by or None}},
        headline=headline)
