"""The report from small fixed tables: paper numbers, comparison flags, every figure function, each section
function on its own (what it returns, no page built), the whole stage (page, metrics, banner lines), and the page
opened in headless Chromium with every image loaded."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from visual_words.claims import compare as cmp
from visual_words.config import load_config
from visual_words.paper import paper_table
from visual_words.report import comparison as shown
from visual_words.report import figures as F
from visual_words.report.banner import SMOKE_BANNER, banner_for
from visual_words.trials import TASKS, trial_grid

METRIC = {"generation": "gen_acc", "detection": "map", "classification": "cls_acc"}


def _cfg(repo_root, tmp, **extra):
    return load_config("smoke", repo_root / "params.yaml", {
        "train.out_dir": str(tmp / "emb"), "evaluate.out_dir": str(tmp / "ev"), "analyze.out_dir": str(tmp / "an"),
        "report.out_dir": str(tmp / "reports"), "maps.out_dir": str(tmp / "maps"),
        "prepare.manifests_dir": str(tmp / "manifests"), **extra})


def evaluation_rows(cfg, seed=0):
    """A fixed evaluation table for the profile's grid: every trial on all three tasks, in-domain high."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in trial_grid(cfg):
        for ev in TASKS:
            base = 0.9 if ev == t.task else 0.2
            rows.append({"trial_id": t.id, "dataset": t.dataset, "concept": t.concept, "anchor": t.anchor,
                         "delta": t.delta, "trained_task": t.task, "eval_task": ev, "transferred": ev != t.task,
                         "metric": METRIC[ev], "value": float(np.clip(base + rng.normal(0, 0.1), 0, 1)),
                         "ap50": "" if ev != "detection" else 0.5, "source_model": t.model, "eval_model": "x"})
    return rows


def test_paper_numbers_as_data():
    t = paper_table()
    assert (t["figure"] == "fig3").sum() == 36 and (t["figure"] == "fig6").sum() == 144
    r = t[(t["figure"] == "fig3") & (t["dataset"] == "imagenet") & (t["trained_task"] == "detection")
          & (t["eval_task"] == "detection")].iloc[0]
    assert (r["paper"], r["paper_ci_low"], r["paper_ci_high"], r["metric"]) == (0.594, 0.52, 0.67, "map")
    assert math.isinf(r["delta"]) and not r["transferred"]
    r = t[(t["figure"] == "fig6") & (t["dataset"] == "pascal") & (t["trained_task"] == "classification")
          & (t["eval_task"] == "generation") & (t["delta"] == 1.0)].iloc[0]
    assert r["paper"] == 0.55 and np.isnan(r["paper_ci_low"]) and r["transferred"]


