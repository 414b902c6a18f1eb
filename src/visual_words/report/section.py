"""What one part of the report returns: a `Section` value. The section functions (report/sections/) build these
from data alone: no file is written and no HTML made there. The builder (report/builder.py) saves the figures and
files and the templates (report/*.html) draw the page, so a section can be checked in a test without a page.

A section holds its title and text, figures to draw, tables as rows, the CSV files and table pages that go beside
the page, its headline numbers, its metrics.json entries, and what it could not draw and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from visual_words.io import atomic_path


@dataclass(frozen=True)
class Figure:
    """A figure of the page: `draw` is a report.figures function with its data bound (functools.partial), called
    only when the builder saves it, so one matplotlib figure is open at a time however many a section has."""

    name: str  # file stem under figures/
    title: str
    caption: str
    draw: Callable[[], Any]  # () -> matplotlib Figure


@dataclass(frozen=True)
class Table:
    """A table as data: `rows` are {"cells": [...], "class": "ok" | "flag" | "na" | ""} (the class colours the row)."""

    title: str
    header: list[str]
    rows: list[dict]
    note: str = ""


@dataclass(frozen=True)
class CsvFile:
    """A table written beside the page, its first line the report's banner (the smoke warning travels with the
    numbers; pandas reads it back with comment="#")."""

    frame: pd.DataFrame
    float_format: str = "%.6g"

    def write(self, path: Path, banner: str) -> None:
        with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            if banner:
                f.write(f"# {banner}\n")
            self.frame.to_csv(f, index=False, float_format=self.float_format)


@dataclass
class Section:
    """One part of the page. Sections with the same `id` are one section on the page (the later one's figures and
    tables follow the earlier one's); `id` "" only reports what was skipped."""

    id: str
    title: str = ""
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    csv: dict[str, CsvFile] = field(default_factory=dict)  # file name -> table, beside index.html
    pages: dict[str, Table] = field(default_factory=dict)  # file name -> a table on a page of its own
    headline: list[dict] = field(default_factory=list)  # {"value", "label"}: the numbers at the top of the page
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json entries
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what was not drawn, why)


def skipped(what: str, why: str) -> Section:
    """A section that only says what was not drawn and why (its inputs are absent)."""
    return Section("", skipped=[(what, why)])


def frame_rows(df: pd.DataFrame, digits: int = 3) -> tuple[list[str], list[dict]]:
    """A DataFrame as a table's header and rows (floats to `digits` places)."""
    def cell(v):
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    return [str(c) for c in df.columns], [{"cells": [cell(v) for v in row], "class": ""} for row in
                                          df.itertuples(index=False)]
