"""The `report` stage: reads what the other stages wrote and writes `<report.out_dir>/<profile>/`:

  index.html        self-contained page (figures as files in figures/, no network), tables, config, commit, timings
  metrics.json      headline numbers (`dvc metrics show`)
  summary.md        the headline numbers and the comparison counts, in markdown
  cells.csv         our per-cell mean and 95 % bootstrap CI (evaluate.stats.summarize)
  comparison.csv / comparison.html   ours next to the paper per cell (report.compare)
  eps_summary.csv   ε-ball statistics per trained task × table × δ
  figures/*.png|svg Fig. 3, Fig. 6, comparison, ε-ball, Fig. 7, t-SNE, Fig. 4, Fig. 5-style and 10 × 10 grids
  provenance.json

A figure whose inputs are absent is skipped with its reason (logged, and listed on the page), never a crash.
On runs with tiny random-weight models every output starts with the smoke banner (report.banner).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from visual_words.claims.point import nearest_is_anchor_by_delta, transfer_shares
from visual_words.io import write_json, write_text
from visual_words.report import compare as cmp
from visual_words.report import figures as F
from visual_words.report.banner import banner_for
from visual_words.report.builder import ReportBuilder, frame_rows, render
from visual_words.report.paper import paper_table
from visual_words.tasks import TASKS, short, task

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------------------------
# Inputs


def _read_csv(path: Path) -> pd.DataFrame | None:
    from visual_words.provenance import verify_output

    return pd.read_csv(verify_output(path), comment="#") if path.is_file() else None


def _image_index(images_dir: Path) -> dict[str, Path]:
    """The kept generations by file name (one directory walk; the evaluation stage writes
    images/<trial slug>__<i>.png, for every trial evaluated on generation)."""
    return {p.name: p for p in sorted(images_dir.rglob("*.png"))} if images_dir.is_dir() else {}


def _find_image(index: dict[str, Path], trial) -> Path | None:
    """A trial's first kept generation."""
    return index.get(f"{trial.slug}__0.png")


# ---------------------------------------------------------------------------------------------------------------
# Parts


def quantitative(rb: ReportBuilder, evaluation: pd.DataFrame) -> pd.DataFrame:
    """Cells, comparison with the paper, Fig. 3, Fig. 6, the comparison figure, metrics."""
    from visual_words.evaluate.stats import summarize

    cfg, ec = rb.cfg, rb.cfg.evaluate
    rb.section("paper", "Fig. 3 and Fig. 6: ours next to the paper",
               "Bars and lines are this run's means over a cell's trials with 95 % percentile-bootstrap CIs "
               f"({ec.bootstrap_resamples} resamples, seed {ec.bootstrap_seed}); black diamonds and dashed lines "
               "are the paper's numbers (src/visual_words/report/paper_numbers.yaml).")
    cells = summarize(evaluation, ec.bootstrap_resamples, ec.bootstrap_seed, ec.ci_level)
    rb.write_csv(cells, rb.out_dir / "cells.csv")
    paper = paper_table()
    rb.cells = cells
    comp = cmp.compare(cells, paper, cfg.report.tolerance)
    # The paper's detection figures say "mAP" without saying which: AP@[.50:.95] is the primary comparison (D6),
    # and AP50 is compared to the same paper numbers in extra rows (metric `ap50`), so either reading can be checked.
    ap50 = ap50_comparison(evaluation, paper, rb.cfg)
    full = pd.concat([comp, ap50], ignore_index=True) if len(ap50) else comp
    cmp.write_csv(full, rb.out_dir / "comparison.csv", rb.banner)
    rows = cmp.comparison_rows(full)
    write_text(rb.out_dir / "comparison.html", render("table_page.html", title="Ours next to the paper",
                                                      banner=rb.banner, header=cmp.COMPARISON_HEADER, rows=rows))
    datasets = cfg.study.datasets
    if any(math.isinf(d) for d in cells["delta"]):
        rb.figure("paper", F.fig3(cells, paper, datasets, rb.banner), "fig3", "Fig. 3",
                  "Fig. 3 - unconstrained words (δ = ∞): each metric for words trained for generation (blue), "
                  "detection (orange), classification (green); in-domain where the trained and evaluated task agree, "
                  "else transferred by the linear map.")
    else:
        rb.skip("Fig. 3", "no unconstrained (δ = ∞) trials in evaluation.csv")
    if any(not math.isinf(d) for d in cells["delta"]):
        rb.figure("paper", F.fig6(cells, paper, datasets, rb.banner), "fig6", "Fig. 6",
                  "Fig. 6 - words constrained to the ε-ball of relative radius δ around their anchor.")
    else:
        rb.skip("Fig. 6", "no constrained (finite δ) trials in evaluation.csv")
    n = cmp.counts(comp)
    if n["compared"]:
        rb.figure("paper", F.comparison_scatter(comp, rb.banner), "comparison", "Ours vs the paper",
                  f"Every cell both have: {n['compared']} compared, {n['agree']} inside the paper's CI (or within "
                  f"±{cfg.report.tolerance:g} where it gives none), {n['flagged']} flagged (ringed red).")
    else:
        rb.skip("comparison figure", "no cell of this run is in the paper's figures")
    rb.table("paper", "Per cell", cmp.COMPARISON_HEADER, rows,
             note=f"{n['compared']} cells compared; {n['flagged']} outside the paper's CI / tolerance (red); "
                  f"{n['not_run']} paper cells not run by this profile (in comparison.csv). "
                  "Files: comparison.csv, comparison.html, cells.csv.")
    rb.metrics["comparison"] = n
    if len(ap50):
        rb.metrics["comparison_ap50"] = cmp.counts(ap50)
    rb.metrics["cells"] = {_cell_key(r): round(float(r["mean"]), 4) for _, r in cells.iterrows()
                           if not math.isnan(r["mean"])}
    rb.headline.append({"value": f"{n['agree']} / {n['compared']}", "label": "cells inside the paper's CI / tolerance"})
    shares = transfer_shares(cells)
    if len(shares):
        rb.write_csv(shares, rb.out_dir / "transfer_shares.csv")
    for ev in TASKS:  # in-domain means of the unconstrained words, averaged over datasets
        unconstrained = np.array([math.isinf(float(d)) for d in cells["delta"]], dtype=bool)
        sel = cells[(cells["eval_task"] == ev).to_numpy() & (cells["trained_task"] == ev).to_numpy() & unconstrained]
        if len(sel):
            v = float(sel["mean"].mean())
            rb.metrics.setdefault("in_domain", {})[ev] = round(v, 4)
            rb.headline.append({"value": f"{v:.3f}", "label": f"in-domain {task(ev).metric_label} (δ = ∞)"})
    return comp