def test_comparison_flags_cells_outside_the_ci_or_tolerance():
    cells = pd.DataFrame([
        # in-domain gen, ImageNet: paper 0.99 [0.96, 1.0]
        {"dataset": "imagenet", "trained_task": "generation", "eval_task": "generation", "delta": math.inf,
         "n": 100, "mean": 0.97, "ci_low": 0.94, "ci_high": 0.99},
        # det -> gen, COCO: paper 0.19 [0.12, 0.26]; ours far outside
        {"dataset": "coco", "trained_task": "detection", "eval_task": "generation", "delta": math.inf,
         "n": 100, "mean": 0.60, "ci_low": 0.5, "ci_high": 0.7},
        # gen -> det, PASCAL: paper 0.107, no CI; within ±0.1
        {"dataset": "pascal", "trained_task": "generation", "eval_task": "detection", "delta": math.inf,
         "n": 100, "mean": 0.15, "ci_low": 0.1, "ci_high": 0.2},
        # Fig. 6, cls in-domain, COCO, δ = 0.5: paper 0.75, no CI; ours 0.3 is outside ±0.1
        {"dataset": "coco", "trained_task": "classification", "eval_task": "classification", "delta": 0.5,
         "n": 100, "mean": 0.30, "ci_low": 0.2, "ci_high": 0.4},
        # a δ the paper never ran
        {"dataset": "coco", "trained_task": "classification", "eval_task": "classification", "delta": 0.3,
         "n": 10, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6},
    ])
    comp = cmp.compare(cells, paper_table(), tolerance=0.1)
    status = {(r.dataset, r.trained_task, r.eval_task, r.delta): r.status for r in comp.itertuples()}
    assert status[("imagenet", "generation", "generation", math.inf)] == "agrees"
    assert status[("coco", "detection", "generation", math.inf)] == "outside paper CI"
    assert status[("pascal", "generation", "detection", math.inf)] == "agrees"
    assert status[("coco", "classification", "classification", 0.5)] == "outside tolerance"
    assert status[("coco", "classification", "classification", 0.3)] == "not in paper"
    assert status[("coco", "generation", "generation", 0.1)] == "not run"
    row = comp[(comp["dataset"] == "coco") & (comp["trained_task"] == "detection") & (comp["eval_task"] == "generation")
               & np.isinf(comp["delta"])].iloc[0]
    assert row["diff"] == pytest.approx(0.41) and row["basis"] == "paper CI" and row["agrees"] is np.False_ or \
        row["agrees"] == False  # noqa: E712
    n = cmp.counts(comp)
    assert (n["compared"], n["agree"], n["flagged"], n["not_in_paper"]) == (4, 2, 2, 1)
    assert n["not_run"] == 180 - 4
    classes = [r["class"] for r in shown.comparison_rows(comp)]
    assert classes.count("flag") == 2 and classes.count("ok") == 2 and classes.count("na") == 1  # + "not in paper"


def test_comparison_csv_starts_with_the_banner(tmp_path):
    comp = cmp.compare(pd.DataFrame(columns=["dataset", "trained_task", "eval_task", "delta", "n", "mean", "ci_low",
                                             "ci_high"]), paper_table(), 0.1)
    shown.csv_file(comp).write(tmp_path / "c.csv", SMOKE_BANNER)
    assert (tmp_path / "c.csv").read_text().splitlines()[0] == f"# {SMOKE_BANNER}"
    back = pd.read_csv(tmp_path / "c.csv", comment="#")
    assert len(back) == 180 and set(back["status"]) == {"not run"}


def test_banner_follows_the_models_not_the_profile_name(repo_root, tmp_path):
    assert banner_for(_cfg(repo_root, tmp_path)) == SMOKE_BANNER
    paper = load_config("paper", repo_root / "params.yaml")
    assert banner_for(paper) == ""


@pytest.fixture(scope="module")
def small_tables(repo_root, tmp_path_factory):
    from visual_words.evaluate.stats import summarize

    cfg = _cfg(repo_root, tmp_path_factory.mktemp("tables"), **{"study.deltas": [0.2, 0.5]})
    ev = pd.DataFrame(evaluation_rows(cfg))
    cells = summarize(ev, 200, 0, 0.95)
    return cfg, ev, cells


def test_figure_functions_write_png_and_svg(small_tables, tmp_path):
    cfg, ev, cells = small_tables
    paper = paper_table()
    figs = {"fig3": F.fig3(cells, paper, cfg.study.datasets, SMOKE_BANNER),
            "fig6": F.fig6(cells, paper, cfg.study.datasets, SMOKE_BANNER),
            "cmp": F.comparison_scatter(cmp.compare(cells, paper, 0.1), SMOKE_BANNER)}
    assert figs["fig3"]._suptitle.get_text().replace("\n", " ").startswith(SMOKE_BANNER)  # the banner comes first
    axes = figs["fig3"].axes
    assert len([a for a in axes if a.get_title() or a.get_ylabel()]) >= 3
    assert len(axes) == 3 * len(cfg.study.datasets)  # 3 metrics × datasets
    # the bars carry our cell means: the first panel's first bar is generation-trained, evaluated on generation
    first = cells[(cells["eval_task"] == "generation") & (cells["trained_task"] == "generation")
                  & (cells["dataset"] == cfg.study.datasets[0]) & np.isinf(cells["delta"])]["mean"].iloc[0]
    assert axes[0].patches[0].get_width() == pytest.approx(first)
    for name, fig in figs.items():
        paths = F.save(fig, tmp_path, name, ["png", "svg"], 60)
        assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)
        assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert SMOKE_BANNER.split(" - ")[0] in paths[1].read_text()  # the SVG carries the banner text


