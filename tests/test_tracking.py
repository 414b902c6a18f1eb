"""MLflow tracking on a real SQLite store: one run per trial from its sidecar, orphans closed."""

import math

import pytest

from visual_words import tracking
from visual_words.embeddings import write_embedding


@pytest.fixture
def cfg(tmp_path, smoke_config):
    import dataclasses

    return dataclasses.replace(smoke_config, root=str(tmp_path))


def _sidecar(tmp_path):
    import torch

    meta = {"trial": {"id": "classification/coco/cup/anchor=dog/delta=0.5"}, "model_key": "tiny-clip",
            "steps": 4, "final_loss": -0.3, "d_nn": 0.7, "started_ms": 1_700_000_000_000,
            "finished_ms": 1_700_000_042_000,
            "curves": {"step": [0, 2, 4], "loss": [0.1, -0.1, -0.3], "rel_dist": [0.0, 0.2, math.nan]}}
    p = write_embedding(tmp_path / "e.safetensors", "<cup>", torch.zeros(2, 32), meta)
    import json

    return json.loads((tmp_path / "e.safetensors.json").read_text()), p


def test_trial_run_has_params_curves_and_artifact(cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    uri, exp = tracking.ensure_experiment(cfg, "train")
    assert uri.startswith("sqlite:///") and uri.endswith("mlflow.db")
    assert tracking.ensure_experiment(cfg, "train")[1] == exp  # idempotent
    side, path = _sidecar(tmp_path)
    rid = tracking.log_trial_run(uri, exp, side, path, tags={tracking.TRIAL_KEY: "k1"})
    c = MlflowClient(uri)
    run = c.get_run(rid)
    assert run.info.status == "FINISHED"
    assert run.info.end_time - run.info.start_time == 42_000  # the run spans the training, not the logging
    assert run.data.params["trial.id"] == side["trial"]["id"]
    assert [m.value for m in c.get_metric_history(rid, "loss")] == [0.1, -0.1, -0.3]
    assert len(c.get_metric_history(rid, "rel_dist")) == 2  # the NaN point is not logged
    assert run.data.metrics["final_loss"] == -0.3
    arts = [a.path for a in c.list_artifacts(rid, "embedding")]
    assert "embedding/e.safetensors" in arts and "embedding/e.safetensors.json" in arts
    assert tracking.finished_keys(uri, exp) == {"k1"}


def test_orphans_are_closed(cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    uri, exp = tracking.ensure_experiment(cfg, "train")
    c = MlflowClient(uri)
    side, path = _sidecar(tmp_path)
    tracking.log_trial_run(uri, exp, side, path, tags={tracking.TRIAL_KEY: "twin"})
    orphan_twin = c.create_run(exp, tags={tracking.TRIAL_KEY: "twin"}).info.run_id
    orphan_alone = c.create_run(exp, tags={tracking.TRIAL_KEY: "alone"}).info.run_id
    late = side | {"started_ms": side["started_ms"] + 5_000, "finished_ms": side["finished_ms"] + 5_000}
    dup = tracking.log_trial_run(uri, exp, late, path, tags={tracking.TRIAL_KEY: "twin"})  # a late orphan worker
    assert tracking.close_orphans(uri, exp) == {"killed": 1, "failed": 1, "duplicates": 1}
    assert c.get_run(dup).info.lifecycle_stage == "deleted"
    assert tracking.finished_keys(uri, exp) == {"twin"}
    assert c.get_run(orphan_twin).info.status == "KILLED"
    assert c.get_run(orphan_alone).info.status == "FAILED"
    assert not [r for r in c.search_runs([exp]) if r.info.status == "RUNNING"]
