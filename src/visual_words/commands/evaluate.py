"""`vw evaluate`: the evaluate stage (`run`), per-cell statistics (`summarize`), and the COCO AP tool (`coco-ap`)."""

from __future__ import annotations

import json

from visual_words.commands import add_config_args, config_from_args
from visual_words.tasks import TASKS


def cmd_coco_ap(args) -> int:
    from visual_words.evaluate.coco import coco_summary

    cat_ids = None
    if args.category is not None:
        cat_ids = [args.category]
    print(json.dumps(coco_summary(args.ground_truth, args.detections, cat_ids=cat_ids), indent=2))
    return 0


def cmd_summarize(args) -> int:
    cfg = config_from_args(args)
    from visual_words.evaluate.runner import write_summary
    from visual_words.provenance import record_output

    path = write_summary(cfg, args.table)
    record_output(path)  # its new sha256, so readers keep trusting it
    print(f"[evaluate] wrote {path}")
    return 0


def cmd_run(args) -> int:
    cfg = config_from_args(args)
    import sys

    from visual_words.evaluate.fanout import EvaluationError
    from visual_words.evaluate.stage import run
    from visual_words.models.speed import check_precision

    check_precision(cfg.evaluate.precision, cfg.study.models.values(), "evaluate.precision")  # every model runs

    try:
        result = run(cfg, tasks=args.tasks, limit=args.limit, progress=not args.quiet, engine=args.engine)
    except EvaluationError as e:
        print(f"vw evaluate: {e}", file=sys.stderr)
        return 1
    print(f"[evaluate] {result.n_rows} rows ({result.n_evaluated} newly evaluated, {result.n_reused} reused) → "
          f"{result.table}")
    if not args.no_tracking:
        from visual_words.tracking import log_evaluation

        n = log_evaluation(cfg, result.table)
        print(f"[evaluate] MLflow: metrics on {n['trials_logged']} trial runs, {n['pictures_logged']} pictures"
              + (f" ({n['trials_without_run']} trials have no training run)" if n["trials_without_run"] else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate trained tokens in-domain and transferred; COCO AP tool",
                       description="Evaluation of trained tokens on the three tasks (generation accuracy, detection "
                       "AP, classification accuracy), in-domain and transferred through the linear maps; and tools.")
    esub = p.add_subparsers(dest="evaluate_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: p.print_help() or 0)

    r = esub.add_parser(
        "run", help="evaluate every trained word of the grid on all three tasks (the DVC `evaluate` stage)",
        description="For each trained word of the profile's trial grid (an embedding file under train.out_dir that "
        "is not one is skipped, and one line says how many), evaluates the token in its own model and transferred "
        "into the two other task models through the maps stage's maps (v_x = T v_y per vector; a word trained in a "
        "model outside the study needs `vw maps --models SRC DST` first): generation accuracy "
        "(SD samples classified by the evaluator CLIP), detection AP@[.50:.95]/AP50 (OWL, pycocotools), "
        "classification accuracy (10-way zero-shot). Writes <evaluate.out_dir>/evaluation.csv (one row per trial and "
        "evaluated task), summary.csv (per-cell mean and bootstrap CI), kept images under images/, and "
        "provenance.json. Finished trials are reused on a rerun (keyed by the embedding and map contents).")
    add_config_args(r)
    r.add_argument("--tasks", nargs="+", choices=TASKS,
                   help="only these evaluated tasks (default: all three)")
    r.add_argument("--limit", type=int, help="evaluate at most this many of the grid's words (a quick look)")
    r.add_argument("--engine", choices=["local", "ray"],
                   help="local: this process; ray: one Ray task per batch of (evaluated model, source model), "
                   "like `vw sweep` (default: evaluate.engine)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--no-tracking", action="store_true", help="do not log the results to MLflow")
    r.set_defaults(func=cmd_run, takes_run_lock=True, loads_models=True, tracks=True, writes="evaluate.out_dir")

    s = esub.add_parser("summarize", help="per-cell mean and 95%% bootstrap CI of an evaluation table",
                        description="Reads evaluation.csv and writes summary.csv beside it: per (dataset, trained "
                        "task, evaluated task, δ, source model, evaluated model) the number of trials, the mean and "
                        "the percentile-bootstrap CI (evaluate.bootstrap_resamples, evaluate.bootstrap_seed, "
                        "evaluate.ci_level).")
    add_config_args(s)
    s.add_argument("table", nargs="?", help="evaluation table (default: <evaluate.out_dir>/evaluation.csv)")
    s.set_defaults(func=cmd_summarize)

    c = esub.add_parser(
        "coco-ap", help="COCO box AP of a detections file against a ground-truth file (pycocotools), as JSON",
        description="Runs pycocotools' COCOeval (bbox) and prints its summary as JSON: AP (@[.50:.95]), AP50, AP75, "
        "APsmall/medium/large, AR1/AR10/AR100, ARsmall/medium/large (-1 where undefined). GROUND_TRUTH is a COCO "
        "instances file (images, annotations, categories); DETECTIONS a COCO results file "
        "([{image_id, category_id, bbox: [x, y, w, h], score}, …]).")
    c.add_argument("ground_truth", metavar="GROUND_TRUTH", help="COCO ground-truth JSON")
    c.add_argument("detections", metavar="DETECTIONS", help="COCO results JSON")
    c.add_argument("--category", type=int, help="evaluate only this category id (default: all)")
    c.set_defaults(func=cmd_coco_ap)
