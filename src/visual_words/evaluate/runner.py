"""The evaluate stage: every trained embedding on all three tasks, in-domain and transferred (docs/paper.md §5.2:
the paper's Eq. 3).

For each embedding file ``<train.out_dir>/<task>/<slug>.safetensors`` and each evaluated task,
the token's vectors go into that task's model — as they are when it is the model they were trained in, else through
the transfer map (``v_x = T v_y`` for each vector) — and are scored by ``tasks``. Trials of one (dataset, concept)
and one source model are evaluated together (a ``Unit``: K trials per text forward). Models load one task at a
time. ``run_evaluation`` runs the units in this process; ``evaluate.fanout`` runs the same units on Ray.

Outputs under ``evaluate.out_dir``:
- ``evaluation.csv``: one row per (trial, evaluated task): trial_id, dataset, concept, anchor,
  delta (inf = unconstrained), trained_task, eval_task, transferred, metric (gen_acc | map | cls_acc), value,
  ap50 (detection only), then source_model, eval_model;
- ``summary.csv``: per (dataset, trained task, evaluated task, δ) cell, n, mean and percentile-bootstrap CI;
- ``images/<trial slug>__<i>.png``: the first ``keep_images_per_trial`` generated images of each trial;
- ``images/<trial slug>__det.png``: each trial's best detections drawn on its concept's first held-out image;
- ``rows/<eval task>/<trained task>/<trial slug>.json``: each finished evaluation with its reuse key
  (``reuse.evaluation_key``: embedding file, map file, models, the held-out data the metric reads, the declared
  settings and the metric's code version), so a rerun (or a resumed, killed run) redoes only what changed;
- ``provenance.json``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from visual_words.data.manifest import Manifest, manifest_path, read_manifest
from visual_words.embeddings import EmbeddingFileError, read_embedding
from visual_words.evaluate import tasks as T
from visual_words.io import atomic_path, json_digest, sha256_file, write_json
from visual_words.tasks import task
from visual_words.transfer.estimators import LinearMap
from visual_words.trials import TASKS, Trial

COLUMNS = ["trial_id", "dataset", "concept", "anchor", "delta", "trained_task", "eval_task", "transferred", "metric",
           "value", "ap50", "source_model", "eval_model"]
EVAL_ORDER = ("classification", "detection", "generation")  # cheapest first: a quick look comes back soonest
TABLE, SUMMARY = "evaluation.csv", "summary.csv"


@dataclass
class Item:
    """One trained embedding file."""

    path: Path
    trial: Trial
    source_model: str  # registry key of the model it was trained in
    vectors: torch.Tensor  # [n, d] fp32
    table_hash: str  # token-table hash of that model (sidecar `token_table_hash`)
    file_digest: str  # sha256 of the safetensors file


@dataclass
class EvalResult:
    table: Path
    summary: Path
    n_rows: int
    n_evaluated: int
    n_reused: int
    rows: list[dict] = field(default_factory=list)


def trial_from_dict(d: dict[str, Any]) -> Trial:
    """A Trial back from its sidecar form (``Trial.to_dict``: δ = "inf" when unconstrained)."""
    delta = d["delta"]
    return Trial(task=d["task"], model=d["model"], dataset=d["dataset"], concept=d["concept"], anchor=d["anchor"],
                 delta=math.inf if delta in ("inf", None) else float(delta), root_seed=int(d.get("root_seed", 0)))


def read_item(path: Path) -> Item:
    """A trained embedding file with its trial (our sidecar); a clear error for files without one."""
    emb = read_embedding(path)
    _, vectors = emb.single()
    meta = emb.meta
    missing = [k for k in ("trial", "model_key", "token_table_hash") if k not in meta]
    if missing:
        raise EmbeddingFileError(f"{path}: the sidecar lacks {', '.join(missing)}; the evaluate stage reads trained "
                                 "embedding files (train stage)")
    try:
        trial = trial_from_dict(meta["trial"])
    except (KeyError, TypeError, ValueError) as e:
        raise EmbeddingFileError(f"{path}: sidecar `trial` is incomplete ({e})") from None
    return Item(path, trial, meta["model_key"], vectors, meta["token_table_hash"], sha256_file(path))


def embedding_files(cfg) -> list[Path]:
    root = cfg.path(cfg.train.out_dir)
    return sorted(p for task in TASKS for p in (root / task).glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------------------------


class Evaluator:
    """Holds the models, maps, manifests and the feature cache of one evaluation run."""

    def __init__(self, cfg, progress: bool = True):
        from visual_words.data.features import FeatureCache

        self.cfg = cfg
        self.progress = progress
        self.features = FeatureCache(cfg, progress=progress)
        self._manifests: dict[str, Manifest] = {}
        self._maps: dict[tuple[str, str], tuple[LinearMap, str]] = {}
        self._loaded: dict[str, Any] = {}

    # -- inputs ---------------------------------------------------------------------------------------------

    def manifest(self, dataset: str) -> Manifest:
        if dataset not in self._manifests:
            path = manifest_path(self.cfg, dataset)
            self._manifests[dataset] = read_manifest(path)
        return self._manifests[dataset]

    def load(self, key: str):
        if key not in self._loaded:
            from visual_words.models.loading import load_model

            self._loaded[key] = load_model(key, device=self.cfg.study.device, precision=self.cfg.evaluate.precision,
                                           root=self.cfg.root)
        return self._loaded[key]

    def release(self, keep: Sequence[str] = ()) -> None:
        """Drop loaded models (one task's models at a time: SD-2.1 alone is GBs)."""
        for k in [k for k in self._loaded if k not in keep]:
            del self._loaded[k]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def transfer_map(self, src_key: str, src_table_hash: str, dst_key: str) -> tuple[LinearMap, str]:
        """The map src → dst and its file digest. Study models need the `maps` stage's file; a model outside the
        study gets its map fitted now (and saved for next time)."""
        from visual_words.transfer.files import check_tables, load_map, map_path
        from visual_words.transfer.maps import map_between, study_model_keys

        if (src_key, dst_key) not in self._maps:
            path = map_path(self.cfg, src_key, dst_key)
            if not path.is_file() and src_key not in study_model_keys(self.cfg):
                map_between(self.cfg, self.load(src_key), self.load(dst_key))
            lmap = load_map(path)  # FileNotFoundError naming `vw maps` when the stage has not run
            check_tables(lmap, src_table_hash, None, str(path))
            self._maps[(src_key, dst_key)] = (lmap, sha256_file(path))
        return self._maps[(src_key, dst_key)]

    def check_tables(self, dst_key: str, items: Sequence[Item]) -> None:
        """Before scoring in model ``dst_key``: the maps into it were fitted on its current table, and tokens
        evaluated in-domain were trained on it (a changed checkpoint means stale maps / tokens)."""
        from visual_words.models.adapters import adapter_for
        from visual_words.transfer.files import check_tables

        # The identity is that of the table as stored (models/table_identity.py), so training at fp16 and
        # evaluating at fp32 agree; a different identity means another checkpoint.
        have = adapter_for(self.load(dst_key)).table_identity
        for (src, dst), (lmap, _) in self._maps.items():
            if dst == dst_key:
                check_tables(lmap, None, have, f"map {src}→{dst}")
        for it in items:
            if it.source_model == dst_key and it.table_hash != have:
                raise EmbeddingFileError(f"{it.path}: trained on a token table with hash {it.table_hash}, but model "
                                         f"`{dst_key}` now has {have} (the checkpoint changed); retrain or restore it")

    # -- vectors into the evaluated model ---------------------------------------------------------------------

    def vectors_for(self, item: Item, dst_key: str) -> tuple[torch.Tensor, bool, str | None]:
        """(vectors [n, d_dst], transferred, map digest)."""
        if item.source_model == dst_key:
            return item.vectors, False, None
        lmap, digest = self.transfer_map(item.source_model, item.table_hash, dst_key)
        if item.vectors.shape[-1] != lmap.d_src:
            raise EmbeddingFileError(f"{item.path}: vectors have width {item.vectors.shape[-1]}, but the map "
                                     f"{item.source_model}→{dst_key} takes width {lmap.d_src}")
        return lmap.apply(item.vectors), True, digest

    def key(self, item: Item, eval_task: str, dst_key: str, map_digest: str | None) -> str:
        """What an evaluation depends on (reuse.evaluation_key); a stored row with another key is recomputed."""
        from visual_words.reuse import evaluation_key

        return evaluation_key(self.cfg, item.trial, eval_task, dst_key, item.file_digest, map_digest)

    # -- one group of trials ------------------------------------------------------------------------------------

    def evaluate_group(self, eval_task: str, dataset: str, concept: str, vectors: torch.Tensor,
                       seeds: Sequence[int], keep: Sequence[Path | None] = ()) -> list[dict]:
        """Score K trials' vectors ``[K, n, d]`` (already in the evaluated model's space) on one task."""
        from visual_words.models.adapters import adapter_for

        models = self.cfg.study.models
        task_model = self.load(models[eval_task])
        adapter = adapter_for(task_model)
        if vectors.shape[-1] != adapter.width:
            raise ValueError(f"vectors have width {vectors.shape[-1]}; model `{models[eval_task]}` has width "
                             f"{adapter.width}")
        if eval_task == "classification":
            return T.classification(self.cfg, adapter, self.features, self.manifest(dataset), concept, vectors)
        if eval_task == "detection":
            return T.detection(self.cfg, adapter, self.features, self.manifest(dataset), concept, vectors, keep)
        if eval_task == "generation":
            evaluator = adapter_for(self.load(models["evaluator"]))
            return T.generation(self.cfg, adapter, evaluator, dataset, concept, vectors, seeds, keep)
        raise ValueError(f"unknown task `{eval_task}` (known: {', '.join(TASKS)})")


# ---------------------------------------------------------------------------------------------------------------


def _row(item: Item, eval_task: str, transferred: bool, result: dict, eval_model: str) -> dict:
    t = item.trial
    ap50 = result.get("ap50")
    return {"trial_id": t.id, "dataset": t.dataset, "concept": t.concept, "anchor": t.anchor, "delta": t.delta,
            "trained_task": t.task, "eval_task": eval_task, "transferred": transferred,
            "metric": task(eval_task).metric,
            "value": result["value"], "ap50": "" if ap50 is None else ap50, "source_model": item.source_model,
            "eval_model": eval_model}


def _row_path(out_dir: Path, item: Item, eval_task: str) -> Path:
    return out_dir / "rows" / eval_task / item.trial.task / f"{item.trial.slug}.json"


def _stored(path: Path, key: str) -> dict | None:
    """The stored row when it was made with this key and is intact (its recorded digest matches); a damaged row is
    reported and evaluated again, never used."""
    try:
        d = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(d, dict) or d.get("key") != key:
        return None
    row = d.get("row")
    if "row_sha256" in d and (not isinstance(row, dict) or json_digest(row) != d["row_sha256"]):
        import sys

        print(f"[evaluate] {path}: damaged (its row does not match the digest recorded with it); evaluating it "
              "again", file=sys.stderr, flush=True)
        return None
    return row


@dataclass
class Unit:
    """One batch of work: up to ``evaluate.trials_per_batch`` trials of one (dataset, concept), trained in one source
    model, scored on one evaluated task: one text forward (detection, classification) or one run of generation
    batches. The unit the in-process loop and the Ray fan-out (evaluate.fanout) both execute."""

    eval_task: str
    dst_key: str  # the evaluated model
    source_model: str
    dataset: str
    concept: str
    members: list[tuple[Item, torch.Tensor, bool, str]]  # (item, vectors in the evaluated model, transferred, key)

    @property
    def trial_ids(self) -> list[str]:
        return [m[0].trial.id for m in self.members]


def plan(cfg, ev: Evaluator, tasks: Sequence[str], items: Sequence[Item]) -> tuple[list[dict], list[Unit]]:
    """(rows stored by an earlier run with the current key, the units still to evaluate), in EVAL_ORDER."""
    out_dir = cfg.path(cfg.evaluate.out_dir)
    stored_rows: list[dict] = []
    units: list[Unit] = []
    size = max(1, cfg.evaluate.trials_per_batch)
    for eval_task in tasks:
        dst_key = cfg.study.models[eval_task]
        pending: dict[tuple, list] = defaultdict(list)
        for item in items:
            if eval_task != "generation":
                ev.manifest(item.trial.dataset)
            vecs, transferred, digest = ev.vectors_for(item, dst_key)
            key = ev.key(item, eval_task, dst_key, digest)
            stored = _stored(_row_path(out_dir, item, eval_task), key)
            if stored is not None:
                stored_rows.append(stored)
            else:
                group = (item.trial.dataset, item.trial.concept, item.source_model, tuple(vecs.shape))
                pending[group].append((item, vecs, transferred, key))
        for (dataset, concept, source, _), members in sorted(pending.items()):
            units += [Unit(eval_task, dst_key, source, dataset, concept, members[i : i + size])
                      for i in range(0, len(members), size)]
    return stored_rows, units


def run_unit(cfg, ev: Evaluator, unit: Unit) -> list[dict]:
    """Score one unit and write each trial's row (with its key) under rows/, so a rerun reuses it."""
    out_dir = cfg.path(cfg.evaluate.out_dir)
    chunk = unit.members
    vectors = torch.stack([v for _, v, _, _ in chunk])
    seeds = [it.trial.seed for it, _, _, _ in chunk]
    keep = [out_dir / "images" / it.trial.slug for it, _, _, _ in chunk] \
        if cfg.evaluate.keep_images_per_trial > 0 else []
    results = ev.evaluate_group(unit.eval_task, unit.dataset, unit.concept, vectors, seeds, keep)
    rows = []
    for (item, _, transferred, key), res in zip(chunk, results):
        row = _row(item, unit.eval_task, transferred, res, unit.dst_key)
        write_json(_row_path(out_dir, item, unit.eval_task), {"key": key, "row": row, "row_sha256": json_digest(row)})
        rows.append(row)
    return rows


def finish(cfg, rows: Sequence[dict], n_new: int, n_reused: int, elapsed_s: float) -> EvalResult:
    """evaluation.csv, summary.csv and provenance.json from all rows (stored + new)."""
    from visual_words.provenance import record_output, write_provenance

    out_dir = cfg.path(cfg.evaluate.out_dir)
    table = write_table(out_dir / TABLE, rows)
    record_output(table)  # this run's table is the trusted one now (the summary below reads it back)
    summary = write_summary(cfg, table)
    write_provenance(out_dir, cfg, "evaluate", elapsed_s=round(elapsed_s, 2), files=[table, summary])
    return EvalResult(table, summary, len(rows), n_new, n_reused, list(rows))


def read_items(cfg, limit: int | None = None) -> list[Item]:
    files = embedding_files(cfg)
    if not files:
        raise FileNotFoundError(f"{cfg.path(cfg.train.out_dir)}: no trained embedding files "
                                "(<task>/<trial>.safetensors); run the train stage first")
    return [read_item(p) for p in files[:limit]]


def run_evaluation(cfg, tasks: Sequence[str] | None = None, limit: int | None = None, progress: bool = True,
                   items: Sequence[Item] | None = None) -> EvalResult:
    """Evaluate the trained embeddings (all files under train.out_dir, or ``items``) on ``tasks`` (default all
    three) in this process and write evaluation.csv, summary.csv and provenance.json; finished evaluations are
    reused. ``evaluate.fanout.run_evaluation_ray`` runs the same units on Ray."""
    t0 = time.time()
    from tqdm.auto import tqdm

    tasks = [t for t in EVAL_ORDER if t in (tasks or TASKS)]
    items = read_items(cfg, limit) if items is None else items
    ev = Evaluator(cfg, progress)
    rows, units = plan(cfg, ev, tasks, items)
    n_reused, n_new = len(rows), 0
    for eval_task in tasks:
        todo = [u for u in units if u.eval_task == eval_task]
        if not todo:
            continue
        ev.check_tables(todo[0].dst_key, [m[0] for u in todo for m in u.members])
        for unit in tqdm(todo, desc=f"evaluate {eval_task}", unit="batch", disable=not progress, dynamic_ncols=True):
            new = run_unit(cfg, ev, unit)
            rows += new
            n_new += len(new)
        ev.release()
    return finish(cfg, rows, n_new, n_reused, time.time() - t0)


def _sort_key(r: dict) -> tuple:
    return (r["dataset"], r["trained_task"], r["eval_task"], r["concept"], r["anchor"], float(r["delta"]),
            r["trial_id"])


def write_table(path: Path, rows: Sequence[dict]) -> Path:
    """evaluation.csv, one row per (trial, evaluated task), sorted; written atomically."""
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in sorted(rows, key=_sort_key):
            w.writerow({k: ("inf" if k == "delta" and math.isinf(float(r[k])) else r[k]) for k in COLUMNS})
    return path


def read_table(path: str | Path):
    """evaluation.csv as a pandas DataFrame (δ = inf for unconstrained; transferred as bool)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no evaluation table (run `vw evaluate run`)")
    from visual_words.provenance import verify_output

    df = pd.read_csv(verify_output(path))
    missing = [c for c in COLUMNS[:11] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not an evaluation table (missing columns {', '.join(missing)})")
    df["delta"] = df["delta"].astype(float)
    df["transferred"] = df["transferred"].astype(str).str.lower().eq("true")
    return df


def write_summary(cfg, table: str | Path | None = None) -> Path:
    """summary.csv beside the table: per-cell n, mean and the bootstrap CI (evaluate.bootstrap_*, ci_level)."""
    from visual_words.evaluate.stats import summarize

    table = Path(table) if table else cfg.path(cfg.evaluate.out_dir) / TABLE
    ec = cfg.evaluate
    summary = summarize(read_table(table), ec.bootstrap_resamples, ec.bootstrap_seed, ec.ci_level)
    path = table.parent / SUMMARY
    with atomic_path(path, suffix=".csv") as tmp:
        summary.to_csv(tmp, index=False)
    return path
