"""The trial grid fanned out on Ray, tracked in MLflow, resumable.

- Trials are grouped into batches of one (task model, dataset) — the unit the trainer batches into one forward
  pass — and each batch is one Ray task. A task asks for a GPU share in `paper` (CUDA present) and one CPU in
  `smoke`. Workers keep their model loaded across tasks (`max_calls=0` + a per-process cache; docs/toolchain.md §7.2).
- Resume is decided by trial files, not MLflow: a trial is done when its embedding file and sidecar exist and the
  sidecar's `trial_key` equals the current one (a params change retrains). A killed sweep re-run trains only what
  is missing.
- MLflow: the driver creates the store and experiment before the fan-out; each worker logs one run per finished
  trial; at the start and end the driver logs any trial whose file exists but whose run is missing (killed between
  the two) and closes runs left RUNNING (KILLED when a FINISHED twin exists, else FAILED).
- Ray starts an in-process local cluster by default (`address="local"`, never a stale cluster); `RAY_ADDRESS`
  points at a real cluster (Slurm via Ray's sbatch recipe, Kubernetes via KubeRay) — workers then need the same
  image/venv and a tracking server (`MLFLOW_TRACKING_URI=http://…`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visual_words.errors import UserError
from visual_words.train.loop import is_done, report_damaged
from visual_words.trials import Trial, embedding_path, trial_grid, trial_key


class SweepError(UserError, RuntimeError):
    """Some trial batches failed; the message names their trial ids and the remote error."""


@dataclass
class SweepSummary:
    total: int
    already_done: int
    trained: int
    failed: list[tuple[list[str], str]] = field(default_factory=list)
    experiment_id: str = ""
    tracking_uri: str = ""


def make_batches(cfg, trials: list[Trial]) -> list[list[Trial]]:
    """Group trials by (task, model, dataset) — one model and one data set per batch — in chunks of the task's
    trials-per-batch (train.trials_per_batch, or its per-task override)."""
    from visual_words.train.loop import trials_per_batch

    groups: dict[tuple, list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.task, t.model, t.dataset), []).append(t)
    out = []
    for (task, _, _), g in groups.items():
        size = max(1, trials_per_batch(cfg, task))
        out += [g[i:i + size] for i in range(0, len(g), size)]
    return out


def read_sidecar(path: Path) -> dict | None:
    side = Path(str(path) + ".json")
    if not (path.is_file() and side.is_file()):
        return None
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError:
        return None


def _run_tags(cfg, trial: Trial) -> dict[str, str]:
    from visual_words.provenance import git_commit
    from visual_words.tracking import CONFIG_HASH, GIT_COMMIT, TRIAL_ID, TRIAL_KEY, config_hash

    return {TRIAL_KEY: trial_key(cfg, trial), TRIAL_ID: trial.id, GIT_COMMIT: git_commit(cfg.root),
            CONFIG_HASH: config_hash(cfg.to_dict()), "task": trial.task, "dataset": trial.dataset,
            "concept": trial.concept, "anchor": trial.anchor, "delta": str(trial.delta)}


def log_trials(cfg, trials: list[Trial], uri: str, exp_id: str) -> int:
    """Log one MLflow run per trial from its files (used by workers and by the driver's reconciliation): the
    sidecar, and the trial's wall-clock span from its times file (kept out of the sidecar, see provenance.py)."""
    from visual_words.provenance import read_times
    from visual_words.tracking import log_trial_run

    n = 0
    for t in trials:
        path = embedding_path(cfg, t)
        side = read_sidecar(path)
        if side is not None:
            log_trial_run(uri, exp_id, side | read_times(Path(str(path) + ".json")), path, tags=_run_tags(cfg, t))
            n += 1
    return n


@functools.lru_cache(maxsize=2)
def _cached_model(key: str, device: str, precision: str, root: str):
    """One loaded model per worker process, reused by every batch that worker runs."""
    from visual_words.models.loading import load_model

    return load_model(key, device=device, precision=precision, root=root)


def run_batch(cfg, trials: list[Trial], uri: str, exp_id: str) -> list[str]:
    """Train one batch of trials (one model, one dataset), write their files, log their runs. Returns trial ids."""
    from visual_words.train import train_trials

    todo = [t for t in trials if not is_done(cfg, t)]  # the rest only complete the batch's composition
    loaded = _cached_model(trials[0].model, cfg.study.device, cfg.train.precision, cfg.root)
    train_trials(cfg, trials, loaded=loaded, progress=False, announce_damage=False)
    log_trials(cfg, todo, uri, exp_id)
    return [t.id for t in todo]


LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray_init(cfg):
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # A local study needs no network: with Ray's "cluster mode" off (the switch Ray itself uses on laptops; its
        # name says Windows/OSX, it works on Linux too) the node's address is the loopback one, and the GCS, the
        # raylet and every worker listen on 127.0.0.1 only (tests/test_reliability_faults.py checks the sockets).
        os.environ[LOCAL_ONLY_ENV] = "0"
    import ray

    if address:  # a real cluster: its resources are its own
        ray.init(address=address, log_to_driver=True)
    else:
        import torch
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time; covers a `ray` imported before the env was set

        # "local" always starts a fresh in-process cluster (a bare ray.init() may attach to a dead one).
        ray.init(address="local", num_cpus=cfg.sweep.num_workers, num_gpus=torch.cuda.device_count(),
                 include_dashboard=False, object_store_memory=300 * 2**20, log_to_driver=True)
    return ray


def _task_resources(cfg) -> dict[str, Any]:
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and cfg.study.device != "cpu":
        return {"num_gpus": cfg.sweep.gpus_per_task, "num_cpus": 1}
    return {"num_cpus": 1}


def run_sweep(cfg, trials: list[Trial] | None = None, progress: bool = True) -> SweepSummary:
    """Train every trial of the profile that is not done yet, on Ray; raise SweepError if any batch failed."""
    from tqdm import tqdm

    from visual_words import registry, tracking
    from visual_words.models.tiny import ensure_tiny

    trials = trial_grid(cfg) if trials is None else trials
    uri, exp_id = tracking.ensure_experiment(cfg, "train")
    # Reconcile what a previous (killed) sweep left: close RUNNING runs, log trials that have files but no run.
    tracking.close_orphans(uri, exp_id)
    report_damaged(cfg, trials)
    finished = tracking.finished_keys(uri, exp_id)
    done = [t for t in trials if is_done(cfg, t)]
    log_trials(cfg, [t for t in done if trial_key(cfg, t) not in finished], uri, exp_id)
    todo = [t for t in trials if not is_done(cfg, t)]
    # Batches are cut from the whole grid, so a trial is always trained in the same company (bit-identical
    # retrains); batches with nothing to do are dropped.
    pending_ids = {t.id for t in todo}
    batches = [b for b in make_batches(cfg, trials) if any(t.id in pending_ids for t in b)]
    print(f"[sweep] {len(trials)} trials, {len(done)} already done, {len(todo)} to run in {len(batches)} batches "
          f"(engine {cfg.sweep.engine}, tracking {uri})", flush=True)
    summary = SweepSummary(total=len(trials), already_done=len(done), trained=0, experiment_id=exp_id,
                           tracking_uri=uri)
    if not batches:
        return summary
    # Build tiny checkpoints once here, not racing in every worker.
    for key in sorted({t.model for t in todo}):
        if registry.model(key).tiny is not None:
            ensure_tiny(registry.model(key), cfg.root)
    if cfg.sweep.engine != "ray":
        raise ValueError(f"sweep.engine `{cfg.sweep.engine}` is not supported (ray)")
    ray = _ray_init(cfg)
    try:
        remote = ray.remote(max_calls=0, max_retries=cfg.sweep.max_retries)(run_batch)
        opts = _task_resources(cfg)
        pending = {remote.options(**opts).remote(cfg, b, uri, exp_id): [t for t in b if t.id in pending_ids]
                   for b in batches}
        bar = tqdm(total=len(todo), desc="trials", unit="trial", disable=not progress, file=sys.stdout)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            batch = pending.pop(ref)
            try:
                ids = ray.get(ref)
                summary.trained += len(ids)
            except Exception as e:  # RayTaskError carries the remote traceback; keep its last line + trial ids
                summary.failed.append(([t.id for t in batch], _last_line(e)))
                print(f"[sweep] FAILED batch of {len(batch)}: {[t.id for t in batch]}\n  {_last_line(e)}",
                      file=sys.stderr, flush=True)
            bar.update(len(batch))
        bar.close()
    finally:
        ray.shutdown()
        tracking.close_orphans(uri, exp_id)
    if summary.failed:
        lines = [f"  {ids[0]}{' (+%d more)' % (len(ids) - 1) if len(ids) > 1 else ''}: {err}"
                 for ids, err in summary.failed]
        raise SweepError(f"{sum(len(i) for i, _ in summary.failed)} trials failed (re-run to resume; finished "
                         f"trials are kept):\n" + "\n".join(lines))
    return summary


def _last_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else repr(e)
