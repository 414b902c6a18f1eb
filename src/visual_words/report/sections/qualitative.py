"""The qualitative section: Fig. 4, the Fig. 5-style rows (generation and detection) and the appendix grids, from
the images the evaluation stage kept. Choosing which images go where is data (the functions below return rows of
(label, image path)); drawing them is report.figures.image_grid.

A row is (row label, [(column label, image path or None), ...]); a missing image is drawn as a grey "missing" cell.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Sequence

from visual_words.report import figures as F
from visual_words.report.section import Figure, Section
from visual_words.tasks import TASKS
from visual_words.trials import Trial

log = logging.getLogger(__name__)

ID, TITLE = "qualitative", "Qualitative: Fig. 4, Fig. 5-style grids, appendix 10 × 10 grids"
# The evaluation stage keeps images/<trial slug><suffix>: a trial's first generation, and (detection words) its
# best boxes drawn on a held-out test image.
GENERATION, DETECTION = "__0.png", "__det.png"

Row = tuple[str, list[tuple[str, "Path | None"]]]


@dataclass(frozen=True)
class Gallery:
    """What the qualitative figures choose from (report.stage reads it from the stages' outputs and the registry)."""

    trials: tuple[Trial, ...]  # the profile's trial grid
    images: dict[str, Path]  # the kept images by file name
    images_dir: Path  # where they are
    anchors: dict[str, list[str]]  # dataset -> the study's anchor words, in order (the grids' columns)
    own_anchor: dict[tuple[str, str], str]  # (dataset, concept) -> the concept's own anchor word
    concepts: dict[str, list[str]]  # dataset -> the study's concepts (the appendix grids' rows)
    targets: dict[tuple[str, str], Path]  # (dataset, concept) -> one of its training images (Fig. 4's top row)

    @cached_property
    def _by_key(self) -> dict[tuple, Trial]:
        return {(t.task, t.dataset, t.concept, t.anchor, t.delta): t for t in self.trials}

    def trial(self, task: str, dataset: str, concept: str, anchor: str, delta: float) -> Trial | None:
        return self._by_key.get((task, dataset, concept, anchor, delta))

    def kept(self, trial: Trial | None, suffix: str = GENERATION) -> Path | None:
        """The kept image `<slug><suffix>` of `trial` (None when there is none)."""
        return None if trial is None else self.images.get(f"{trial.slug}{suffix}")

    def grid_concepts(self) -> list[tuple[str, str]]:
        """The (dataset, concept) pairs of the trial grid, in grid order."""
        return list(dict.fromkeys((t.dataset, t.concept) for t in self.trials))

    def deltas(self) -> list[float]:
        """The grid's δ values, unconstrained (∞) first, then increasing."""
        return sorted({t.delta for t in self.trials}, key=lambda d: (not math.isinf(d), d))


@dataclass(frozen=True)
class Column:
    """A column of Fig. 4: one concept, the anchor and δ of its words, its word trained for each task."""

    dataset: str
    concept: str
    anchor: str
    delta: float
    trials: dict[str, Trial | None]  # task -> the word trained for it (None where the grid has none)


def pick_concepts(wanted: Sequence[str], available: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """The `dataset/concept` entries of `wanted` that this profile's grid has, in order, topped up to `n` with
    other concepts of the grid (the smoke grid lacks most of the paper's figure concepts)."""
    chosen = [tuple(w.split("/", 1)) for w in wanted if tuple(w.split("/", 1)) in available]
    for c in available:
        if len(chosen) >= n:
            break
        if c not in chosen:
            chosen.append(c)
    if len(chosen) < len(wanted):
        log.info("report: some of %s are not in this profile's grid; using %s", wanted, chosen)
    return chosen[:n]


def fig4_columns(g: Gallery, wanted: Sequence[str]) -> list[Column]:
    """Per chosen concept, its own-anchor unconstrained word; else the first anchor / δ whose generation word has
    a kept image (concepts with none are left out)."""
    columns, deltas = [], g.deltas()
    for ds, concept in pick_concepts(wanted, g.grid_concepts(), max(1, len(wanted))):
        own = g.own_anchor[(ds, concept)]
        anchors = g.anchors[ds]
        for anchor in ([own] if own in anchors else []) + [a for a in anchors if a != own]:
            delta = next((d for d in deltas if g.kept(g.trial("generation", ds, concept, anchor, d))), None)
            if delta is not None:
                columns.append(Column(ds, concept, anchor, delta,
                                      {t: g.trial(t, ds, concept, anchor, delta) for t in TASKS}))
                break
    return columns


def fig4_rows(g: Gallery, columns: list[Column]) -> list[Row]:
    """The concepts' training images (when every column has one), then one row per task the words were trained
    for, each generating."""
    rows = []
    if all((c.dataset, c.concept) in g.targets for c in columns):
        rows.append(("target images", [(c.concept, g.targets[(c.dataset, c.concept)]) for c in columns]))
    for task, label in (("generation", "trained for\ngeneration"), ("classification", "classification\n→ generation"),
                        ("detection", "detection\n→ generation")):
        rows.append((label, [(f"{c.concept}\n(anchor {c.anchor}, δ = {F.delta_label(c.delta)})",
                              g.kept(c.trials[task])) for c in columns]))
    return rows


def anchor_row(g: Gallery, dataset: str, concept: str, delta: float, task: str = "generation",
               suffix: str = GENERATION) -> list[tuple[str, Path | None]]:
    """One image per anchor: the kept `<slug><suffix>` of the `task` word trained near it at `delta`."""
    return [(f"anchor: {a}", g.kept(g.trial(task, dataset, concept, a, delta), suffix)) for a in g.anchors[dataset]]


def has_images(rows: list[Row]) -> bool:
    return any(p for _, items in rows for _, p in items)


def grid_figure(name: str, rows: list[Row], title: str, caption: str, figure_title: str, banner: str,
                cell: float = 1.6) -> Figure:
    """An image grid of the page: `title` and `caption` on the page, `figure_title` drawn above the grid."""
    return Figure(name, title, caption, partial(F.image_grid, rows, figure_title, banner, cell=cell))


def qualitative(g: Gallery, rc, datasets: Sequence[str], delta: float, banner: str = "") -> Section:
    """`rc`: the `report` settings (fig4_concepts, fig5_concepts, fig5_detection_concepts); `delta`: the δ of the
    Fig. 5-style and appendix grids (analyze.tsne_delta)."""
    sec = Section(ID, TITLE, "Images kept by the evaluation stage (evaluate.keep_images_per_trial; one seed per "
                             "trial).")
    if not any(g.kept(t) for t in g.trials):
        sec.skipped.append(("Fig. 4 / Fig. 5 / appendix grids", f"no kept generations under {g.images_dir} "
                                                                 "(evaluate.keep_images_per_trial = 0, or "
                                                                 "`vw evaluate run` has not run)"))
        return sec

    columns = fig4_columns(g, rc.fig4_concepts)
    if columns:
        sec.figures.append(grid_figure(
            "fig4", fig4_rows(g, columns), "Fig. 4", "Fig. 4 - one generation per word; columns are concepts.",
            "Fig. 4 - generations from a concept's word trained for generation, and from its words trained for "
            "classification / detection, transferred", banner))
    else:
        sec.skipped.append(("Fig. 4", "no generation-trained word with a kept image"))

    chosen = pick_concepts(rc.fig5_concepts, g.grid_concepts(), max(1, len(rc.fig5_concepts)))
    rows = [(f"{c}\n({ds})", anchor_row(g, ds, c, delta)) for ds, c in chosen]
    if has_images(rows):
        sec.figures.append(grid_figure(
            "fig5", rows, "Fig. 5", "Fig. 5-style: rows are target concepts (report.fig5_concepts; the paper: "
            "DreamBooth vase, duck_toy, colorful_sneaker), columns the anchor each word started from; the detection "
            "rows (the paper's rows 4-6) are the next figure.",
            f"Fig. 5-style - generations from words trained near each anchor (δ = {delta:g})", banner))
    else:
        sec.skipped.append(("Fig. 5", f"no kept generations at δ = {delta:g}"))

    # The paper's detection rows (4-6) are other concepts than its generation rows: COCO donut, cup, umbrella.
    chosen = pick_concepts(rc.fig5_detection_concepts, g.grid_concepts(), max(1, len(rc.fig5_detection_concepts)))
    rows = [(f"{c}\n({ds})", anchor_row(g, ds, c, delta, "detection", DETECTION)) for ds, c in chosen]
    if has_images(rows):
        sec.figures.append(grid_figure(
            "fig5_detection", rows, "Fig. 5 (detection)", "Fig. 5-style detection rows "
            "(report.fig5_detection_concepts; the paper: COCO donut, cup, umbrella): the same test image, the word's "
            "three best boxes, one column per anchor.",
            f"Fig. 5-style - OWL detections (red: best boxes) from words trained near each anchor (δ = {delta:g})",
            banner))
        for ds in datasets:
            label = F.DATASET_LABEL.get(ds, ds)
            rows = [(c, anchor_row(g, ds, c, delta, "detection", DETECTION)) for c in g.concepts[ds]]
            sec.figures.append(grid_figure(
                f"grid_detection_{ds}", rows, f"{label} detection grid",
                f"{label}: rows = target concepts, columns = anchor words; boxes = the word's best proposals.",
                f"{label}: every concept × anchor, detection words at δ = {delta:g} (appendix Figs. 8-9)", banner,
                cell=1.2))
    else:
        sec.skipped.append(("Fig. 5 detection rows / Figs. 8-9", f"no kept detection renderings at δ = {delta:g} "
                                                                  "(evaluate.keep_images_per_trial = 0, or evaluated "
                                                                  "before they were kept)"))
    for ds in datasets:
        rows = [(c, anchor_row(g, ds, c, delta)) for c in g.concepts[ds]]
        if has_images(rows):
            label = F.DATASET_LABEL.get(ds, ds)
            sec.figures.append(grid_figure(
                f"grid_{ds}", rows, f"{label} grid", f"{label}: rows = target concepts, columns = anchor words.",
                f"{label}: every concept × anchor, generation words at δ = {delta:g} (appendix Figs. 10-11)", banner,
                cell=1.2))
    return sec