def test_eps_tsne_grid_and_fig7_figures(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    n = 40
    eps = pd.DataFrame({"delta": rng.choice([0.5, math.inf], n), "transferred": rng.random(n) < 0.5,
                        "trained_task": rng.choice(TASKS, n), "rel_dist": rng.random(n),
                        "nearest_is_anchor": rng.random(n) < 0.5, "anchor_rank": rng.integers(0, 1000, n),
                        "cos_anchor": rng.random(n)})
    tsne = pd.DataFrame([{"layer": layer, "num_layers": 4, "concept": f"c{i % 3}", "anchor": f"a{i % 2}",
                          "x": rng.normal(), "y": rng.normal()} for layer in (1, 2, 4) for i in range(6)])
    for i in range(3):
        Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(tmp_path / f"im{i}.png")
    trunc = pd.DataFrame([{"depth": d, "num_layers": 4, "image": 0, "path": f"im{i}.png", "concept": "cup",
                           "anchor": "dog", "delta": 0.5} for i, d in enumerate((1, 2, 4))])
    grid = [("row a", [("c1", tmp_path / "im0.png"), ("c2", None)]), ("row b", [("c1", tmp_path / "im1.png")])]
    for name, fig in {"eps": F.eps_figure(eps, SMOKE_BANNER), "tsne": F.tsne_figure(tsne, "t", SMOKE_BANNER),
                      "grid": F.image_grid(grid, "g", SMOKE_BANNER), "fig7": F.fig7(trunc, tsne, tmp_path, "")}.items():
        (png,) = F.save(fig, tmp_path, name, ["png"], 50)
        with Image.open(png) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def _write_inputs(cfg, with_images=True):
    """What the other stages would have written: evaluation.csv, eps/tsne/truncation tables, kept images."""
    from PIL import Image

    from visual_words.evaluate.runner import write_table

    ev_dir = cfg.path(cfg.evaluate.out_dir)
    write_table(ev_dir / "evaluation.csv", evaluation_rows(cfg))
    an = cfg.path(cfg.analyze.out_dir)
    an.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    grid = trial_grid(cfg)
    eps = [{"trial_id": t.id, "delta": t.delta, "trained_task": t.task, "table_task": tt, "transferred": tt != t.task,
            "rel_dist": rng.random(), "nearest_is_anchor": bool(rng.random() < 0.5),
            "anchor_rank": int(rng.integers(0, 9)), "cos_anchor": rng.random()} for t in grid for tt in TASKS]
    pd.DataFrame(eps).to_csv(an / "eps_stats.csv", index=False)
    tsne = [{"table_task": "generation", "table_model": "tiny-sd", "dataset": t.dataset, "source_task": "generation",
             "transferred": False, "layer": layer, "num_layers": 4, "trial_id": t.id, "concept": t.concept,
             "anchor": t.anchor, "delta": t.delta, "x": rng.normal(), "y": rng.normal()}
            for t in grid if t.task == "generation" and t.delta == 0.5 for layer in (1, 2, 3, 4)]
    pd.DataFrame(tsne).to_csv(an / "tsne.csv", index=False)
    if with_images:
        w = next(t for t in grid if t.task == "generation" and t.delta == 0.5)
        rows = []
        for d in (1, 2, 4):
            rel = f"truncation/{w.slug}/depth-{d:02d}__0.png"
            (an / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (60 * d, 90, 0)).save(an / rel)
            rows.append({"trial_id": w.id, "dataset": w.dataset, "concept": w.concept, "anchor": w.anchor,
                         "delta": w.delta, "depth": d, "num_layers": 4, "image": 0, "path": rel})
        pd.DataFrame(rows).to_csv(an / "truncation.csv", index=False)
        (ev_dir / "images").mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(grid):
            Image.new("RGB", (32, 32), (i * 7 % 255, 40, 200)).save(ev_dir / "images" / f"{t.slug}__0.png")
            Image.new("RGB", (32, 32), (200, i * 7 % 255, 40)).save(ev_dir / "images" / f"{t.slug}__det.png")


@pytest.mark.slow
def test_report_stage_writes_page_metrics_and_banner_lines(repo_root, tmp_path, chromium):
    from visual_words.cli import main

    cfg = _cfg(repo_root, tmp_path)
    _write_inputs(cfg)
    argv = ["report", "--params", str(repo_root / "params.yaml"), "--profile", "smoke"]
    for k in ("train.out_dir", "evaluate.out_dir", "analyze.out_dir", "report.out_dir", "maps.out_dir",
              "prepare.manifests_dir"):
        argv += ["--set", f"{k}={getattr(getattr(cfg, k.split('.')[0]), k.split('.')[1])}"]
    assert main(argv) == 0
    out = tmp_path / "reports" / "smoke"
    page = (out / "index.html").read_text()
    assert f'<div class="banner" id="banner">{SMOKE_BANNER}</div>' in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # no CDN
    for name in ("fig3", "fig6", "comparison", "eps_stats", "fig7", "fig4", "fig5", "fig5_detection",
                 "grid_detection_coco"):
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.svg").is_file()
        assert f'src="figures/{name}.png"' in page
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs and all((out / s).is_file() for s in srcs)
    for f in ("comparison.csv", "cells.csv", "eps_summary.csv"):
        assert (out / f).read_text().splitlines()[0] == f"# {SMOKE_BANNER}"
    assert (out / "summary.md").read_text().splitlines()[0] == SMOKE_BANNER
    assert SMOKE_BANNER in (out / "comparison.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["note"] == SMOKE_BANNER and metrics["comparison"]["compared"] > 0
    assert 0 <= metrics["in_domain"]["classification"] <= 1
    # the fixed table has in-domain ≈ 0.9 and transferred ≈ 0.2: every share ≈ 0.2, e.g. far below cls→gen's 0.84
    shares = metrics["transfer_share"]
    assert set(shares) == {"cls_to_gen", "gen_to_cls", "det_to_gen", "cls_to_det", "gen_to_det", "det_to_cls"}
    assert all(0.05 < v["max_share"] < 0.5 for v in shares.values())
    assert shares["cls_to_gen"]["within_tolerance"] is False and shares["det_to_gen"]["within_tolerance"] is True
    assert "transfer_shares.csv" in page and (out / "transfer_shares.csv").is_file()
    assert json.loads((out / "provenance.json").read_text())["stage"] == "report"
    check_images_load_in_chromium(out, tmp_path, chromium)


def test_report_without_inputs_skips_with_reasons(repo_root, tmp_path):
    from visual_words.report.stage import run as run_report

    cfg = _cfg(repo_root, tmp_path)
    page = run_report(cfg).read_text()
    assert "Figures not drawn" in page and "run `vw evaluate run`" in page and "run `vw analyze`" in page
    assert json.loads((tmp_path / "reports" / "smoke" / "metrics.json").read_text())["note"] == SMOKE_BANNER


def check_images_load_in_chromium(out, tmp_path, chromium):
    """Open the page in headless Chromium from disk and check every <img> decoded (naturalWidth > 0)."""
    # A copy of the page beside it (same relative paths) with a probe that records what the browser decoded.
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
             " document.body.setAttribute('data-images', imgs.length);"
             " document.body.setAttribute('data-broken', imgs.filter(i => !(i.complete && i.naturalWidth > 0))"
             ".map(i => i.getAttribute('src')).join(',') || 'none'); });</script>")
    check = out / "_chromium_check.html"
    check.write_text((out / "index.html").read_text().replace("</body>", probe + "</body>"))
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
              "--virtual-time-budget=10000"]
    try:
        dom = subprocess.run([*common, "--dump-dom", check.as_uri()], capture_output=True, text=True,
                             timeout=120).stdout
        n = int(re.search(r'data-images="(\d+)"', dom).group(1))
        broken = re.search(r'data-broken="([^"]*)"', dom).group(1)
        assert n == len(re.findall(r"<img ", (out / "index.html").read_text())) and n >= 7
        assert broken == "none", f"images that did not load in Chromium: {broken}"
        shot = tmp_path / "report-screenshot.png"  # kept as a test artifact in the test's tmp dir
        subprocess.run([*common, "--window-size=1280,2400", f"--screenshot={shot}", (out / "index.html").as_uri()],
                       capture_output=True, timeout=120)
        assert shot.stat().st_size > 20_000
    finally:
        check.unlink(missing_ok=True)


