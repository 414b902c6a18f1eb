"""`vw report`: the paper's figures from this run, the comparison with the paper, the HTML page (DVC `report`)."""

from __future__ import annotations

from visual_words.commands import add_config_args, config_from_args


def cmd_report(args) -> int:
    cfg = config_from_args(args)
    import logging

    from visual_words.report.stage import run

    logging.basicConfig(level=logging.INFO, format="[report] %(message)s")
    page = run(cfg)
    print(f"[report] profile={cfg.profile}: {page}")
    print(f"[report] metrics: {page.parent / 'metrics.json'}  comparison: {page.parent / 'comparison.csv'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="regenerate the paper's figures, compare with the paper, write reports/<profile>/index.html",
        description="Reads evaluation.csv (evaluate stage), eps_stats.csv / tsne.csv / truncation.csv (analyze "
        "stage), the kept generations and every stage's provenance.json, and writes <report.out_dir>/<profile>/: "
        "index.html (self-contained: figures under figures/, no network), metrics.json (`dvc metrics show`), "
        "summary.md, cells.csv, comparison.csv/.html (ours vs the paper per cell: difference, inside the paper's "
        "CI or within report.tolerance), eps_summary.csv and figures/*.{png,svg} (report.formats). Figures whose "
        "inputs are missing are skipped with the reason. Runs on tiny random-weight models say so on every "
        "output's first line.")
    add_config_args(p)
    p.set_defaults(func=cmd_report, takes_run_lock=True, writes="report.out_dir")
