"""MLflow tracking: where runs go, one experiment per (profile, stage), one run per trial, no run left RUNNING.

Defaults: a SQLite store `mlflow.db` in the workspace (MLflow 3's own default); `MLFLOW_TRACKING_URI` (e.g. an
`mlflow server` on a cluster's head node) or `sweep.tracking_uri` override it. Findings that shape this module
(docs/toolchain.md §7.3): the driver must create the store and the experiment before workers start (racing workers
half-migrate a fresh SQLite DB); per-step logging is batched (`log_batch`); resume is decided by trial files, not
MLflow, and orphan RUNNING runs are closed at the end of a sweep.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from visual_words import run_pictures
from visual_words.errors import DiskFullError, UserError
from visual_words.io import json_digest
from visual_words.trials import slug_of

TRIAL_KEY = "trial_key"  # tag: hash of the trial's full config (what makes two runs "the same trial")
TRIAL_ID = "trial_id"
GIT_COMMIT = "git_commit"
CONFIG_HASH = "config_hash"
NOTE = "mlflow.note.content"  # MLflow's description of a run or an experiment (markdown)

# How MLflow's UI (3.x) opens the study (docs/usage.md, "Browsing the study"): every experiment is tagged a
# model-training one ("Machine learning", not "GenAI apps & agents"), and the train experiment carries a saved view
# of its runs table with the study's columns. 3.17 takes the page kind from its "GenAI | Model training" switch
# (the `workflowType` URL parameter, else the browser's last choice), not from the tag: `vw ui` prints links that
# carry the parameter (study_links).
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"  # MLflow's value for "Machine learning" (genai_development: GenAI)
SAVED_VIEW_PREFIX = "mlflow.sharedViewState."  # + view id: the UI's saved views (its "Views" menu)
STUDY_VIEW = "visual-words-study"
STUDY_VIEW_NAME = "study: task, concept, anchor, δ, loss, distance, scores"
ML_WORKFLOW = "workflowType=machine_learning"
# The runs table's columns in the study view: the trial's coordinates (run tags), what training reached, and each
# task's score (in-domain or transferred; log_evaluation). `final_rel_dist` is ‖v − a‖ / d_nn(a), the word's
# distance to its anchor in units of the anchor's nearest-neighbour distance (δ bounds it for constrained trials).
STUDY_TAG_COLUMNS = ("task", "dataset", "concept", "anchor", "delta")
STUDY_METRIC_COLUMNS = ("final_loss", "final_rel_dist", "generation.gen_acc", "detection.map", "detection.ap50",
                        "classification.cls_acc")


def tracking_uri(cfg) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.sweep.tracking_uri:
        return cfg.sweep.tracking_uri
    return f"sqlite:///{cfg.path('mlflow.db').resolve()}"


def _names_a_full_store(write):
    """A store write that runs out of space says `disk full: <the SQLite file>`: SQLite (through SQLAlchemy and
    MLflow) only says "database or disk is full". The first argument is a tracking URI or a config. A full disk
    met elsewhere (an artifact copied into mlruns/) keeps its own path. A store found damaged mid-write is named
    the same way (`TrackingStoreError`, with the command that rebuilds it)."""

    @functools.wraps(write)
    def wrapper(target, *args, **kwargs):
        try:
            return write(target, *args, **kwargs)
        except Exception as e:
            uri = target if isinstance(target, str) else tracking_uri(target)
            path = store_file(uri)
            if path is not None and _sqlite_full(e):
                raise DiskFullError(path) from e
            damage = _sqlite_damage(e)
            if path is not None and damage:
                raise TrackingStoreError(path, damage, getattr(target, "profile", None)) from e
            raise

    return wrapper


# ---- a damaged store: named, never half-used, rebuilt from the study's files (`vw tracking rebuild`) -----------


class TrackingStoreError(UserError):
    """The SQLite file of the MLflow store cannot be read (damaged, truncated, not a database). MLflow only records
    the study's files, so the message gives the command that rebuilds the store from them."""

    def __init__(self, path: Path, problem: str, profile: str | None = None):
        self.path = Path(path)
        rebuild = "vw tracking rebuild" + (f" --profile {profile}" if profile else "")
        super().__init__(f"{path}: the MLflow store is damaged ({problem}); it only records the study's files, so "
                         f"rebuild it from them with `{rebuild}` (it keeps the damaged file beside it)")