def ap50_comparison(evaluation: pd.DataFrame, paper: pd.DataFrame, cfg) -> pd.DataFrame:
    """Detection cells scored by AP50 next to the paper's detection numbers (rows with metric `ap50`)."""
    from visual_words.evaluate.stats import summarize

    ec = cfg.evaluate
    det = evaluation[(evaluation["eval_task"] == "detection")
                     & pd.to_numeric(evaluation["ap50"], errors="coerce").notna()]
    if not len(det):
        return pd.DataFrame(columns=cmp.COLUMNS)
    det = det.assign(value=pd.to_numeric(det["ap50"]), metric="ap50")
    cells = summarize(det, ec.bootstrap_resamples, ec.bootstrap_seed, ec.ci_level)
    comp = cmp.compare(cells, paper[paper["eval_task"] == "detection"], cfg.report.tolerance)
    return comp.assign(metric="ap50")


def claims_part(rb: ReportBuilder, eps: pd.DataFrame | None) -> None:
    """Every claim of ARTIFACT.md §5 judged by its point rule (claims/claims.yaml, claims/point.py)."""

    from visual_words.claims.point import evaluate_claims

    results = evaluate_claims(rb.cells, eps, rb.cfg.report.tolerance)
    if rb.cells is not None:
        transfer_table(rb, results)
    rb.metrics["claims"] = {r.id: {k: v for k, v in r.to_dict().items() if k != "id"} for r in results}
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "not run", "not judged")}
    rb.metrics["claims_summary"] = counts
    cls = {"pass": "ok", "fail": "flag"}

    def value(v) -> str:
        if isinstance(v, dict):
            return "; ".join(f"{k}: {value(x)}" for k, x in v.items())
        return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    rows = [{"class": cls.get(r.status, "na"), "cells": [
        r.id, r.claim, r.status, value(r.value), r.expected, r.tolerance,
        "; ".join(filter(None, [r.detail, ("failed: " + ", ".join(r.failed)) if r.failed else ""]))]}
        for r in results]
    rb.section("claims", "The paper's claims, computed (ARTIFACT.md §5)")
    rb.table("claims", "Claims", ["#", "claim", "status", "ours", "paper", "tolerance", "details"], rows,
             note="Definitions: src/visual_words/claims/claims.yaml; metrics.json `claims` holds the same rows. "
                  "Not run = this profile has none of the claim's cells.")
    rb.headline.insert(0, {"value": f"{counts['pass']} pass / {counts['fail']} fail",
                           "label": f"paper claims ({counts['not run']} not run, {counts['not judged']} not judged)"})


