"""The sweep on a real local Ray cluster (2 workers) with a real MLflow store: fan-out, failures with trial ids,
resume after SIGKILL, and workers logging to an `mlflow server` over HTTP."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from visual_words.config import load_config
from visual_words.embeddings import read_embedding
from visual_words.reuse import trial_key
from visual_words.train.sweep import SweepError, make_batches, run_sweep
from visual_words.trials import Trial, embedding_path, trial_grid

REPO = Path(__file__).resolve().parents[1]


def _overrides(tmp: Path, **more) -> dict:
    return {"prepare.manifests_dir": str(tmp / "manifests"), "prepare.cache_dir": str(tmp / "cache"),
            "train.out_dir": str(tmp / "embeddings"), "sweep.tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "study.datasets": ["coco"], "sweep.num_workers": 2, **more}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The smoke profile's COCO manifests and feature caches, prepared once into a temp folder."""
    from visual_words.data.prepare import prepare

    tmp = tmp_path_factory.mktemp("sweep")
    prepare(load_config("smoke", REPO / "params.yaml", _overrides(tmp)), progress=False)
    return tmp


def _cfg(tmp, workspace, **more):
    o = _overrides(workspace, **more)
    o["train.out_dir"] = str(tmp / "embeddings")
    o["sweep.tracking_uri"] = more.get("sweep.tracking_uri", f"sqlite:///{tmp / 'mlflow.db'}")
    return load_config("smoke", REPO / "params.yaml", o)


def _runs(cfg, exp_id):
    from mlflow.tracking import MlflowClient

    from visual_words.tracking import tracking_uri

    return MlflowClient(tracking_uri(cfg)).search_runs([exp_id], max_results=1000)


def _classification_trials(cfg):
    return [t for t in trial_grid(cfg) if t.task == "classification"]


def test_batches_group_by_model_and_dataset_in_chunks(smoke_config):
    trials = trial_grid(smoke_config)
    batches = make_batches(smoke_config, trials)
    assert sum(len(b) for b in batches) == len(trials)
    for b in batches:
        assert len({(t.task, t.model, t.dataset) for t in b}) == 1


@pytest.mark.slow
def test_ray_sweep_two_workers_tracks_every_trial_and_resumes(tmp_path, workspace):
    cfg = _cfg(tmp_path, workspace, **{"train.steps": 2, "train.trials_per_batch": 2})
    trials = _classification_trials(cfg)  # 3 concepts × 2 anchors × (δ 0.5, ∞) = 12 trials, 6 batches
    assert len(trials) == 12
    s = run_sweep(cfg, trials, progress=False)
    assert (s.total, s.already_done, s.trained) == (12, 0, 12)
    for t in trials:
        e = read_embedding(embedding_path(cfg, t))
        assert e.meta["trial_key"] == trial_key(cfg, t) and e.tokens[t.token].shape == (2, 32)
    runs = _runs(cfg, s.experiment_id)
    assert len(runs) == 12 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["trial_id"] for r in runs} == {t.id for t in trials}
    assert all(r.data.metrics.get("final_loss") is not None for r in runs)
    again = run_sweep(cfg, trials, progress=False)
    assert (again.already_done, again.trained) == (12, 0)
    assert len(_runs(cfg, s.experiment_id)) == 12  # nothing logged twice


@pytest.mark.slow
def test_failing_trial_reaches_the_user_with_its_id(tmp_path, workspace):
    cfg = _cfg(tmp_path, workspace, **{"train.steps": 2, "train.trials_per_batch": 1})
    good = _classification_trials(cfg)[:1]
    # "umbrella" is a COCO concept, but not among the smoke profile's prepared ones: its data is missing
    bad = Trial("classification", "tiny-clip", "coco", "umbrella", "laptop", 0.5, cfg.study.seed)
    with pytest.raises(SweepError) as err:
        run_sweep(cfg, good + [bad], progress=False)
    assert bad.id in str(err.value) and "1 trials failed" in str(err.value)
    assert embedding_path(cfg, good[0]).exists()  # the good trial finished and is kept
    assert not embedding_path(cfg, bad).exists()


@pytest.mark.slow
def test_sigkilled_sweep_resumes_each_trial_exactly_once(tmp_path, workspace):
    more = {"train.steps": 40, "train.trials_per_batch": 1, "sweep.num_workers": 1}
    cfg = _cfg(tmp_path, workspace, **more)
    trials = _classification_trials(cfg)
    sets = sum((["--set", f"{k}={json.dumps(v)}"] for k, v in _overrides(workspace, **more).items()
                if k not in ("train.out_dir", "sweep.tracking_uri")), [])
    sets += ["--set", f"train.out_dir={tmp_path / 'embeddings'}",
             "--set", f"sweep.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    proc = subprocess.Popen([sys.executable, "-m", "visual_words", "sweep", "--profile", "smoke", "--task",
                             "classification", "--no-progress", "--params", str(REPO / "params.yaml"), *sets],
                            cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out_dir = tmp_path / "embeddings" / "classification"
    t0 = time.time()
    while time.time() - t0 < 240 and len(list(out_dir.glob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray cluster, mid-sweep
    proc.wait()
    # A Ray worker runs in its own process group and notices the dead raylet within ~1-3 s; it may finish (and
    # log) the trial it was on meanwhile. Count what is on disk once it is gone.
    time.sleep(6)
    finished_before = len(list(out_dir.glob("*.safetensors.json")))
    assert 0 < finished_before < len(trials), "the kill should land in the middle of the sweep"
    s = run_sweep(cfg, trials, progress=False)
    assert s.already_done == finished_before and s.trained == len(trials) - finished_before
    for t in trials:
        assert read_embedding(embedding_path(cfg, t)).tokens[t.token].shape == (2, 32)
    runs = _runs(cfg, s.experiment_id)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r.data.tags["trial_key"] for r in runs if r.info.status == "FINISHED"]
    assert sorted(finished) == sorted(trial_key(cfg, t) for t in trials)  # exactly one finished run per trial


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_workers_log_to_an_mlflow_server_over_http(tmp_path, workspace):
    port = _free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts")],
                              cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() - t0 < 90, "mlflow server did not start"
                time.sleep(0.5)
        cfg = _cfg(tmp_path, workspace, **{"train.steps": 2, "train.trials_per_batch": 1,
                                           "sweep.tracking_uri": f"http://127.0.0.1:{port}"})
        trials = _classification_trials(cfg)[:4]
        s = run_sweep(cfg, trials, progress=False)
        assert s.tracking_uri.startswith("http://127.0.0.1"), s.tracking_uri
        assert s.trained == 4
        runs = _runs(cfg, s.experiment_id)
        assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(t.id for t in trials)
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)  # through the server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
