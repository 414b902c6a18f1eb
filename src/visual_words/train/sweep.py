"""The trial grid fanned out on Ray, tracked in MLflow, resumable.

- Trials are grouped into batches of one (task model, dataset) — the unit the trainer batches into one forward
  pass — and each batch is one Ray task. A task asks for a GPU share in `paper` (CUDA present) and one CPU in
  `smoke`. Workers keep their model loaded across tasks (`max_calls=0` + a per-process cache; docs/toolchain.md §7.2).
- Resume is decided by trial files, not MLflow: a trial is done when its embedding file and sidecar exist and the
  sidecar's `trial_key` equals the current one (a params change retrains). A killed sweep re-run trains only what
  is missing.
- No shared disk: a task receives what it reads through Ray (batch_files: manifest, images, cached features, the
  batch's finished trials; data/staging.py) and trains in a scratch copy of the workspace on its node; it returns
  the files it wrote, which the driver writes into the workspace before logging their runs.
- MLflow: the driver creates the store and experiment before the fan-out and logs one run per finished trial as
  its batch comes back; at the start and end it logs any trial whose file exists but whose run is missing (killed
  between the two) and closes runs left RUNNING (KILLED when a FINISHED twin exists, else FAILED).
- Ray starts an in-process local cluster by default (`address="local"`, never a stale cluster); `RAY_ADDRESS`
  points at a real cluster (Slurm via Ray's sbatch recipe, Kubernetes via KubeRay; docs/cluster.md) — its nodes
  need the same image/venv and their own model weights, nothing of the workspace.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visual_words.errors import UserError
from visual_words.ray_tasks import failure_report, run_on_ray
from visual_words.reuse import trial_key
from visual_words.train.loop import is_done, report_damaged
from visual_words.trained import read_sidecar
from visual_words.trials import Trial, embedding_path, trial_grid


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
    sent_bytes: int = 0  # the files shipped to the tasks (each shared object once), what came back, and the
    returned_bytes: int = 0  # most one task received
    largest_task_bytes: int = 0


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


def batch_files(cfg, trials: list[Trial]) -> tuple[list[Path], list[Path]]:
    """What a training task reads: (the files other batches of its dataset read too — the dataset's manifest, the
    images its trials train on (reuse.train_records) and the model's cached features of them —, the batch's own:
    its trials already trained, which it trains again only to keep the batch's company and does not rewrite)."""
    from visual_words import registry
    from visual_words.data import staging
    from visual_words.data.manifest import manifest_path
    from visual_words.reuse import manifest as read_manifest
    from visual_words.reuse import train_records
    from visual_words.train.targets import loss_kind

    first = trials[0]
    m = read_manifest(cfg, first.dataset)
    kind = loss_kind(registry.model(first.model))
    # A concept the manifest lacks ships nothing: the task then fails on it with the trainer's own message.
    records = {r.file: r for t in trials if t.concept in m.concepts for r in train_records(m, kind, t.concept)}
    images = [m.path_of(r) for r in records.values()]
    shared = [manifest_path(cfg, first.dataset), *images, *staging.feature_entries(cfg, first.model, images)]
    own = [p for t in trials for p in (embedding_path(cfg, t), Path(str(embedding_path(cfg, t)) + ".json"))]
    return shared, own


def run_batch(cfg, trials: list[Trial], *inputs) -> tuple[list[str], Any]:
    """A Ray task: train one batch of trials (one model, one dataset) in a scratch copy of the workspace holding
    only `inputs` (staging.Bundles of batch_files); return the ids it trained and the files it wrote (embeddings +
    sidecars, a Bundle) for the driver to write and log. Needs no shared disk."""
    from visual_words.data.staging import Scratch
    from visual_words.train import train_trials

    with Scratch(cfg, inputs) as ws:
        todo = [t.id for t in trials if not is_done(ws.cfg, t)]  # the rest only complete the batch's composition
        loaded = _cached_model(trials[0].model, cfg.study.device, cfg.train.precision, ws.cfg.root)
        train_trials(ws.cfg, trials, loaded=loaded, progress=False, announce_damage=False)
        return todo, ws.returned(cfg.train.out_dir)


def run_sweep(cfg, trials: list[Trial] | None = None, progress: bool = True) -> SweepSummary:
    """Train every trial of the profile that is not done yet, on Ray; raise SweepError if any batch failed."""
    from visual_words import tracking
    from visual_words.data import staging
    from visual_words.provenance import write_provenance

    started = time.perf_counter()
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
    if cfg.sweep.engine != "ray":
        raise ValueError(f"sweep.engine `{cfg.sweep.engine}` is not supported (ray)")
    shipper = staging.Shipper(cfg)

    def inputs(job):
        shared, own = batch_files(cfg, job[0])
        mine = staging.pack(cfg, own)
        ref = shipper.put(shared)
        summary.sent_bytes += mine.nbytes
        summary.largest_task_bytes = max(summary.largest_task_bytes, shipper.size(shared) + mine.nbytes)
        return cfg, job[0], ref, mine

    def write_and_log(job, result):
        ids, outputs = result
        summary.returned_bytes += outputs.nbytes
        staging.write_back(cfg, outputs)  # the trained files first, then their runs (a file without a run is logged
        log_trials(cfg, [t for t in job[0] if t.id in ids], uri, exp_id)  # by the next sweep, never lost)

    try:
        done_jobs, failed = run_on_ray(
            cfg, run_batch, [(b, [t for t in b if t.id in pending_ids]) for b in batches], inputs, label="sweep",
            weight=lambda job: len(job[1]), describe=lambda job: f"batch of {len(job[1])}: {[t.id for t in job[1]]}",
            bar_desc="trials", bar_unit="trial", progress=progress, on_done=write_and_log)
    finally:
        tracking.close_orphans(uri, exp_id)
        for task in sorted({t.task for t in todo}):
            write_provenance(cfg.path(cfg.train.out_dir) / task, cfg, "train", time.perf_counter() - started)
    summary.sent_bytes += shipper.nbytes
    print(f"[sweep] shipped {summary.sent_bytes / 2**20:.2f} MiB of inputs to {len(batches)} tasks (at most "
          f"{summary.largest_task_bytes / 2**20:.2f} MiB to one); {summary.returned_bytes / 2**20:.2f} MiB of "
          "trained files came back", flush=True)
    summary.trained += sum(len(ids) for _, (ids, _) in done_jobs)
    summary.failed += [([t.id for t in job[1]], err) for job, err in failed]
    if summary.failed:
        raise SweepError(failure_report(summary.failed, "trials", "trials"))
    return summary