def transfer_table(rb: ReportBuilder, results) -> None:
    """The paper's six "reaches up to X % of in-domain" numbers next to ours (best dataset): the pairs of claims
    C2-C4d, as metrics.json `transfer_share` and a table."""

    from visual_words.report.paper import claims

    values = {k: v for r in results if r.test == "share" and isinstance(r.value, dict) for k, v in r.value.items()}
    if not values:
        rb.skip("transfer claims", "no unconstrained in-domain and transferred cells of one dataset")
        return
    rb.metrics["transfer_share"] = values
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
    rb.section("paper", "Fig. 3 and Fig. 6: ours next to the paper")
    rb.table("paper", "Transfer as a share of in-domain (the paper's §5 headline claims)",
             ["paper claim", "paper", "ours (best dataset)", "diff", "status"], rows,
             note=f"Share = transferred mean / in-domain mean of the evaluated task, unconstrained words; best "
                  f"dataset. Agrees within ±{rb.cfg.report.tolerance:g} (claims C2-C4d). File: transfer_shares.csv "
                  "(every dataset).")


def _cell_key(r) -> str:
    d = "inf" if math.isinf(float(r["delta"])) else f"{float(r['delta']):g}"
    return f"{r['eval_task']}/{r['dataset']}/{short(r['trained_task'])}/delta={d}"


def eps_part(rb: ReportBuilder, eps: pd.DataFrame) -> None:
    from visual_words.analysis.spaces import summary

    rb.section("eps", "Where the words land: ε-ball statistics",
               "For every trained vector, in its own model's token table and (transferred) in the other two: "
               "distance to the anchor in units of the anchor's nearest-neighbour distance d_nn, whether the "
               "nearest vocabulary token is the anchor, the anchor's rank among all tokens, cosine to the anchor "
               "(artifacts/analysis/eps_stats.csv).")
    rb.figure("eps", F.eps_figure(eps, rb.banner), "eps_stats", "ε-ball statistics",
              "Top left: in-domain ‖v − anchor‖ / d_nn per δ (the dotted line: δ = 0.5, inside which the anchor is "
              "always the nearest token). Top right: share of vectors whose nearest token is the anchor. Bottom: "
              "the anchor's rank and the cosine to the anchor, in-domain (grey) and transferred (purple).")
    s = summary(eps)
    rb.write_csv(s, rb.out_dir / "eps_summary.csv")
    header, rows = frame_rows(s)
    rb.table("eps", "Per trained task, table and δ", header, rows, note="File: eps_summary.csv.")
    own = eps[~eps["transferred"].astype(bool)]
    # per δ, never pooled: inside δ ≤ 0.5 the share is 1 by construction, so pooling would hide the other radii
    own_by, moved_by = nearest_is_anchor_by_delta(eps, False), nearest_is_anchor_by_delta(eps, True)
    rb.metrics["eps"] = {"vectors": int(len(own)), "nearest_is_anchor_in_domain": own_by,
                         "nearest_is_anchor_transferred": moved_by or None}
    for d, v in own_by.items():
        rb.headline.append({"value": f"{v:.2f}", "label": f"share of trained vectors whose nearest token is the "
                                                          f"anchor, δ = {'∞' if d == 'inf' else d}"})
    for d, v in moved_by.items():
        rb.headline.append({"value": f"{v:.2f}", "label": f"the same after transfer, δ = {'∞' if d == 'inf' else d} "
                                                          "(the paper: words snap to the nearest shared word)"})


