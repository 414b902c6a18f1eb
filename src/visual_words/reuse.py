"""Reuse keys: when a finished output may be kept (DESIGN D13, docs/reuse.md).

An output is reused only when its key is unchanged. Every key is built here, the same way, from three things:

1. **declared settings** — the config fields whose schema metadata names the output (`config.affects`); nothing
   else of params.yaml enters, so a log-only setting never retrains and a forgotten field cannot be missed
   silently (a test requires every field to declare);
2. **content digests of what the output read** — the manifest records a trial trained on (image bytes, and only
   where the task reads them: boxes and labels), the held-out records an evaluation scored, the map file, the
   embedding file, the model's identity;
3. **code versions** — `code_versions.yaml` gives each result-defining piece of code a version and the outputs it
   defines (visual_words.code_versions, one layer down: the feature cache in data/ reads it too).

Keys: `trial_key` (trained tokens, `train.<task>`), `checkpoint_key` (trial-batch checkpoints), `evaluation_key`
(evaluation rows, `evaluate.<task>`), `map_key` (transfer maps); the feature cache's is
`code_versions.feature_version`.

Layer: reuse and code versions, above data (it reads manifests) and below train, transfer and evaluate, which ask it
for their keys.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping, Sequence

from visual_words.code_versions import code_versions
from visual_words.config import OUTPUTS, SECTIONS
from visual_words.io import json_digest

# ---- declared settings -------------------------------------------------------------------------------------------


def declarations() -> dict[str, dict[str, Any]]:
    """`section.field` -> {"invalidates": (outputs…), "via": str} for every field of the schema."""
    out = {}
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out[f"{name}.{f.name}"] = {"invalidates": tuple(f.metadata.get("invalidates", ())),
                                       "via": f.metadata.get("via", ""), "declared": "invalidates" in f.metadata}
    return out


def declared_settings(cfg, output: str) -> dict[str, Any]:
    """The values of the fields declared to invalidate `output` (`section.field` -> value)."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output `{output}` (known: {', '.join(OUTPUTS)})")
    out = {}
    for key, d in declarations().items():
        if output in d["invalidates"]:
            section, name = key.split(".", 1)
            out[key] = getattr(getattr(cfg, section), name)
    return out


# ---- content digests ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _manifest_cached(version: tuple):
    from visual_words.data.manifest import read_manifest

    return read_manifest(version[0])


def _manifest_version(cfg, dataset: str) -> tuple:
    """(path, size, mtime) of the dataset's manifest: what the digests below are remembered by."""
    from visual_words.data.manifest import manifest_path

    path = manifest_path(cfg, dataset)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: manifest not found (run `vw data prepare` / the prepare stage)") from None
    return str(path), st.st_size, st.st_mtime_ns


def manifest(cfg, dataset: str):
    """The dataset's manifest (read once per file version); a clear error when the prepare stage has not run."""
    return _manifest_cached(_manifest_version(cfg, dataset))


# A sweep asks for the key of every trial (6,000 in the paper grid), an evaluation for every row: the digest of one
# (manifest version, task, concept) is computed once per process. (Image bytes are hashed once per file version by
# io.content_hash.)
@functools.lru_cache(maxsize=4096)
def _train_reads_cached(version: tuple, task: str, concept: str) -> str:
    return train_reads(_manifest_cached(version), task, concept)


@functools.lru_cache(maxsize=4096)
def _eval_reads_cached(version: tuple | None, task: str, dataset: str, concept: str, labels: tuple) -> str:
    reads: dict[str, Any] = {"labels": [list(x) for x in labels], "target": concept}
    if task == "classification":
        m = _manifest_cached(version)
        reads["images"] = [_image(m, r) for r in m.concepts[concept].eval] if concept in m.concepts else None
    elif task == "detection":
        m = _manifest_cached(version)
        seen, images = set(), []
        for name, _ in labels:
            for r in (m.concepts[name].eval if name in m.concepts else []):
                if r.file not in seen:
                    seen.add(r.file)
                    images.append(_image(m, r) | {"boxes": _boxes(r, concept, crowd=True)})
        reads["images"] = images
    return json_digest({"dataset": dataset, "reads": reads})


def _image(m, rec) -> dict[str, Any]:
    from visual_words.io import content_hash

    return {"file": rec.file, "sha256": content_hash(m.path_of(rec)), "size": [rec.width, rec.height]}


def _boxes(rec, concept: str, crowd: bool) -> list:
    """The concept's boxes in a record; with `crowd`, its crowd regions too (scoring reads them, training not)."""
    out = [[list(b.bbox), False] for b in rec.boxes_of(concept)]
    return out + ([[list(b.bbox), True] for b in rec.crowd_boxes_of(concept)] if crowd else [])