def test_fig5_rows_are_the_papers_concepts_on_the_paper_grid(repo_root):
    """Fig. 5: generation rows DreamBooth vase, duck_toy, colorful_sneaker; detection rows COCO donut, cup, umbrella."""
    from visual_words.config import load_config
    from visual_words.report.sections.qualitative import pick_concepts
    from visual_words.trials import trial_grid

    cfg = load_config("paper", repo_root / "params.yaml")
    grid = list(dict.fromkeys((t.dataset, t.concept) for t in trial_grid(cfg)))
    rc = cfg.report
    assert pick_concepts(rc.fig5_concepts, grid, 3) == [("dreambooth", "vase"), ("dreambooth", "duck_toy"),
                                                        ("dreambooth", "colorful_sneaker")]
    assert pick_concepts(rc.fig5_detection_concepts, grid, 3) == [("coco", "donut"), ("coco", "cup"),
                                                                  ("coco", "umbrella")]


# ---------------------------------------------------------------------------------------------------------------
# Each section function on its own: data in, a Section out (no builder, no page, no file written)


def test_quantitative_section_returns_the_comparison_as_data(small_tables):
    from visual_words.report.sections.quantitative import quantitative

    cfg, ev, cells = small_tables
    sec = quantitative(ev, cells, cfg.evaluate, 0.1, cfg.study.datasets, SMOKE_BANNER)
    assert [f.name for f in sec.figures] == ["fig3", "fig6", "comparison"] and not sec.skipped
    comp = cmp.compare(cells, paper_table(), 0.1)
    n = cmp.counts(comp)
    assert sec.metrics["comparison"] == n and sec.metrics["comparison_ap50"]["compared"] > 0  # ap50 = 0.5 rows
    assert sec.headline[0] == {"value": f"{n['agree']} / {n['compared']}",
                               "label": "cells inside the paper's CI / tolerance"}
    in_domain = cells[(cells["eval_task"] == "detection") & (cells["trained_task"] == "detection")
                      & np.isinf(cells["delta"])]["mean"].mean()
    assert sec.metrics["in_domain"]["detection"] == round(in_domain, 4)
    (table,) = sec.tables
    assert table.title == "Per cell" and table.header == shown.COMPARISON_HEADER
    # the table lists the run's cells (AP@[.50:.95] and AP50 rows), the not-run paper cells only in the CSV
    assert len(table.rows) == len(comp[comp["status"] != "not run"]) + sec.metrics["comparison_ap50"]["compared"] + \
        sec.metrics["comparison_ap50"]["not_in_paper"]
    assert set(sec.csv) == {"cells.csv", "comparison.csv", "transfer_shares.csv"}
    assert sec.csv["cells.csv"].frame is cells
    assert sec.pages["comparison.html"].rows == table.rows
    fig = sec.figures[0].draw()  # the bars carry the cell means
    first = cells[(cells["eval_task"] == "generation") & (cells["trained_task"] == "generation")
                  & (cells["dataset"] == cfg.study.datasets[0]) & np.isinf(cells["delta"])]["mean"].iloc[0]
    assert fig.axes[0].patches[0].get_width() == pytest.approx(first)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_quantitative_section_skips_fig3_without_unconstrained_words(small_tables):
    from visual_words.report.sections.quantitative import quantitative

    cfg, ev, cells = small_tables
    finite = ev[~np.isinf(ev["delta"].astype(float))]
    sec = quantitative(finite, cells[~np.isinf(cells["delta"])], cfg.evaluate, 0.1, cfg.study.datasets)
    assert [f.name for f in sec.figures] == ["fig6", "comparison"]
    assert sec.skipped == [("Fig. 3", "no unconstrained (δ = ∞) trials in evaluation.csv")]
    assert "in_domain" not in sec.metrics  # in-domain headline numbers are of unconstrained words only