def layers_part(rb: ReportBuilder, tsne: pd.DataFrame | None, truncation: pd.DataFrame | None) -> None:
    cfg = rb.cfg
    rb.section("layers", "Perturbations target the final layers: Fig. 7 and the appendix t-SNE figures",
               "t-SNE (scikit-learn, perplexity analyze.tsne_perplexity capped below the number of points, seed "
               "analyze.tsne_seed) of each word's end-of-text activation after layers 1, L/3, 2L/3 and L; colour = "
               "the target concept, marker = the anchor word the vectors started from.")
    if truncation is not None and len(truncation):
        w = truncation.iloc[0]
        rows = None
        if tsne is not None:
            rows = tsne[(tsne["table_task"] == "generation") & (tsne["source_task"] == "generation")
                        & (tsne["dataset"] == w["dataset"])]
        rb.figure("layers", F.fig7(truncation, rows, cfg.path(cfg.analyze.out_dir), rb.banner), "fig7", "Fig. 7",
                  "Fig. 7 - top: the word generated with Stable Diffusion's text encoder cut after N layers; bottom: "
                  "t-SNE of the generation model's pooled activations for the same dataset's words.")
    else:
        rb.skip("Fig. 7", "no truncated-encoder generations (analyze part `truncation` did not run or found no "
                          "generation word)")
    if tsne is None or not len(tsne):
        rb.skip("t-SNE figures", "no tsne.csv (run `vw analyze`), or fewer than 4 words per group")
        return
    for (table, dataset, source), rows in tsne.groupby(["table_task", "dataset", "source_task"], sort=False):
        model = rows["table_model"].iloc[0]
        how = f"trained for {source}" + ("" if source == table else f", transferred into the {table} model")
        title = f"t-SNE - {model} ({table}) text encoder, {F.DATASET_LABEL.get(dataset, dataset)} words {how}"
        rb.figure("layers", F.tsne_figure(rows, title, rb.banner), f"tsne_{table}_{dataset}_{source}", title,
                  title + f" (δ = {cfg.analyze.tsne_delta:g}).")


