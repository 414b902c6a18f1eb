"""Checks of a finished rehearsal (`make rehearse`: `vw rehearsal-models`, then `vw reproduce --profile rehearsal`).

The rehearsal runs the paper's models at full size (random weights, in the profile's own hub cache at the registry's
ids and revisions) with the paper's settings, on few trials and steps. These tests read what it left: every stage's
outputs, the tokens' shapes and table identity, the six maps between the full-size tables, the evaluation of every
token in every model, and the report as a browser renders it. They are collected only with `pytest --rehearsal`.
The run's own overrides (the GPU script's fp16, batch 8, …) reach them as `VW_REHEARSAL_SET="k=v;k=v"`.
"""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

from visual_words.config import load_config
from visual_words.embeddings import read_embedding
from visual_words.trials import TASKS, embedding_path, trial_grid

pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def cfg(repo_root):
    from visual_words.config import parse_override
    from visual_words.models.lock import use_profile_hub_cache

    sets = [s for s in os.environ.get("VW_REHEARSAL_SET", "").split(";") if s]
    cfg = load_config("rehearsal", repo_root / "params.yaml", dict(parse_override(s) for s in sets))
    use_profile_hub_cache(cfg)
    return cfg


def test_every_stage_left_its_provenance(cfg):
    for section, key in (("prepare", "manifests_dir"), ("maps", "out_dir"), ("evaluate", "out_dir"),
                         ("analyze", "out_dir")):
        folder = cfg.path(getattr(getattr(cfg, section), key))
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov, folder
    assert (cfg.path(cfg.report.out_dir) / "rehearsal" / "index.html").is_file()
    assert (cfg.path(cfg.report.out_dir) / "rehearsal" / "metrics.json").is_file()


def test_tokens_have_the_paper_shapes_and_the_stored_tables_identity(cfg):
    from visual_words.models.loading import resolve_device, resolve_dtype
    from visual_words.models.lock import hub_repo_id
    from visual_words.models.table_identity import identity_of_stored_table
    from visual_words.registry import model

    dtype = resolve_dtype(cfg.train.precision, resolve_device(cfg.study.device))

    trials = trial_grid(cfg)
    assert len(trials) == 3 and {t.task for t in trials} == set(TASKS)
    for t in trials:
        entry = model(t.model)
        emb = read_embedding(embedding_path(cfg, t))
        _, vectors = emb.single()
        assert tuple(vectors.shape) == (cfg.train.num_vectors, entry.text_width), t.id
        assert vectors.isfinite().all()
        meta = emb.meta
        assert meta["weights_dtype"] == str(dtype).replace("torch.", "") and meta["steps"] == cfg.train.steps
        # trained at half precision, identified by the table as stored (fp32 in the checkpoint)
        revision = None if entry.family == "open-clip" else entry.revision
        assert meta["token_table_hash"] == identity_of_stored_table(entry.family, hub_repo_id(entry), revision)
        assert math.isfinite(meta["final_loss"])
        if t.constrained:  # the ε-ball projection held
            assert meta["final_rel_dist"] <= t.delta + 1e-3


def test_six_maps_between_the_full_size_tables(cfg):
    from visual_words.transfer import load_map, map_path

    keys = {t: cfg.study.models[t] for t in TASKS}
    widths = {"generation": 1024, "detection": 512, "classification": 768}
    for src in TASKS:
        for dst in TASKS:
            if src != dst:
                lmap = load_map(map_path(cfg, keys[src], keys[dst]))
                assert (lmap.d_src, lmap.d_dst) == (widths[src], widths[dst])


def test_every_token_was_scored_in_every_model(cfg):
    rows = list(csv.DictReader((cfg.path(cfg.evaluate.out_dir) / "evaluation.csv").open()))
    assert len(rows) == 3 * 3
    by_trial: dict[str, set[str]] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], set()).add(r["eval_task"])
        assert (r["transferred"] == "True") == (r["trained_task"] != r["eval_task"])
        assert 0.0 <= float(r["value"]) <= 1.0
    assert all(tasks == set(TASKS) for tasks in by_trial.values()) and len(by_trial) == 3


def test_the_report_renders_in_a_browser(cfg, chromium, tmp_path):
    from test_report import check_images_load_in_chromium

    check_images_load_in_chromium(cfg.path(cfg.report.out_dir) / "rehearsal", tmp_path, chromium)
