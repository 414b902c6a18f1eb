"""The evaluate stage fanned out on Ray, as `vw sweep` fans out training (evaluate.engine: ray).

The driver plans exactly what the in-process path plans (runner.plan): rows whose key (embedding, map, model,
manifest, settings) is unchanged are reused, and the rest are units of one evaluated model and one source model —
K trials of one (dataset, concept). Each unit is one Ray task with a GPU share (sweep.gpus_per_task when GPUs are
present, one CPU otherwise); a worker keeps its evaluated models loaded across units (`max_calls=0` and one
Evaluator per process) and writes each finished trial's row under rows/ as it goes, so a killed or failed run
resumes where it stopped. No shared disk: a task receives what it reads through Ray (unit_files: manifest,
held-out images, cached features, the map) and scores in a scratch copy of the workspace on its node; its rows and
kept images come back to the driver, which writes them as each unit finishes (data/staging.py). The same Ray
start-up, wait loop and failure report as the sweep (visual_words.ray_tasks:
a fresh local cluster of sweep.num_workers, or RAY_ADDRESS; the failed units' trial ids and the remote error's last
line, a non-zero exit, finished rows kept). The MLflow metrics go on each trial's training run afterwards, as in-process
(tracking.log_evaluation, called by `vw evaluate run`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from visual_words.evaluate.runner import (
    EVAL_ORDER,
    EvalResult,
    Evaluator,
    Unit,
    finish,
    plan,
    read_items,
    run_unit,
)
from visual_words.ray_tasks import failure_report, run_on_ray
from visual_words.trained import TrainedWord
from visual_words.trials import TASKS


class EvaluationError(RuntimeError):
    """Some evaluation units failed; the message names their trial ids and the remote error."""


_EVALUATOR: dict[str, Evaluator] = {}  # one per worker process, kept across the units it runs


def _worker_evaluator(cfg) -> Evaluator:
    """This process's Evaluator for the driver's config (its loaded models are kept across units)."""
    from visual_words.tracking import config_hash

    key = config_hash(cfg.to_dict()) + cfg.root
    if key not in _EVALUATOR:
        _EVALUATOR.clear()
        _EVALUATOR[key] = Evaluator(cfg, progress=False)
    return _EVALUATOR[key]


def unit_files(cfg, unit: Unit) -> tuple[list[Path], list[Path]]:
    """What an evaluation task reads besides its tokens (which travel in the unit): (the dataset's manifest, the
    held-out images its metric reads (reuse.eval_records) and the evaluated model's cached features of them; the
    transfer map, file and sidecar, its tokens go through). Units of one dataset and task share the first, units of
    one model pair the second."""
    from visual_words.data import staging
    from visual_words.data.manifest import manifest_path
    from visual_words.registry import study_concepts
    from visual_words.reuse import eval_records
    from visual_words.reuse import manifest as read_manifest
    from visual_words.transfer.files import map_path

    data: list[Path] = []
    if unit.eval_task != "generation":
        m = read_manifest(cfg, unit.dataset)
        labels = [c.name for c in study_concepts(cfg, unit.dataset)]
        images = [m.path_of(r) for r in eval_records(m, unit.eval_task, unit.concept, labels)]
        data = [manifest_path(cfg, unit.dataset), *images, *staging.feature_entries(cfg, unit.dst_key, images)]
    maps: list[Path] = []
    if unit.source_model != unit.dst_key:
        path = map_path(cfg, unit.source_model, unit.dst_key)
        maps = [path, path.with_name(path.name + ".json")]
    return data, maps


def evaluate_unit(cfg, unit: Unit, *inputs) -> tuple[list[dict], object]:
    """A Ray task: in a scratch copy of the workspace holding only `inputs` (staging.Bundles of unit_files), check
    that the evaluated model's table is the one the tokens / the map were made for, score the unit, write its rows
    (and kept images); return the rows and the files written (a Bundle) for the driver to write. Models of another
    evaluated task are dropped first (one task's models at a time)."""
    from visual_words.data.staging import Scratch

    with Scratch(cfg, inputs) as ws:
        ev = _worker_evaluator(cfg)
        ev.use_workspace(ws.cfg)
        needed = [unit.dst_key] + ([cfg.study.models["evaluator"]] if unit.eval_task == "generation" else [])
        ev.release(keep=needed)
        items = [m[0] for m in unit.members]
        if unit.source_model != unit.dst_key:  # the map's recorded tables are checked against the live model below
            ev.transfer_map(unit.source_model, items[0].table_hash, unit.dst_key)
        if unit.eval_task != "generation":
            ev.manifest(unit.dataset)
        ev.check_tables(unit.dst_key, items)
        rows = run_unit(ws.cfg, ev, unit)
        return rows, ws.returned(cfg.evaluate.out_dir)


def run_evaluation_ray(cfg, tasks: Sequence[str] | None = None, limit: int | None = None, progress: bool = True,
                       items: Sequence[TrainedWord] | None = None) -> EvalResult:
    """runner.run_evaluation's result, with the units run as Ray tasks; raises EvaluationError naming the trials
    of any failed unit (after every other unit has finished and written its rows)."""
    from visual_words.data import staging

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
        shipper, sizes = staging.Shipper(cfg), {"back": 0, "largest": 0}

        def inputs(u):
            data, maps = unit_files(cfg, u)
            refs = shipper.put(data), shipper.put(maps)
            sizes["largest"] = max(sizes["largest"], shipper.size(data) + shipper.size(maps))
            return (cfg, u, *refs)

        def write(u, result):  # rows and kept images into the workspace as each unit finishes (a kill keeps them)
            staging.write_back(cfg, result[1])
            sizes["back"] += result[1].nbytes

        done, failures = run_on_ray(
            cfg, evaluate_unit, units, inputs, label="evaluate", bar_desc="evaluate", bar_unit="batch",
            describe=lambda u: f"batch of {len(u.members)} ({u.eval_task} in {u.dst_key}): {u.trial_ids}",
            progress=progress, on_done=write)
        print(f"[evaluate] shipped {shipper.nbytes / 2**20:.2f} MiB of inputs to {len(units)} tasks (at most "
              f"{sizes['largest'] / 2**20:.2f} MiB to one); {sizes['back'] / 2**20:.2f} MiB of rows and images came "
              "back", flush=True)
        for _, (unit_rows, _) in done:
            rows += unit_rows
        failed = [(u.trial_ids, f"{u.eval_task}: {err}") for u, err in failures]
    if failed:
        raise EvaluationError(failure_report(failed, "trial evaluations", "rows"))
    return finish(cfg, rows, len(rows) - n_reused, n_reused, time.time() - t0)