def test_eps_section_counts_per_delta_never_pooled():
    from visual_words.report.sections.eps import eps_section

    rows = [(0.5, False, True), (0.5, False, True), (math.inf, False, True), (math.inf, False, False),
            (0.5, True, False)]
    eps = pd.DataFrame([{"delta": d, "transferred": moved, "nearest_is_anchor": hit, "trained_task": "generation",
                         "table_task": "detection" if moved else "generation", "rel_dist": 0.25 * (i + 1),
                         "anchor_rank": i, "cos_anchor": 0.9} for i, (d, moved, hit) in enumerate(rows)])
    sec = eps_section(eps)
    assert sec.metrics["eps"] == {"vectors": 4, "nearest_is_anchor_in_domain": {"0.5": 1.0, "inf": 0.5},
                                  "nearest_is_anchor_transferred": {"0.5": 0.0}}
    assert [h["value"] for h in sec.headline] == ["1.00", "0.50", "0.00"]
    assert sec.headline[1]["label"].endswith("δ = ∞")
    (table,) = sec.tables
    assert table.header[:3] == ["trained_task", "table_task", "delta"] and len(table.rows) == 3  # one per group
    own_inf = next(r["cells"] for r in table.rows if r["cells"][1] == "generation" and r["cells"][2] == "inf")
    assert own_inf[3] == "2" and own_inf[4] == f"{(0.75 + 1.0) / 2:.3f}"  # vectors, median ‖v−a‖/d_nn
    assert list(sec.csv) == ["eps_summary.csv"] and len(sec.csv["eps_summary.csv"].frame) == 3
    (figure,) = sec.figures
    fig = figure.draw()
    assert figure.name == "eps_stats" and len(fig.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_layers_section_one_tsne_figure_per_group_and_skips_fig7_without_truncation():
    from visual_words.report.sections.layers import layers_section

    tsne = pd.DataFrame([{"table_task": table, "table_model": "m", "dataset": "coco", "source_task": source,
                          "layer": 1, "num_layers": 2, "concept": "c", "anchor": "a", "x": 0.0, "y": 0.0}
                         for table, source in (("generation", "generation"), ("detection", "generation"))])
    sec = layers_section(tsne, None, Path("."), 0.5)
    assert [f.name for f in sec.figures] == ["tsne_generation_coco_generation", "tsne_detection_coco_generation"]
    assert sec.figures[1].title.endswith("words trained for generation, transferred into the detection model")
    assert [s[0] for s in sec.skipped] == ["Fig. 7"]


def _gallery(tmp_path, kept):
    """Two pascal concepts × two anchors × three tasks × δ ∈ {0.5, ∞}; `kept`: the image files that exist."""
    from PIL import Image

    from visual_words.report.sections.qualitative import Gallery
    from visual_words.trials import Trial

    trials = tuple(Trial(task, "m", "pascal", concept, anchor, delta) for task in TASKS
                   for concept in ("airplane", "bird") for anchor in ("airplane", "bicycle")
                   for delta in (0.5, math.inf))
    for i, name in enumerate(kept):
        Image.new("RGB", (8, 8), (40 * i, 90, 0)).save(tmp_path / name)
    return Gallery(trials=trials, images={name: tmp_path / name for name in kept}, images_dir=tmp_path,
                   anchors={"pascal": ["airplane", "bicycle"]},
                   own_anchor={("pascal", "airplane"): "airplane", ("pascal", "bird"): "bird"},
                   concepts={"pascal": ["airplane", "bird"]},
                   targets={("pascal", "airplane"): tmp_path / "t.png", ("pascal", "bird"): tmp_path / "t.png"})


def test_qualitative_selection_is_data_and_drawing_is_image_grid(tmp_path):
    from types import SimpleNamespace

    from visual_words.report.sections.qualitative import anchor_row, fig4_columns, fig4_rows, qualitative

    kept = ["generation__pascal__airplane__anchor-airplane__delta-0.5__0.png",  # own anchor, but not at δ = ∞
            "classification__pascal__airplane__anchor-airplane__delta-0.5__0.png",
            "generation__pascal__bird__anchor-bicycle__delta-inf__0.png"]  # bird's own anchor is not in the grid
    g = _gallery(tmp_path, kept)
    columns = fig4_columns(g, ["pascal/bird", "dreambooth/vase"])  # vase is not in the grid: topped up
    assert [(c.concept, c.anchor, c.delta) for c in columns] == [("bird", "bicycle", math.inf),
                                                                  ("airplane", "airplane", 0.5)]
    rows = fig4_rows(g, columns)
    assert [label for label, _ in rows] == ["target images", "trained for\ngeneration",
                                            "classification\n→ generation", "detection\n→ generation"]
    assert rows[1][1] == [("bird\n(anchor bicycle, δ = ∞)", tmp_path / kept[2]),
                          ("airplane\n(anchor airplane, δ = 0.5)", tmp_path / kept[0])]
    assert [p for _, p in rows[2][1]] == [None, tmp_path / kept[1]] and [p for _, p in rows[3][1]] == [None, None]
    assert anchor_row(g, "pascal", "airplane", 0.5) == [("anchor: airplane", tmp_path / kept[0]),
                                                        ("anchor: bicycle", None)]

    rc = SimpleNamespace(fig4_concepts=["pascal/bird"], fig5_concepts=["pascal/airplane"],
                         fig5_detection_concepts=["pascal/bird"])
    sec = qualitative(g, rc, ["pascal"], 0.5)
    assert [f.name for f in sec.figures] == ["fig4", "fig5", "grid_pascal"]
    assert [s[0] for s in sec.skipped] == ["Fig. 5 detection rows / Figs. 8-9"]  # no __det.png kept
    fig = sec.figures[1].draw()  # fig5: one row (airplane), a column per anchor; the missing one drawn grey
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[1].texts] == ["missing"]
    import matplotlib.pyplot as plt

    plt.close(fig)
    empty = qualitative(_gallery(tmp_path, []), rc, ["pascal"], 0.5)
    assert not empty.figures and [s[0] for s in empty.skipped] == ["Fig. 4 / Fig. 5 / appendix grids"]


