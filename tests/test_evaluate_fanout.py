"""The evaluate stage on a real 2-worker local Ray cluster gives the same evaluation.csv as the in-process path,
reports a failing batch with its trial ids while keeping every finished row, and resumes from those rows."""

from __future__ import annotations

import dataclasses

import pytest

from test_evaluate_runner import DATASET, _draw_manifest, _write_trials
from visual_words.config import load_config
from visual_words.data.manifest import manifest_path, write_manifest
from visual_words.evaluate.fanout import EvaluationError, run_evaluation_ray
from visual_words.evaluate.runner import read_items, run_evaluation
from visual_words.registry import study_concepts


def _cfg(repo_root, tmp, out: str):
    return load_config("smoke", repo_root / "params.yaml", {
        "prepare.manifests_dir": str(tmp / "manifests"), "prepare.cache_dir": str(tmp / "cache"),
        "train.out_dir": str(tmp / "embeddings"), "maps.out_dir": str(tmp / "maps"),
        "evaluate.out_dir": str(tmp / out), "maps.holdout_fraction": 0.0, "evaluate.inference_steps": 2,
        "study.datasets": [DATASET], "sweep.num_workers": 2, "evaluate.engine": "ray"})


@pytest.mark.slow
def test_ray_evaluation_equals_in_process_and_resumes_after_a_failure(repo_root, tmp_path, tiny_sd, tiny_owl,
                                                                      tiny_clip):
    from visual_words.transfer.stage import run as build_maps

    local = _cfg(repo_root, tmp_path, "eval-local")
    write_manifest(manifest_path(local, DATASET),
                   _draw_manifest(tmp_path / "images", [c.name for c in study_concepts(local, DATASET)]))
    trials = _write_trials(local, {"generation": tiny_sd, "detection": tiny_owl, "classification": tiny_clip})
    build_maps(local, progress=False)
    expected = run_evaluation(local, progress=False)
    assert expected.n_rows == 3 * len(trials) == 18

    ray_cfg = _cfg(repo_root, tmp_path, "eval-ray")
    items = read_items(ray_cfg)
    # A token whose concept is not among the dataset's evaluated concepts: every task's metric refuses it.
    bad = dataclasses.replace(items[0], trial=dataclasses.replace(items[0].trial, concept="umbrella"))
    with pytest.raises(EvaluationError) as err:
        run_evaluation_ray(ray_cfg, items=items + [bad], progress=False)
    assert "3 trial evaluations failed" in str(err.value) and bad.trial.id in str(err.value)
    assert "umbrella" in str(err.value)
    rows = sorted((ray_cfg.path(ray_cfg.evaluate.out_dir) / "rows").rglob("*.json"))
    assert len(rows) == 18  # every good trial's row was written by the workers and is kept

    resumed = run_evaluation_ray(ray_cfg, progress=False)  # nothing left to run: no cluster is started
    assert (resumed.n_reused, resumed.n_evaluated) == (18, 0)
    assert resumed.table.read_text() == expected.table.read_text()

    fresh = _cfg(repo_root, tmp_path, "eval-ray-2")  # and a clean run on the cluster, start to end
    again = run_evaluation_ray(fresh, progress=False)
    assert (again.n_reused, again.n_evaluated) == (0, 18)
    assert again.table.read_text() == expected.table.read_text()
    assert again.summary.read_text() == expected.summary.read_text()