def pick_concepts(wanted: list[str], available: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
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


def qualitative(rb: ReportBuilder) -> None:
    from visual_words import registry
    from visual_words.registry import study_concepts
    from visual_words.trials import trial_grid

    cfg = rb.cfg
    rb.section("qualitative", "Qualitative: Fig. 4, Fig. 5-style grids, appendix 10 × 10 grids",
               "Images kept by the evaluation stage (evaluate.keep_images_per_trial; one seed per trial).")
    images = cfg.path(cfg.evaluate.out_dir) / "images"
    grid = trial_grid(cfg)
    index = _image_index(images)
    have = {t.id: p for t in grid if (p := _find_image(index, t)) is not None}
    if not have:
        rb.skip("Fig. 4 / Fig. 5 / appendix grids", f"no kept generations under {images} "
                                                     "(evaluate.keep_images_per_trial"
                                                     " = 0, or `vw evaluate run` has not run)")
        return
    by = {(t.task, t.dataset, t.concept, t.anchor, t.delta): t for t in grid}
    concepts_run = list(dict.fromkeys((t.dataset, t.concept) for t in grid))

    def pick(wanted: list[str], n: int) -> list[tuple[str, str]]:
        return pick_concepts(wanted, concepts_run, n)

    # Fig. 4: per concept, its own-anchor unconstrained word (else the first anchor / δ with images)
    cols = []
    for ds, concept in pick(list(cfg.report.fig4_concepts), max(1, len(cfg.report.fig4_concepts))):
        own = {c.name: c.anchor for c in registry.concepts(ds)}[concept]
        anchors = [a for a in registry.anchors(ds)[: cfg.study.anchors_per_concept]]
        order = ([own] if own in anchors else []) + [a for a in anchors if a != own]
        deltas = sorted({t.delta for t in grid}, key=lambda d: (not math.isinf(d), d))
        for a in order:
            for d in deltas:
                trials = {task: by.get((task, ds, concept, a, d)) for task in TASKS}
                if trials["generation"] is not None and trials["generation"].id in have:
                    cols.append((ds, concept, a, d, trials))
                    break
            else:
                continue
            break
    if cols:
        target_row = _target_images(cfg, [(ds, c) for ds, c, *_ in cols])
        rows = []
        if target_row:
            rows.append(("target images", target_row))
        for task, label in (("generation", "trained for\ngeneration"),
                            ("classification", "classification\n→ generation"),
                            ("detection", "detection\n→ generation")):
            rows.append((label, [(f"{c}\n(anchor {a}, δ = {F._delta_label(d)})",
                                  have.get(tr[task].id) if tr[task] is not None else None)
                                 for ds, c, a, d, tr in cols]))
        rb.figure("qualitative", F.image_grid(rows, "Fig. 4 - generations from a concept's word trained for "
                                                    "generation, and from its words trained for classification / "
                                                    "detection, transferred", rb.banner),
                  "fig4", "Fig. 4", "Fig. 4 - one generation per word; columns are concepts.")
    else:
        rb.skip("Fig. 4", "no generation-trained word with a kept image")

    delta = cfg.analyze.tsne_delta
    anchors_of = {ds: registry.anchors(ds)[: cfg.study.anchors_per_concept] for ds in cfg.study.datasets}

    def row_for(ds, concept, task="generation", suffix="__0.png"):
        """One image per anchor: the kept file `<slug><suffix>` of the `task` word trained near it at δ."""
        return [(f"anchor: {a}", index.get(f"{t.slug}{suffix}") if (t := by.get((task, ds, concept, a, delta)))
                 else None) for a in anchors_of[ds]]

    chosen = pick(list(cfg.report.fig5_concepts), max(1, len(cfg.report.fig5_concepts)))
    rows = [(f"{c}\n({ds})", row_for(ds, c)) for ds, c in chosen]
    if any(p for _, items in rows for _, p in items):
        rb.figure("qualitative", F.image_grid(rows, f"Fig. 5-style - generations from words trained near each anchor "
                                                    f"(δ = {delta:g})", rb.banner),
                  "fig5", "Fig. 5", "Fig. 5-style: rows are target concepts (report.fig5_concepts; the paper: "
                                    "DreamBooth vase, duck_toy, colorful_sneaker), columns the anchor each word "
                                    "started from; the detection rows (the paper's rows 4-6) are the next figure.")
    else:
        rb.skip("Fig. 5", f"no kept generations at δ = {delta:g}")

    # Detection renderings (images/<slug>__det.png): each word's best boxes on the same held-out test image.
    def det_row(ds, concept):
        return row_for(ds, concept, "detection", "__det.png")

    # The paper's detection rows (4-6) are other concepts than its generation rows: COCO donut, cup, umbrella.
    det_chosen = pick(list(cfg.report.fig5_detection_concepts), max(1, len(cfg.report.fig5_detection_concepts)))
    rows = [(f"{c}\n({ds})", det_row(ds, c)) for ds, c in det_chosen]
    if any(p for _, items in rows for _, p in items):
        rb.figure("qualitative", F.image_grid(rows, f"Fig. 5-style - OWL detections (red: best boxes) from words "
                                                    f"trained near each anchor (δ = {delta:g})", rb.banner),
                  "fig5_detection", "Fig. 5 (detection)",
                  "Fig. 5-style detection rows (report.fig5_detection_concepts; "
                  "the paper: COCO donut, cup, umbrella): the same test image, the word's three best boxes, one column "
                  "per anchor.")
        for ds in cfg.study.datasets:
            concepts = [c.name for c in study_concepts(cfg, ds)]
            label = F.DATASET_LABEL.get(ds, ds)
            rb.figure("qualitative", F.image_grid([(c, det_row(ds, c)) for c in concepts],
                                                  f"{label}: every concept × anchor, detection words at δ = {delta:g} "
                                                  f"(appendix Figs. 8-9)", rb.banner, cell=1.2),
                      f"grid_detection_{ds}", f"{label} detection grid",
                      f"{label}: rows = target concepts, columns = anchor words; boxes = the word's best proposals.")
    else:
        rb.skip("Fig. 5 detection rows / Figs. 8-9", f"no kept detection renderings at δ = {delta:g} "
                                                     "(evaluate.keep_images_per_trial = 0, "
                                                     "or evaluated before they were kept)")
    for ds in cfg.study.datasets:
        concepts = [c.name for c in study_concepts(cfg, ds)]
        rows = [(c, row_for(ds, c)) for c in concepts]
        if any(p for _, items in rows for _, p in items):
            label = F.DATASET_LABEL.get(ds, ds)
            rb.figure("qualitative", F.image_grid(rows, f"{label}: every concept × anchor, generation words at "
                                                        f"δ = {delta:g} (appendix Figs. 10-11)", rb.banner, cell=1.2),
                      f"grid_{ds}", f"{label} grid", f"{label}: rows = target concepts, columns = anchor words.")


def _target_images(cfg, concepts) -> list[tuple[str, Path | None]]:
    """One training image per concept, from the prepare stage's manifests (empty when they are absent)."""
    from visual_words.data.manifest import manifest_path, read_manifest

    out = []
    for ds, c in concepts:
        try:
            m = read_manifest(manifest_path(cfg, ds))
            rec = m.concepts[c].train[0]
            out.append((c, m.path_of(rec)))
        except (FileNotFoundError, KeyError, IndexError, ValueError):
            return []
    return out


# ---------------------------------------------------------------------------------------------------------------
# The page


def stage_provenance(cfg) -> list[dict]:
    """The provenance.json of every stage that wrote one (its commit, time and elapsed seconds)."""
    from visual_words.trials import TASKS as TRAIN_TASKS

    places = [("prepare", cfg.path(cfg.prepare.manifests_dir)), ("maps", cfg.path(cfg.maps.out_dir))]
    places += [(f"train/{t}", cfg.path(cfg.train.out_dir) / t) for t in TRAIN_TASKS]
    places += [("evaluate", cfg.path(cfg.evaluate.out_dir)), ("analyze", cfg.path(cfg.analyze.out_dir))]
    out = []
    for name, d in places:
        p = d / "provenance.json"
        if not p.is_file():
            continue
        try:
            prov = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        el = prov.get("elapsed_s")
        out.append({"stage": name, "written_at": prov.get("written_at", ""), "commit": prov.get("git_commit", ""),
                    "elapsed": "" if el is None else f"{float(el):.1f} s", "elapsed_s": el,
                    "file": str(p.relative_to(cfg.root)) if p.is_relative_to(cfg.root) else str(p)})
    return out


def write_page(rb: ReportBuilder, stages: list[dict]) -> Path:
    """index.html from report/page.html."""
    import datetime as dt

    import yaml

    from visual_words.provenance import git_commit, package_versions

    page = render("page.html",
                  banner=rb.banner, profile=rb.cfg.profile, commit=git_commit(rb.cfg.root),
                  written_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), headline=rb.headline,
                  sections=[s for s in rb.sections.values() if s.figures or s.tables], skipped=rb.skipped,
                  stages=stages, packages=sorted(package_versions().items()),
                  config_yaml=yaml.safe_dump(rb.cfg.to_dict(), sort_keys=False, allow_unicode=True))
    return write_text(rb.out_dir / "index.html", page)


