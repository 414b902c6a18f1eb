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


def test_experiments_open_as_a_training_study_with_the_study_view(cfg):
    """Every stage's experiment is a model-training one; train's carries the saved runs-table view; a store made
    before these tags gets them on the next ensure_experiment."""
    import json

    from mlflow.tracking import MlflowClient

    uri, train = tracking.ensure_experiment(cfg, "train")
    _, maps = tracking.ensure_experiment(cfg, "maps")
    c = MlflowClient(uri)
    t, m = c.get_experiment(train).tags, c.get_experiment(maps).tags
    assert t["mlflow.experimentKind"] == m["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.SAVED_VIEW_PREFIX + tracking.STUDY_VIEW not in m  # the study view is the trials' table
    view = json.loads(t["mlflow.sharedViewState." + tracking.STUDY_VIEW])
    assert view["name"] == tracking.STUDY_VIEW_NAME and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    for col in ("tags.`concept`", "tags.`anchor`", "tags.`delta`", "metrics.`final_loss`",
                "metrics.`final_rel_dist`", "metrics.`detection.map`", "metrics.`classification.cls_acc`"):
        assert col in state["selectedColumns"], col
    assert state["columnOrder"][0] == "attributes.`Run Name`" and state["orderByKey"] == "tags.`mlflow.runName`"
    assert "final_rel_dist" in t["mlflow.note.content"]
    # an experiment from before: no tags; the next set-up adds them and keeps its id
    c.delete_experiment_tag(train, "mlflow.experimentKind")
    c.set_experiment_tag(train, "mlflow.sharedViewState." + tracking.STUDY_VIEW, "{}")
    assert tracking.ensure_experiment(cfg, "train")[1] == train
    assert c.get_experiment(train).tags == t
    links = dict(tracking.study_links(cfg, "http://127.0.0.1:5000/"))
    assert links[tracking.experiment_name(cfg, "train")] == (
        f"http://127.0.0.1:5000/#/experiments/{train}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={tracking.STUDY_VIEW}")
    assert links[tracking.experiment_name(cfg, "maps")].endswith(f"/{maps}/runs?workflowType=machine_learning")


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_trial_run_carries_its_curves_and_the_evaluation_pictures(cfg, tmp_path):
    """Training logs the loss and distance curves (PNG); evaluation adds the generated image and the detection
    overlay it kept for the trial to that same run (by the run's id), and the run's description shows them."""
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from visual_words.trials import slug_of

    uri, exp = tracking.ensure_experiment(cfg, "train")
    side, path = _sidecar(tmp_path)
    side["final_rel_dist"] = 0.42
    trial_id = side["trial"]["id"]
    rid = tracking.log_trial_run(uri, exp, side, path, tags={tracking.TRIAL_KEY: "k1", tracking.TRIAL_ID: trial_id})
    c = MlflowClient(uri)
    assert c.get_run(rid).data.metrics["final_rel_dist"] == 0.42
    top = {a.path for a in c.list_artifacts(rid)}
    assert {"loss.png", "distance_to_anchor.png", "embedding"} <= top
    for name in ("loss.png", "distance_to_anchor.png"):
        assert _png_size(c.download_artifacts(rid, name, str(tmp_path / "dl"))) == (500, 320)

    # the evaluation's table and kept pictures, as evaluate/runner.py writes them
    ev = tmp_path / "evaluation"
    (ev / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64), (10, 200, 10)).save(ev / "images" / f"{slug_of(trial_id)}__0.png")
    Image.new("RGB", (256, 192), (230, 20, 20)).save(ev / "images" / f"{slug_of(trial_id)}__det.png")
    Image.new("RGB", (8, 8)).save(ev / "images" / "classification__coco__other__anchor-dog__delta-0.5__0.png")
    rows = [{"trial_id": trial_id, "trained_task": "classification", "eval_task": e,
             "transferred": e != "classification", "metric": m, "value": v, "ap50": a}
            for e, m, v, a in [("classification", "cls_acc", 0.7, None), ("detection", "map", 0.2, 0.4)]]
    pd.DataFrame(rows).to_csv(ev / "evaluation.csv", index=False)
    out = tracking.log_evaluation(cfg, ev / "evaluation.csv")
    assert out == {"trials_logged": 1, "trials_without_run": 0, "pictures_logged": 2}
    run = c.get_run(rid)
    assert run.data.metrics["classification.cls_acc"] == 0.7 and run.data.metrics["detection.ap50"] == 0.4
    assert run.data.metrics["in_domain.cls_acc"] == 0.7
    top = {a.path for a in c.list_artifacts(rid)}
    assert {"generated_0.png", "detection.png", "loss.png", "distance_to_anchor.png"} <= top
    assert _png_size(c.download_artifacts(rid, "detection.png", str(tmp_path / "dl"))) == (256, 192)
    note = run.data.tags["mlflow.note.content"]
    for name in ("generated_0.png", "detection.png", "loss.png", "distance_to_anchor.png"):
        assert f"(get-artifact?path={name}&run_uuid={rid})" in note
    assert note.index("generated_0.png") < note.index("detection.png") < note.index("loss.png")
    assert tracking.log_evaluation(cfg, ev / "evaluation.csv")["pictures_logged"] == 2  # a rerun overwrites
    assert len([a for a in c.list_artifacts(rid) if a.path.endswith(".png")]) == 4
