"""The `report` stage: reads what the other stages wrote and writes `<report.out_dir>/<profile>/`:

  index.html        self-contained page (figures as files in figures/, no network), tables, config, commit, timings
  metrics.json      headline numbers (`dvc metrics show`)
  summary.md        the headline numbers and the comparison counts, in markdown
  cells.csv         our per-cell mean and 95 % bootstrap CI (evaluate.stats.summarize)
  comparison.csv / comparison.html   ours next to the paper per cell (claims/compare.py)
  eps_summary.csv   ε-ball statistics per trained task × table × δ
  figures/*.png|svg Fig. 3, Fig. 6, comparison, ε-ball, Fig. 7, t-SNE, Fig. 4, Fig. 5-style and 10 × 10 grids,
                    the DreamBooth boxes' contact sheet (real DreamBooth photos only)
  provenance.json

`run` reads the inputs, calls the section functions (report/sections/: data in, a Section out) and hands the
sections to the builder (report/builder.py), which writes the files and the page. A figure whose inputs are absent
is skipped with its reason (logged, and listed on the page), never a crash. On runs with tiny random-weight models
every output starts with the smoke banner (report.banner).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from visual_words.report.banner import banner_for
from visual_words.report.builder import ReportBuilder
from visual_words.report.section import skipped
from visual_words.report.sections.claims import artifact_claims
from visual_words.report.sections.claims_profile import claims_profile_section
from visual_words.report.sections.dreambooth_boxes import dreambooth_boxes_section
from visual_words.report.sections.eps import eps_section
from visual_words.report.sections.layers import layers_section
from visual_words.report.sections.qualitative import Gallery, qualitative
from visual_words.report.sections.quantitative import quantitative

# ---------------------------------------------------------------------------------------------------------------
# Inputs


def read_stage_csv(path: Path) -> pd.DataFrame | None:
    """A table another stage wrote (checked against the digest in its provenance.json), None when it is absent."""
    from visual_words.provenance import verify_output

    return pd.read_csv(verify_output(path), comment="#") if path.is_file() else None


def gallery(cfg) -> Gallery:
    """The trial grid, the images the evaluation stage kept (one directory walk) and the registry's anchors,
    concepts and training images that the qualitative figures choose from."""
    from visual_words import registry
    from visual_words.trials import trial_grid

    images_dir = cfg.path(cfg.evaluate.out_dir) / "images"
    datasets = cfg.study.datasets
    return Gallery(
        trials=tuple(trial_grid(cfg)),
        images={p.name: p for p in sorted(images_dir.rglob("*.png"))} if images_dir.is_dir() else {},
        images_dir=images_dir,
        anchors={ds: registry.anchors(ds)[: cfg.study.anchors_per_concept] for ds in datasets},
        own_anchor={(ds, c.name): c.anchor for ds in datasets for c in registry.concepts(ds)},
        concepts={ds: [c.name for c in registry.study_concepts(cfg, ds)] for ds in datasets},
        targets=target_images(cfg, datasets))


def target_images(cfg, datasets) -> dict[tuple[str, str], Path]:
    """One training image per concept, from the prepare stage's manifests (none for a dataset without one)."""
    from visual_words.data.manifest import manifest_path, read_manifest

    out = {}
    for ds in datasets:
        try:
            m = read_manifest(manifest_path(cfg, ds))
        except (FileNotFoundError, ValueError):
            continue
        out.update({(ds, name): m.path_of(c.train[0]) for name, c in m.concepts.items() if c.train})
    return out


def stage_provenance(cfg) -> list[dict]:
    """The provenance.json of every stage that wrote one (its commit, time and elapsed seconds)."""
    from visual_words.provenance import read_times
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
            prov = json.loads(p.read_text()) | read_times(p)  # its time is kept beside it (provenance.py)
        except json.JSONDecodeError:
            continue
        el = prov.get("elapsed_s")
        out.append({"stage": name, "written_at": prov.get("written_at", ""), "commit": prov.get("git_commit", ""),
                    "elapsed": "" if el is None else f"{float(el):.1f} s", "elapsed_s": el,
                    "file": str(p.relative_to(cfg.root)) if p.is_relative_to(cfg.root) else str(p)})
    return out


# ---------------------------------------------------------------------------------------------------------------
# The stage


def run(cfg) -> Path:
    """Write the report for `cfg`'s profile; returns the path of index.html."""
    from visual_words.evaluate.runner import read_table
    from visual_words.evaluate.stats import summarize
    from visual_words.provenance import write_provenance

    t0 = time.time()
    out_dir = cfg.path(cfg.report.out_dir) / cfg.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    banner = banner_for(cfg)
    ec, an = cfg.evaluate, cfg.path(cfg.analyze.out_dir)
    evaluation_file = cfg.path(ec.out_dir) / "evaluation.csv"
    evaluation = read_table(evaluation_file) if evaluation_file.is_file() else None
    cells = (summarize(evaluation, ec.bootstrap_resamples, ec.bootstrap_seed, ec.ci_level)
             if evaluation is not None else None)
    eps = read_stage_csv(an / "eps_stats.csv")

    rb = ReportBuilder(cfg, out_dir, banner)
    claims, transfer = artifact_claims(cells, eps, cfg.report.tolerance)
    sections = [  # in page order
        # the verdicts on the claims the profile decides, with their calibration, come first
        claims_profile_section(cfg, evaluation, eps),
        claims,
        quantitative(evaluation, cells, ec, cfg.report.tolerance, cfg.study.datasets, banner) if cells is not None
        else skipped("Fig. 3, Fig. 6, comparison", f"{evaluation_file} not found (run `vw evaluate run`)"),
        transfer,
        eps_section(eps, banner) if eps is not None and len(eps)
        else skipped("ε-ball statistics", f"{an / 'eps_stats.csv'} not found or empty (run `vw analyze`)"),
        layers_section(read_stage_csv(an / "tsne.csv"), read_stage_csv(an / "truncation.csv"), an,
                       cfg.analyze.tsne_delta, banner),
        qualitative(gallery(cfg), cfg.report, cfg.study.datasets, cfg.analyze.tsne_delta, banner),
        dreambooth_boxes_section(cfg, banner),  # the boxes the run used, for inspection (real DreamBooth only)
    ]
    for section in sections:
        rb.add(section)
    page = rb.write(stage_provenance(cfg))
    write_provenance(out_dir, cfg, "report", elapsed_s=round(time.time() - t0, 2))
    return page
