"""The evaluate stage fanned out on Ray, as `vw sweep` fans out training (evaluate.engine: ray).

The driver plans exactly what the in-process path plans (runner.plan): rows whose key (embedding, map, model,
manifest, settings) is unchanged are reused, and the rest are units of one evaluated model and one source model —
K trials of one (dataset, concept). Each unit is one Ray task with a GPU share (sweep.gpus_per_task when GPUs are
present, one CPU otherwise); a worker keeps its evaluated models loaded across units (`max_calls=0` and one
Evaluator per process) and writes each finished trial's row under rows/ as it goes, so a killed or failed run
resumes where it stopped. The same Ray start-up, wait loop and failure report as the sweep (visual_words.ray_tasks:
a fresh local cluster of sweep.num_workers, or RAY_ADDRESS; the failed units' trial ids and the remote error's last
line, a non-zero exit, finished rows kept). The MLflow metrics go on each trial's training run afterwards, as in-process
(tracking.log_evaluation, called by `vw evaluate run`).
"""

from __future__ import annotations

import time
from typing import Sequence

from visual_words.evaluate.runner import (
    EVAL_ORDER,
    EvalResult,
    Evaluator,
    Item,
    Unit,
    finish,
    plan,
    read_items,
    run_unit,
)
from visual_words.ray_tasks import failure_report, run_on_ray
from visual_words.trials import TASKS


class EvaluationError(RuntimeError):
    """Some evaluation units failed; the message names their trial ids and the remote error."""


_EVALUATOR: dict[str, Evaluator] = {}  # one per worker process, kept across the units it runs


def _worker_evaluator(cfg) -> Evaluator:
    from visual_words.tracking import config_hash

    key = config_hash(cfg.to_dict()) + cfg.root
    if key not in _EVALUATOR:
        _EVALUATOR.clear()
        _EVALUATOR[key] = Evaluator(cfg, progress=False)
    return _EVALUATOR[key]


def evaluate_unit(cfg, unit: Unit) -> list[dict]:
    """A Ray task: check that the evaluated model's table is the one the tokens / the map were made for, score the
    unit, write its rows. Models of another evaluated task are dropped first (one task's models at a time)."""
    ev = _worker_evaluator(cfg)
    needed = [unit.dst_key] + ([cfg.study.models["evaluator"]] if unit.eval_task == "generation" else [])
    ev.release(keep=needed)
    items = [m[0] for m in unit.members]
    if unit.source_model != unit.dst_key:  # the map's recorded tables are checked against the live model below
        ev.transfer_map(unit.source_model, items[0].table_hash, unit.dst_key)
    if unit.eval_task != "generation":
        ev.manifest(unit.dataset)
    ev.check_tables(unit.dst_key, items)
    return run_unit(cfg, ev, unit)


def run_evaluation_ray(cfg, tasks: Sequence[str] | None = None, limit: int | None = None, progress: bool = True,
                       items: Sequence[Item] | None = None) -> EvalResult:
    """runner.run_evaluation's result, with the units run as Ray tasks; raises EvaluationError naming the trials
    of any failed unit (after every other unit has finished and written its rows)."""
    from visual_words import registry
    from visual_words.models.tiny import ensure_tiny

    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("evaluate.engine ray needs the `ray` package, which is not installed here; "
                         "run in this process with --engine local (or --set evaluate.engine=local)") from None
    t0 = time.time()
    tasks = [t for t in EVAL_ORDER if t in (tasks or TASKS)]
    items = read_items(cfg, limit) if items is None else items
    rows, units = plan(cfg, Evaluator(cfg, progress=False), tasks, items)
    n_reused = len(rows)
    print(f"[evaluate] {n_reused} rows reused, {sum(len(u.members) for u in units)} to evaluate in {len(units)} "
          f"batches on Ray", flush=True)
    failed: list[tuple[list[str], str]] = []
    if units:
        for key in sorted({u.dst_key for u in units} | {cfg.study.models["evaluator"]}):
            if registry.model(key).tiny is not None:  # build tiny checkpoints once here, not racing in workers
                ensure_tiny(registry.model(key), cfg.root)
        done, failures = run_on_ray(
            cfg, evaluate_unit, units, lambda u: (cfg, u), label="evaluate", bar_desc="evaluate", bar_unit="batch",
            describe=lambda u: f"batch of {len(u.members)} ({u.eval_task} in {u.dst_key}): {u.trial_ids}",
            progress=progress)
        for _, unit_rows in done:
            rows += unit_rows
        failed = [(u.trial_ids, f"{u.eval_task}: {err}") for u, err in failures]
    if failed:
        raise EvaluationError(failure_report(failed, "trial evaluations", "rows"))
    return finish(cfg, rows, len(rows) - n_reused, n_reused, time.time() - t0)
