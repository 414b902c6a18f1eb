"""`vw train`: train a set of trials in this process (no Ray, no MLflow) and write their embedding files."""

from __future__ import annotations

import math

from visual_words.commands import add_config_args, config_from_args
from visual_words.tasks import TASKS


def select_trials(cfg, task=None, dataset=None, concept=None, anchor=None, delta=None, limit=None):
    """The profile's trial grid, filtered; a clear error when nothing matches."""
    from visual_words.trials import trial_grid

    trials = trial_grid(cfg)
    wanted = {"task": task, "dataset": dataset, "concept": concept, "anchor": anchor}
    for name, want in wanted.items():
        if want:
            trials = [t for t in trials if getattr(t, name) == want]
    if delta is not None:
        trials = [t for t in trials if t.delta == delta or (math.isinf(t.delta) and math.isinf(delta))]
    if limit:
        trials = trials[:limit]
    if not trials:
        filters = ", ".join(f"{k}={v}" for k, v in {**wanted, "delta": delta}.items() if v is not None)
        raise ValueError(f"no trial of profile `{cfg.profile}` matches {filters or 'the filters'} "
                         f"(the grid comes from `study` in {cfg.source})")
    return trials


def _delta(text: str) -> float:
    try:
        return float(text)  # "inf" -> unconstrained
    except ValueError:
        raise ValueError(f"--delta must be a number or inf, got {text!r}") from None


def cmd_train(args) -> int:
    from visual_words.data.manifest import check_manifests_cover
    from visual_words.models.speed import check_precision
    from visual_words.train.loop import results_table, train_trials

    cfg = config_from_args(args)
    trials = select_trials_from_args(cfg, args)
    # what would fail every trial is said now, before any model is loaded
    check_precision(cfg.train.precision, [t.model for t in trials], "train.precision")
    check_manifests_cover(cfg, trials)  # a grid the manifests were not prepared for
    print(f"[train] profile={cfg.profile}: {len(trials)} trials, {cfg.train.steps} steps each, "
          f"{cfg.train.num_vectors} vectors per token -> {cfg.path(cfg.train.out_dir)}", flush=True)
    results = train_trials(cfg, trials, progress=not args.no_progress)
    print(results_table(results))
    done = sum(not r.skipped for r in results)
    print(f"[train] {done} trained, {len(results) - done} already done")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train trials in this process and write their embedding files",
                       description="Textual inversion of the selected trials of the profile's grid (model × concept "
                       "× anchor × δ), in this process: trials of one model and dataset train together in one "
                       "batched forward (train.trials_per_batch), each with its own vectors, ε-ball and data. "
                       "Writes <train.out_dir>/<task>/<trial>.safetensors + a JSON sidecar per trial; finished "
                       "trials are skipped and an interrupted batch resumes from its checkpoint. Needs the "
                       "manifests and feature caches of the prepare stage. For the whole grid on Ray with MLflow "
                       "runs use `vw sweep`.")
    add_config_args(p)
    add_trial_filters(p)
    p.set_defaults(func=cmd_train, takes_run_lock=True, loads_models=True, writes="train.out_dir")


def add_trial_filters(p) -> None:
    """The trial-selection options `vw train` and `vw sweep` share (see select_trials_from_args)."""
    p.add_argument("--task", choices=TASKS, help="only this task")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--concept", help="only this concept")
    p.add_argument("--anchor", help="only this anchor word")
    p.add_argument("--delta", help="only this ε-ball radius δ (a number, or inf for unconstrained)")
    p.add_argument("--limit", type=int, help="only the first N matching trials")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def select_trials_from_args(cfg, args):
    return select_trials(cfg, args.task, args.dataset, args.concept, args.anchor,
                         None if args.delta is None else _delta(args.delta), args.limit)