def train_reads(m, task: str, concept: str) -> str:
    """Digest of what a `task` trial of `concept` trains on (train.targets): generation the concept's training
    images; detection those images and the concept's boxes in them; classification the concept's training images
    (positives) and every other concept's (negatives)."""
    if concept not in m.concepts:
        raise ValueError(f"manifest {m.dataset}: no concept `{concept}` (it has: {', '.join(m.concepts)})")
    train = m.concepts[concept].train
    if task == "generation":
        reads: Any = [_image(m, r) for r in train]
    elif task == "detection":
        reads = [_image(m, r) | {"boxes": _boxes(r, concept, crowd=False)} for r in train]
    elif task == "classification":
        reads = {"concepts": {c: [_image(m, r) for r in s.train] for c, s in m.concepts.items()}, "target": concept}
    else:
        raise ValueError(f"unknown task `{task}`")
    return json_digest({"dataset": m.dataset, "reads": reads})


def eval_reads(cfg, task: str, dataset: str, concept: str) -> str:
    """Digest of what an evaluation on `task` reads besides the token (evaluate.tasks): every metric chooses among
    the dataset's label concepts; classification scores the target's held-out images, detection the held-out images
    of all label concepts with the target's boxes (crowd regions included); generation reads no image."""
    from visual_words.registry import study_concepts

    labels = tuple((c.name, c.prompt_name) for c in study_concepts(cfg, dataset))
    version = None if task == "generation" else _manifest_version(cfg, dataset)
    return _eval_reads_cached(version, task, dataset, concept, labels)


def model_identity(key: str) -> dict[str, Any]:
    """A model as the registry pins it (hub id and revision; a tiny model's build recipe). The token table's own
    identity (`token_table_hash`) is checked against each trained file once the model is loaded."""
    from visual_words import registry

    e = registry.model(key)
    return {"key": e.key, "id": e.id, "revision": e.revision, "tiny": e.tiny}


# ---- the keys ----------------------------------------------------------------------------------------------------


def _key(output: str, cfg, parts: dict[str, Any], versions: Mapping | None, length: int = 16) -> str:
    spec = {"output": output, "settings": declared_settings(cfg, output), "code": code_versions(output, versions),
            **parts}
    return json_digest(spec)[:length]


def trial_key(cfg, trial, data_digest: str | None = None, versions: Mapping | None = None) -> str:
    """What determines a trained token: the trial (model, dataset, concept, anchor, δ, seed), the model's identity,
    the settings declared for `train.<task>`, the digest of the records it trains on (read from the dataset's
    manifest unless `data_digest` is given) and the versions of the code that defines its loss."""
    if data_digest is None:
        data_digest = _train_reads_cached(_manifest_version(cfg, trial.dataset), trial.task, trial.concept)
    parts = {"trial": trial.to_dict(), "model": model_identity(trial.model), "data": data_digest}
    return _key(f"train.{trial.task}", cfg, parts, versions)


def checkpoint_key(trial_keys: Sequence[str], table_hash: str, data_digests: Sequence[str]) -> str:
    """A trial batch's checkpoint: its trials' keys in batch order (Adam is element-wise, but a checkpoint holds
    the whole batch), the token table it was trained on and the tensors its losses read."""
    return json_digest({"trials": list(trial_keys), "table": table_hash, "data": list(data_digests)})[:20]


def evaluation_key(cfg, trial, eval_task: str, eval_model: str, embedding_digest: str, map_digest: str | None,
                   versions: Mapping | None = None) -> str:
    """What determines one evaluation row: the embedding file (so a retrained token is re-evaluated), the map it
    was moved through, the evaluated model's identity, the settings declared for `evaluate.<task>`, the digest of
    the held-out data and labels the metric reads, and the versions of the metric's code."""
    parts = {"embedding": embedding_digest, "map": map_digest, "model": model_identity(eval_model),
             "data": eval_reads(cfg, eval_task, trial.dataset, trial.concept)}
    if eval_task == "generation":
        parts["evaluator"] = model_identity(cfg.study.models["evaluator"])
    return _key(f"evaluate.{eval_task}", cfg, parts, versions, length=64)


def map_key(cfg, src_table_hash: str, dst_table_hash: str, versions: Mapping | None = None) -> str:
    """What determines a transfer map: the two token tables, the settings declared for `maps` and the estimators'
    code version. (Evaluation rows hash the map file itself, so a refit that gives the same numbers re-evaluates
    nothing.)"""
    return _key("maps", cfg, {"src_table": src_table_hash, "dst_table": dst_table_hash}, versions)