def store_file(uri: str) -> Path | None:
    """The SQLite file of a `sqlite:///` tracking URI; None for a tracking server."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def store_damage(path: Path) -> str | None:
    """What is wrong with the SQLite store at `path` (SQLite's own words), or None when it reads as whole.

    SQLite's quick_check reads every page once (a second for a paper-sized store) without changing the file;
    a truncated or overwritten store fails it or fails to open."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    return None if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:3])


def check_store(cfg) -> None:
    """Refuse, before any work, a damaged SQLite store (one line naming it and the rebuild command). A missing
    store is fine: the run creates it."""
    path = store_file(tracking_uri(cfg))
    if path is None or not path.exists():
        return
    if path.is_dir():
        raise TrackingStoreError(path, "a folder, not an SQLite file", cfg.profile)
    problem = store_damage(path)
    if problem:
        raise TrackingStoreError(path, problem, cfg.profile)


def _sqlite_damage(e: BaseException | None) -> str | None:
    """SQLite's words when (anywhere in `e`'s chain) it found the file damaged or not a database."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlite3.DatabaseError) and any(w in str(e) for w in ("malformed", "not a database")):
            return str(e)
        e = e.__cause__ or e.__context__
    return None


def _sqlite_full(e: BaseException | None) -> bool:
    """True when SQLite itself (anywhere in `e`'s chain) said the database or disk is full."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def experiment_name(cfg, stage: str) -> str:
    return f"{cfg.sweep.experiment_prefix}/{cfg.profile}/{stage}"


def config_hash(obj: Any) -> str:
    return json_digest(obj)[:16]


@_names_a_full_store
def ensure_experiment(cfg, stage: str) -> tuple[str, str]:
    """Create the store (if new) and the stage's experiment in the driver, before any worker touches them, and
    keep its UI set-up (experiment_tags) current. Returns (tracking_uri, experiment_id)."""
    from mlflow.tracking import MlflowClient

    # A client, not mlflow.set_tracking_uri: the fluent call also exports MLFLOW_TRACKING_URI to this process's
    # environment, which would then silently redirect every later store in the process (and its children).
    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    name = experiment_name(cfg, stage)
    tags = experiment_tags(stage)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # Artifacts beside a SQLite store (mlruns/ next to mlflow.db); a tracking server decides for http URIs.
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()
        return uri, client.create_experiment(name, artifact_location=location, tags=tags)
    for key, value in tags.items():  # a store from before these tags (or an older view) is brought up to date
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return uri, exp.experiment_id


def experiment_tags(stage: str) -> dict[str, str]:
    """The tags that make MLflow's UI open a stage's experiment as a model-training study."""
    tags = {EXPERIMENT_KIND: MODEL_TRAINING}
    if stage == "train":
        tags[SAVED_VIEW_PREFIX + STUDY_VIEW] = study_view()
        tags[NOTE] = ("One run per trial, named by its id (task/dataset/concept/anchor=…/delta=…); tags `task`, "
                      "`dataset`, `concept`, `anchor`, `delta` filter it (e.g. `tags.concept = 'cup'`). "
                      f"The saved view **{STUDY_VIEW_NAME}** (Views menu) shows them with `final_loss`, "
                      "`final_rel_dist` (‖v − a‖ / d_nn(a): the distance to the anchor) and each task's score "
                      "(`generation.gen_acc`, `detection.map`, `detection.ap50`, `classification.cls_acc`; "
                      "`in_domain.*` for the task the word was trained in). Each run's pictures (generated image, "
                      "detection boxes, loss and distance curves) are on its page.")
    else:
        tags[NOTE] = f"One run per execution of the `{stage}` stage: its settings, headline numbers and outputs."
    return tags


def study_view() -> str:
    """The train experiment's saved runs-table view, as MLflow 3's UI stores one (an experiment tag holding
    {name, createdAt, updatedAt, state}; `state` is the table's UI state and search facets as JSON)."""
    tag_cols = [f"tags.`{t}`" for t in STUDY_TAG_COLUMNS]
    metric_cols = [f"metrics.`{m}`" for m in STUDY_METRIC_COLUMNS]
    state = {
        "selectedColumns": tag_cols + metric_cols,
        "columnOrder": ["attributes.`Run Name`", *tag_cols, *metric_cols],
        "columnWidths": {"attributes.`Run Name`": 340, **{c: 150 for c in metric_cols}},
        "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True,  # the trial id: grouped by task, dataset, …
    }
    # A fixed date: the tag's value changes only when the view does (ensure_experiment compares it).
    return json.dumps({"name": STUDY_VIEW_NAME, "createdAt": 0, "updatedAt": 0,
                       "state": json.dumps(state, ensure_ascii=False)}, ensure_ascii=False)


def study_links(cfg, base_url: str) -> list[tuple[str, str]]:
    """(experiment name, URL of its runs table) for each of the profile's experiments in the store, opened as a
    model-training study (and, for train, in the study view). Empty when the store cannot be read: the links are
    a convenience, the UI itself still starts."""
    from mlflow.tracking import MlflowClient

    prefix = experiment_name(cfg, "")
    try:
        exps = MlflowClient(tracking_uri(cfg)).search_experiments(filter_string=f"name LIKE '{prefix}%'")
    except Exception:  # a damaged or unreachable store is the server's to report, not the links'
        return []
    out = []
    for e in sorted(exps, key=lambda e: e.name):
        query = ML_WORKFLOW + (f"&viewStateShareKey={STUDY_VIEW}" if SAVED_VIEW_PREFIX + STUDY_VIEW in e.tags
                               else "")
        out.append((e.name, f"{base_url.rstrip('/')}/#/experiments/{e.experiment_id}/runs?{query}"))
    return out


def _flat_params(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_params(v, key + "."))
        else:
            out[key] = str(v)[:500]  # MLflow caps param values
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@_names_a_full_store
def log_trial_run(uri: str, experiment_id: str, sidecar: dict, embedding_file: str | Path | None,
                  tags: dict[str, str], extra_metrics: dict[str, float] | None = None) -> str:
    """One MLflow run for one trained trial, from its sidecar: params, per-step curves, final metrics (the loss and
    `final_rel_dist`, the distance to the anchor), the embedding file, and the curves as PNGs (run_pictures).

    Everything goes in one `log_batch` (one round trip: ~4 ms on SQLite, ~40 ms over HTTP) and the run is ended
    FINISHED in the same call chain, so a kill leaves at most a RUNNING run that `close_orphans` ends.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    trial = sidecar.get("trial", {})
    # The run spans the trial's training (recorded in the sidecar), not the moment it was logged.
    run = client.create_run(experiment_id, run_name=trial.get("id", sidecar.get("token", "trial")),
                            start_time=sidecar.get("started_ms"), tags={k: str(v) for k, v in tags.items()})
    rid = run.info.run_id
    try:
        params = _flat_params({"trial": trial, "model_key": sidecar.get("model_key"),
                               "model_id": sidecar.get("model_id"), "num_vectors": sidecar.get("num_vectors"),
                               "steps": sidecar.get("steps"), "optimizer": sidecar.get("optimizer", {}),
                               "d_nn": sidecar.get("d_nn"), "token_table_hash": sidecar.get("token_table_hash")})
        now = int(time.time() * 1000)
        metrics: list[Metric] = []
        curves = sidecar.get("curves") or {}
        steps = curves.get("step") or []
        for name in ("loss", "rel_dist"):
            for s, v in zip(steps, curves.get(name) or []):
                if _finite(v):
                    metrics.append(Metric(name, float(v), now, int(s)))
        finals = {"final_loss": sidecar.get("final_loss"), "final_rel_dist": sidecar.get("final_rel_dist"),
                  **(extra_metrics or {})}
        for k, v in finals.items():
            if _finite(v):
                metrics.append(Metric(k, float(v), now, 0))
        # log_batch takes at most 1000 metrics per call
        plist = [Param(k, v) for k, v in params.items()]
        with tempfile.TemporaryDirectory(prefix="vw-curves-") as tmp:
            curves_png = run_pictures.write_curves(sidecar, Path(tmp))
            note = run_pictures.run_note(trial.get("id", ""), rid, [p.name for p in curves_png])
            for i in range(0, max(len(metrics), 1), 1000):
                client.log_batch(rid, metrics=metrics[i:i + 1000], params=plist if i == 0 else [],
                                 tags=[RunTag(NOTE, note)] if i == 0 else [])
            if curves_png:  # at the artifacts' top level: the run page lists them without unfolding a folder
                client.log_artifacts(rid, tmp)
        if embedding_file is not None:
            client.log_artifact(rid, str(embedding_file), artifact_path="embedding")
            side = Path(str(embedding_file) + ".json")
            if side.exists():
                client.log_artifact(rid, str(side), artifact_path="embedding")
        client.set_terminated(rid, "FINISHED", end_time=sidecar.get("finished_ms"))
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    return rid


def runs_by_key(uri: str, experiment_id: str) -> dict[str, list]:
    """All runs of an experiment grouped by their trial_key tag."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    out: dict[str, list] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for r in page:
            out.setdefault(r.data.tags.get(TRIAL_KEY, ""), []).append(r)
        token = page.token
        if not token:
            return out


def finished_keys(uri: str, experiment_id: str) -> set[str]:
    return {k for k, runs in runs_by_key(uri, experiment_id).items() if any(r.info.status == "FINISHED" for r in runs)}


@_names_a_full_store
def close_orphans(uri: str, experiment_id: str) -> dict[str, int]:
    """End runs left RUNNING by a killed worker: KILLED if a FINISHED twin exists (same trial_key), else FAILED.

    Also keeps one FINISHED run per trial: a Ray worker lives in its own process group and can outlive a killed
    driver by a second or two, finishing (and logging) the trial it was on while a resumed sweep logs the same
    trial from its files. The later duplicates are deleted (MLflow's soft delete: restorable, hidden in the UI)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    counts = {"killed": 0, "failed": 0, "duplicates": 0}
    for key, runs in runs_by_key(uri, experiment_id).items():
        finished = sorted((r for r in runs if r.info.status == "FINISHED"), key=lambda r: r.info.start_time)
        for r in runs:
            if r.info.status == "RUNNING":
                client.set_terminated(r.info.run_id, "KILLED" if finished else "FAILED")
                counts["killed" if finished else "failed"] += 1
        if key:
            for r in finished[1:]:
                client.delete_run(r.info.run_id)
                counts["duplicates"] += 1
    return counts


@_names_a_full_store
def log_stage_run(cfg, stage: str, metrics: dict[str, float], artifacts: Iterable[str | Path] = (),
                  params: dict | None = None) -> str:
    """One run for a whole stage (maps, analyze, report): its config, headline metrics and output files."""
    from mlflow.tracking import MlflowClient

    from visual_words.provenance import git_commit

    uri, exp_id = ensure_experiment(cfg, stage)
    client = MlflowClient(uri)
    run = client.create_run(exp_id, run_name=f"{stage}-{cfg.profile}",
                            tags={GIT_COMMIT: git_commit(cfg.root), CONFIG_HASH: config_hash(cfg.to_dict())})
    rid = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        flat = _flat_params(params if params is not None else cfg.to_dict())
        client.log_batch(rid, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)],
                         params=[Param(k, v) for k, v in list(flat.items())[:100]])
        for a in artifacts:
            if Path(a).is_file():
                client.log_artifact(rid, str(a))
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    return rid


@_names_a_full_store
def log_evaluation(cfg, table: str | Path) -> dict[str, int]:
    """Put each trial's evaluation (in-domain and transferred) on its training run, and log the evaluate stage.

    Metric names on a trial run: ``<eval_task>.<metric>`` for every evaluated task (e.g. ``detection.map``,
    ``detection.ap50``) and ``in_domain.<metric>`` for the task the token was trained for, so the MLflow runs table
    can sort trials by in-domain or transferred performance side by side. The pictures the evaluation kept for
    the trial (``images/`` beside the table: generated images, detection boxes) become the run's artifacts
    ``generated_<i>.png`` and ``detection.png``, shown with its curves in the run's description.
    """
    import pandas as pd
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    df = pd.read_csv(table)
    pictures = run_pictures.kept_images(Path(table).parent / "images")
    pictures_logged = 0
    uri, exp_id = ensure_experiment(cfg, "train")
    client = MlflowClient(uri)
    runs = {}
    for key, rs in runs_by_key(uri, exp_id).items():
        for r in rs:
            if r.info.status == "FINISHED":
                runs[r.data.tags.get(TRIAL_ID)] = r
    now = int(time.time() * 1000)
    logged = missing = 0
    for trial_id, rows in df.groupby("trial_id"):
        run = runs.get(trial_id)
        if run is None:
            missing += 1
            continue
        metrics = {}
        for _, row in rows.iterrows():
            metrics[f"{row.eval_task}.{row.metric}"] = row.value
            if "ap50" in row and _finite(row.ap50):
                metrics[f"{row.eval_task}.ap50"] = row.ap50
            if not bool(row.transferred):
                metrics[f"in_domain.{row.metric}"] = row.value
        new = [Metric(k, float(v), now, 0) for k, v in metrics.items()
               if _finite(v) and run.data.metrics.get(k) != float(v)]  # idempotent: re-runs add nothing
        if new:
            client.log_batch(run.info.run_id, metrics=new)
        drawn = pictures.get(slug_of(str(trial_id)), {})
        if drawn:
            pictures_logged += _log_pictures(client, run, drawn)
        logged += 1
    # one run for the stage: headline means per (trained task, evaluated task) and the tables as artifacts
    head = {f"{t}_to_{e}.{m}": float(g.value.mean())
            for (t, e, m), g in df.groupby(["trained_task", "eval_task", "metric"])}
    summary = Path(table).with_name("summary.csv")
    log_stage_run(cfg, "evaluate", head, artifacts=[table, summary])
    return {"trials_logged": logged, "trials_without_run": missing, "pictures_logged": pictures_logged}


def _log_pictures(client, run, drawn: dict[str, Path]) -> int:
    """Log the evaluation's pictures of one trial to its training run (by run id; a rerun overwrites them with
    the same names) and rewrite the run's description to show them beside the curves logged at training."""
    rid = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="vw-pictures-") as tmp:
        for name, src in drawn.items():  # copied under the artifact's name, so the run page says what each is
            shutil.copyfile(src, Path(tmp) / name)
        client.log_artifacts(rid, tmp)
    on_run = {a.path for a in client.list_artifacts(rid) if a.path.endswith(".png")}
    client.set_tag(rid, NOTE, run_pictures.run_note(run.data.tags.get(TRIAL_ID, run.info.run_name), rid, on_run))
    return len(drawn)
