"""What a report is made of while it is built: sections of figures and tables, the metrics, the headline numbers
and what was skipped. Each part of the report (report/stage.py, claims/report.py) adds to one `ReportBuilder`; the
page template (report/page.html) renders it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from visual_words.io import atomic_path
from visual_words.report import figures as F

log = logging.getLogger(__name__)


@dataclass
class Section:
    id: str
    title: str
    text: str = ""
    figures: list[dict] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)


@dataclass
class ReportBuilder:
    cfg: Any
    out_dir: Path
    banner: str
    sections: dict[str, Section] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    headline: list[dict] = field(default_factory=list)
    cells: pd.DataFrame | None = None  # our per-cell statistics (the claims are computed from them)

    def section(self, sid: str, title: str, text: str = "") -> Section:
        if sid not in self.sections:
            self.sections[sid] = Section(sid, title, text)
        return self.sections[sid]

    def figure(self, sid: str, fig, name: str, title: str, caption: str) -> None:
        rc = self.cfg.report
        paths = F.save(fig, self.out_dir / "figures", name, rc.formats, rc.dpi)
        src = next((p for p in paths if p.suffix == ".png"), paths[0])
        self.sections[sid].figures.append({
            "name": name, "title": title, "caption": caption, "src": f"figures/{src.name}",
            "files": [{"fmt": p.suffix[1:].upper(), "href": f"figures/{p.name}"} for p in paths]})

    def table(self, sid: str, title: str, header: list[str], rows: list[dict], note: str = "") -> None:
        """A table of section `sid` as data: `rows` are {"cells": [...], "class": "ok" | "flag" | "na"}; the page
        template draws it (all HTML lives in the templates)."""
        self.sections[sid].tables.append({"title": title, "header": list(header), "rows": rows, "note": note})

    def skip(self, name: str, reason: str) -> None:
        log.warning("report: %s skipped: %s", name, reason)
        self.skipped.append((name, reason))

    def write_csv(self, df: pd.DataFrame, path: Path) -> None:
        """A table beside the page, its first line the report's banner (the smoke profile's warning travels with
        the numbers)."""
        with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            if self.banner:
                f.write(f"# {self.banner}\n")
            df.to_csv(f, index=False, float_format="%.6g")


def frame_rows(df: pd.DataFrame, digits: int = 3) -> tuple[list[str], list[dict]]:
    """A DataFrame as a table's header and rows (floats to `digits` places)."""
    def cell(v):
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    return [str(c) for c in df.columns], [{"cells": [cell(v) for v in row], "class": ""} for row in
                                          df.itertuples(index=False)]


def render(template: str, **context) -> str:
    """One of the report's page templates (report/*.html), rendered with autoescaping."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("visual_words", "report"), autoescape=True)
    return env.get_template(template).render(**context)