def summary_markdown(rb: ReportBuilder) -> str:
    lines = ([rb.banner, ""] if rb.banner else []) + [f"# visual-words report ({rb.cfg.profile})", ""]
    for h in rb.headline:
        lines.append(f"- {h['label']}: **{h['value']}**")
    if rb.skipped:
        lines += ["", "Figures not drawn:"] + [f"- {n}: {r}" for n, r in rb.skipped]
    return "\n".join(lines) + "\n"


def run(cfg) -> Path:
    """Write the report for `cfg`'s profile; returns the path of index.html."""
    from visual_words.provenance import write_provenance

    t0 = time.time()
    out_dir = cfg.path(cfg.report.out_dir) / cfg.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    rb = ReportBuilder(cfg, out_dir, banner_for(cfg))
    rb.metrics["note"] = rb.banner or "run on the real checkpoints"
    rb.metrics["profile"] = cfg.profile
    rb.section("claims", "The paper's claims, computed (ARTIFACT.md §5)")  # first on the page, filled last

    evaluation_file = cfg.path(cfg.evaluate.out_dir) / "evaluation.csv"
    if evaluation_file.is_file():
        from visual_words.evaluate.runner import read_table

        quantitative(rb, read_table(evaluation_file))
    else:
        rb.skip("Fig. 3, Fig. 6, comparison", f"{evaluation_file} not found (run `vw evaluate run`)")
    an = cfg.path(cfg.analyze.out_dir)
    eps = _read_csv(an / "eps_stats.csv")
    if eps is not None and len(eps):
        eps_part(rb, eps)
    else:
        rb.skip("ε-ball statistics", f"{an / 'eps_stats.csv'} not found or empty (run `vw analyze`)")
    if cfg.report.claims:  # a profile that checks claims with stated power (visual_words.claims)
        from visual_words.claims.report import claims_part as profile_claims_part
        from visual_words.evaluate.runner import read_table

        profile_claims_part(rb, read_table(evaluation_file) if evaluation_file.is_file() else None, eps)
    layers_part(rb, _read_csv(an / "tsne.csv"), _read_csv(an / "truncation.csv"))
    claims_part(rb, eps)
    qualitative(rb)
    stages = stage_provenance(cfg)
    rb.metrics["stage_elapsed_s"] = {s["stage"]: s["elapsed_s"] for s in stages if s["elapsed_s"] is not None}
    write_json(out_dir / "metrics.json", rb.metrics)
    write_text(out_dir / "summary.md", summary_markdown(rb))
    page = write_page(rb, stages)
    write_provenance(out_dir, cfg, "report", elapsed_s=round(time.time() - t0, 2))
    return page
