"""`vw maps`: fit the linear transfer maps between the task models' token tables (the DVC `maps` stage)."""

from __future__ import annotations

import json

from visual_words.commands import add_config_args, config_from_args


def cmd_maps(args) -> int:
    cfg = config_from_args(args)
    from visual_words.transfer.estimators import ESTIMATORS
    from visual_words.transfer.maps import study_model_keys, summary
    from visual_words.transfer.stage import run

    if cfg.maps.estimator not in ESTIMATORS:
        raise ValueError(f"maps.estimator is `{cfg.maps.estimator}`; known estimators: {', '.join(ESTIMATORS)}")
    keys = args.models or study_model_keys(cfg)
    print(f"[maps] profile={cfg.profile} estimator={cfg.maps.estimator} models={', '.join(keys)}")
    rows = summary(run(cfg, keys, progress=not args.quiet))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"{'source':<16} {'target':<16} {'shape':>11} {'R2':>8} {'ret@1':>8}  file")
    for r in rows:
        print(f"{r['src']:<16} {r['dst']:<16} {'x'.join(map(str, r['shape'])):>11} {fmt(r.get('r2')):>8} "
              f"{fmt(r.get('retrieval_at_1')):>8}  {r['file']}")
    print(f"[maps] wrote {len(rows)} maps, quality.csv (every map in the folder) and provenance.json to "
          f"{cfg.path(cfg.maps.out_dir)}")
    from visual_words.tracking import log_stage_run

    log_stage_run(cfg, "maps", stage_metrics(rows), artifacts=[cfg.path(cfg.maps.out_dir) / "quality.csv"])
    return 0


def stage_metrics(rows: list[dict]) -> dict[str, float]:
    """The maps run's metrics: each map's quality, named `<src>_to_<dst>.<measure>` (also `vw tracking rebuild`)."""
    return {f"{r['src']}_to_{r['dst']}.{k}": r[k] for r in rows for k in ("r2", "retrieval_at_1")
            if r.get(k) is not None and r.get(k) == r.get(k)}  # r == r: not a NaN (an empty quality.csv cell)


def register(sub) -> None:
    p = sub.add_parser(
        "maps", help="fit the linear transfer maps between the task models' token tables",
        description="Fits a linear map for every ordered pair of the study's task models (study.models: generation, "
        "detection, classification) on the non-special tokens of their shared vocabulary, with maps.estimator "
        "(ols = the paper's least squares without bias, solved in fp64; ridge, procrustes, affine for ablations). "
        "Quality (R², nearest-token retrieval@1) is measured on a seeded held-out share (maps.holdout_fraction) "
        "before the final fit on all tokens. Writes <maps.out_dir>/<src>__to__<dst>.<estimator>.safetensors + "
        ".json sidecars (table hashes, estimator, quality), quality.csv (one row per map in the folder) and "
        "provenance.json. With --models, the given pairs are added beside the maps already there: what a word "
        "trained in a model outside the study needs before `vw evaluate run` can score it.")
    add_config_args(p)
    p.add_argument("--models", nargs="+", metavar="KEY",
                   help="registry keys to map between (all ordered pairs; default: the study's three task models)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_maps, takes_run_lock=True, loads_models=True, tracks=True, writes="maps.out_dir")