def test_claims_section_rows_headline_and_transfer_table():
    from visual_words.claims.point import PointResult
    from visual_words.report.sections.claims import claims_section, transfer_table

    results = [PointResult("C1", "in-domain works", "cells", "agrees", "±0.1", "0.9", value=0.95, checks=1),
               PointResult("C2", "cls→gen transfers", "share", "differs", "±0.1", "0.84",
                           value={"cls_to_gen": {"max_share": 0.2, "dataset": "coco", "within_tolerance": False}},
                           checks=1, failed=["cls_to_gen"]),
               PointResult("C5", "needs three datasets", "cells", "not run", "±0.1", "")]
    sec = claims_section(results)
    (table,) = sec.tables
    assert [r["class"] for r in table.rows] == ["ok", "flag", "na"]
    assert table.rows[0]["cells"][3] == "0.950" and table.rows[1]["cells"][6] == "failed: cls_to_gen"
    assert sec.headline == [{"value": "1 agree / 1 differ",
                             "label": "claims described cell by cell (1 not run, 0 not judged)"}]
    assert sec.metrics["claims_summary"] == {"agrees": 1, "differs": 1, "not run": 1, "not judged": 0}
    transfer = transfer_table(results, 0.1)
    assert transfer.id == "paper" and transfer.metrics["transfer_share"] == results[1].value
    cls_gen = next(r for r in transfer.tables[0].rows if r["cells"][2] != "not run")
    assert cls_gen["class"] == "flag" and cls_gen["cells"][2:] == ["0.20 (coco)", "-0.64", "outside tolerance"]
    assert transfer_table(results[:1], 0.1).skipped[0][0] == "transfer claims"
