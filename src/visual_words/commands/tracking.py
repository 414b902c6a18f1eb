"""`vw tracking rebuild`: a new MLflow store from the study's files, after the old one was damaged or lost.

MLflow is a record of the study's files, not their source: every trained trial's sidecar holds what its run logs
(parameters, curves, final metrics), evaluation.csv what the evaluation adds to those runs, quality.csv the maps'
run. So a damaged store is moved aside (kept, never deleted) and the runs are logged again from the files.
"""

from __future__ import annotations

from pathlib import Path

from visual_words.commands import add_config_args, config_from_args
from visual_words.errors import UserError

SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")  # SQLite's side files belong to the store they sit beside


def move_aside(path: Path) -> Path:
    """Rename the store (and SQLite's side files) to `<name>.damaged[.N]`, the first free name; return it."""
    n = 0
    while True:
        target = path.with_name(f"{path.name}.damaged" + (f".{n}" if n else ""))
        if not target.exists():
            break
        n += 1
    path.rename(target)
    for suffix in SQLITE_COMPANIONS:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target


def rebuild(cfg) -> dict[str, int]:
    """Log the runs of the study's files into the (new) store: one run per finished trial, the evaluation on those
    runs (+ the evaluate stage's run), the maps stage's run. Returns what was logged."""
    from visual_words.provenance import verify_output
    from visual_words.tracking import ensure_experiment, log_evaluation, log_stage_run
    from visual_words.train.loop import is_done
    from visual_words.train.sweep import log_trials
    from visual_words.trials import trial_grid

    uri, exp_id = ensure_experiment(cfg, "train")
    done = [t for t in trial_grid(cfg) if is_done(cfg, t)]  # a damaged token is not logged (the sweep retrains it)
    counts = {"trial_runs": log_trials(cfg, done, uri, exp_id), "evaluated_trials": 0, "maps_runs": 0}
    table = cfg.path(cfg.evaluate.out_dir) / "evaluation.csv"
    if table.is_file():
        counts["evaluated_trials"] = log_evaluation(cfg, verify_output(table))["trials_logged"]
    quality = cfg.path(cfg.maps.out_dir) / "quality.csv"
    if quality.is_file():
        import pandas as pd

        from visual_words.commands.maps import stage_metrics

        rows = pd.read_csv(verify_output(quality)).rename(columns={"src_key": "src", "dst_key": "dst"})
        log_stage_run(cfg, "maps", stage_metrics(rows.to_dict("records")), artifacts=[quality])
        counts["maps_runs"] = 1
    return counts


def cmd_rebuild(args) -> int:
    from visual_words.tracking import store_damage, store_file, tracking_uri

    cfg = config_from_args(args)
    uri = tracking_uri(cfg)
    path = store_file(uri)
    if path is None:
        raise UserError(f"the tracking store is a server ({uri}): rebuild runs only a local SQLite store "
                        "(sweep.tracking_uri or MLFLOW_TRACKING_URI)")
    if path.exists():
        problem = "a folder, not an SQLite file" if path.is_dir() else store_damage(path)
        if problem is None and not args.force:
            print(f"[tracking] {path} reads as whole; nothing to rebuild (--force moves it aside anyway)")
            return 0
        kept = move_aside(path)
        print(f"[tracking] moved {path} aside to {kept}" + (f" ({problem})" if problem else ""), flush=True)
    counts = rebuild(cfg)
    print(f"[tracking] rebuilt {path} from the files of profile {cfg.profile}: {counts['trial_runs']} trial runs, "
          f"evaluation on {counts['evaluated_trials']} of them, {counts['maps_runs']} maps run")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tracking", help="the MLflow store: rebuild it from the study's files",
                       description="MLflow only records the study's files; `vw tracking rebuild` makes a new store "
                       "from them when the old one is damaged or gone.")
    tsub = p.add_subparsers(dest="tracking_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: p.print_help() or 0)
    r = tsub.add_parser("rebuild", help="move a damaged MLflow store aside and log the study's runs again",
                        description="Moves a damaged SQLite store (mlflow.db, or sweep.tracking_uri) aside to "
                        "<name>.damaged (kept), then logs one run per finished trial from its files, the evaluation "
                        "from evaluation.csv and the maps' run from quality.csv. Run it once per profile you ran.")
    add_config_args(r)
    r.add_argument("--force", action="store_true", help="move the store aside even when it reads as whole")
    r.set_defaults(func=cmd_rebuild, takes_run_lock=True)
