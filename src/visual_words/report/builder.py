"""The page assembly: the sections (report/section.py) are handed over in page order; the builder saves their
figures and files under the report's folder, gathers headline numbers, metrics and what was skipped, and writes
index.html (report/page.html), summary.md and metrics.json. All HTML is in the templates (report/*.html)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visual_words.io import write_json, write_text
from visual_words.report import figures as F
from visual_words.report.section import Section, Table

log = logging.getLogger(__name__)


@dataclass
class PageSection:
    """A section as the page shows it: its figures saved (file names, formats), its tables."""

    id: str
    title: str
    text: str = ""
    figures: list[dict] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class ReportBuilder:
    cfg: Any
    out_dir: Path
    banner: str
    sections: dict[str, PageSection] = field(default_factory=dict)  # in page order
    skipped: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    headline: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.metrics.setdefault("note", self.banner or "run on the real checkpoints")
        self.metrics.setdefault("profile", self.cfg.profile)

    def add(self, section: Section) -> None:
        """Put `section` on the page after those added before (or into the one with its id), writing its figures,
        CSV files and table pages."""
        if section.id:
            page = self.section(section.id, section.title, section.text)
            for fig in section.figures:
                page.figures.append(self._save(fig.draw(), fig.name, fig.title, fig.caption))
            page.tables.extend(section.tables)
        for name, csv in section.csv.items():
            csv.write(self.out_dir / name, self.banner)
        for name, table in section.pages.items():
            write_text(self.out_dir / name, render("table_page.html", title=table.title, banner=self.banner,
                                                   header=table.header, rows=table.rows))
        self.headline.extend(section.headline)
        self.metrics.update(section.metrics)
        for what, why in section.skipped:
            log.warning("report: %s skipped: %s", what, why)
            self.skipped.append((what, why))

    def _save(self, fig, name: str, title: str, caption: str) -> dict:
        rc = self.cfg.report
        paths = F.save(fig, self.out_dir / "figures", name, rc.formats, rc.dpi)
        src = next((p for p in paths if p.suffix == ".png"), paths[0])
        return {"name": name, "title": title, "caption": caption, "src": f"figures/{src.name}",
                "files": [{"fmt": p.suffix[1:].upper(), "href": f"figures/{p.name}"} for p in paths]}

    def section(self, sid: str, title: str, text: str = "") -> PageSection:
        """The page's section `sid` (made, after those before it, on first use)."""
        if sid not in self.sections:
            self.sections[sid] = PageSection(sid, title, text)
        return self.sections[sid]

    def write(self, stages: list[dict]) -> Path:
        """metrics.json, summary.md and index.html; `stages` = each stage's provenance (its time, commit, file)."""
        self.metrics["stage_elapsed_s"] = {s["stage"]: s["elapsed_s"] for s in stages if s["elapsed_s"] is not None}
        write_json(self.out_dir / "metrics.json", self.metrics)
        write_text(self.out_dir / "summary.md", self.summary_markdown())
        return write_text(self.out_dir / "index.html", self.page(stages))

    def summary_markdown(self) -> str:
        lines = ([self.banner, ""] if self.banner else []) + [f"# visual-words report ({self.cfg.profile})", ""]
        for h in self.headline:
            lines.append(f"- {h['label']}: **{h['value']}**")
        if self.skipped:
            lines += ["", "Figures not drawn:"] + [f"- {n}: {r}" for n, r in self.skipped]
        return "\n".join(lines) + "\n"

    def page(self, stages: list[dict]) -> str:
        """index.html from report/page.html."""
        import datetime as dt

        import yaml

        from visual_words.provenance import git_commit, package_versions

        cfg = self.cfg
        return render("page.html",
                      banner=self.banner, profile=cfg.profile, commit=git_commit(cfg.root),
                      written_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      headline=self.headline, sections=[s for s in self.sections.values() if s.figures or s.tables],
                      skipped=self.skipped, stages=stages, packages=sorted(package_versions().items()),
                      config_yaml=yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))


def render(template: str, **context) -> str:
    """One of the report's page templates (report/*.html), rendered with autoescaping."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("visual_words", "report"), autoescape=True)
    return env.get_template(template).render(**context)
