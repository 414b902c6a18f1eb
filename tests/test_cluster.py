"""The study's train and evaluate stages on a two-node Ray cluster whose worker nodes share no disk with the head
(tests/two_nodes.py), against a single-node run of the same workspace: every output byte for byte, the MLflow runs,
Ray's own records of where each task ran, and a worker node whose raylet is killed mid-training.

Collected only with --cluster (`make cluster-test`, called by .ci/run). Needs root for the worker node's mount
namespace; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from two_nodes import TwoNodes, can_hide_folders
from visual_words.config import load_config
from visual_words.trials import trial_grid

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# The smoke profile on one of its two datasets: every stage and every task model runs, in a few minutes on 2 cores.
SETTINGS = ["--profile", "smoke", "--set", "study.datasets=[coco]"]
VOLATILE_SIDECAR_KEYS = ("started_ms", "finished_ms")  # the wall-clock span of a trial's training
OUR_TAGS = ("trial_key", "trial_id", "config_hash", "git_commit", "task", "dataset", "concept", "anchor", "delta")


def _vw(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 900) -> str:
    out = subprocess.run([sys.executable, "-m", "visual_words", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, \
        f"vw {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _prepared_workspace(path: Path) -> Path:
    """A study workspace of its own (params.yaml, the box file), prepared and with its maps fitted."""
    (path / "data").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", path / "params.yaml")
    shutil.copy(REPO / "data" / "dreambooth_boxes.json", path / "data" / "dreambooth_boxes.json")
    _vw(["data", "prepare", *SETTINGS], path)
    _vw(["maps", *SETTINGS, "--quiet"], path)
    return path


def _outputs(cfg) -> dict[str, bytes]:
    """Every file the train and evaluate stages wrote, by path relative to the workspace; not the `*.times.json`
    wall-clock records beside them (DVC ignores them too: two identical runs differ only there)."""
    root = Path(cfg.root)
    out = {}
    for folder in (cfg.path(cfg.train.out_dir), cfg.path(cfg.evaluate.out_dir)):
        for p in sorted(folder.rglob("*")):
            if p.is_file() and ".checkpoints" not in p.parts and not p.name.endswith(".times.json"):
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def _comparable(name: str, data: bytes):
    """A file's content as compared: bytes, except the wall-clock fields of trial sidecars and provenance.json
    (it records the stage's wall time and host; its config and stage are compared)."""
    if name.endswith("provenance.json"):
        d = json.loads(data)
        return {"stage": d.get("stage"), "config": d.get("config")}
    if name.endswith(".safetensors.json"):
        d = json.loads(data)
        return {k: v for k, v in d.items() if k not in VOLATILE_SIDECAR_KEYS}
    return data


def _runs_by_trial(uri: str, experiment: str) -> dict[str, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} at {uri}"
    out: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id], max_results=5000):
        out.setdefault(r.data.tags.get("trial_id"), []).append(r)
    return out


def _run_facts(uri: str, run) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {"params": run.data.params, "metrics": run.data.metrics,
            "tags": {k: run.data.tags.get(k) for k in OUR_TAGS},
            "loss_curve": [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, "loss"),
                                                              key=lambda m: m.step)],
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id, "embedding"))}


def test_study_on_two_nodes_without_a_shared_disk_equals_one_node_and_survives_a_node_kill(tmp_path):
    reason = can_hide_folders()
    if reason:
        pytest.skip(f"cluster-test SKIPPED: {reason}")
    t_start = time.time()
    work = _prepared_workspace(tmp_path / "cluster-ws")
    single = tmp_path / "single-ws"
    shutil.copytree(work, single)  # the same prepared inputs, byte for byte
    cfg = load_config("smoke", work / "params.yaml", {"study.datasets": ["coco"]})
    trials = trial_grid(cfg)

    # One node: the local Ray cluster of the driver's machine, a SQLite store in the workspace.
    t0 = time.time()
    _vw(["sweep", *SETTINGS, "--no-progress"], single)
    _vw(["evaluate", "run", *SETTINGS, "--set", "evaluate.engine=ray", "--quiet"], single)
    single_s = time.time() - t0

    # Two nodes: the head (no CPUs), a worker node that sees neither workspace, an MLflow server on the head.
    ray_tmp = Path(tempfile.mkdtemp(prefix="vwc-"))  # short: Ray's socket paths live under it
    hidden = [work, single, REPO / "data", REPO / "artifacts"]
    nodes = TwoNodes(ray_tmp, hidden)
    try:
        t0 = time.time()
        nodes.start()
        seen = nodes.run_on_worker(f"import os\nresult = [os.path.exists(p) for p in "
                                   f"{[str(work / 'params.yaml'), str(cfg.path(cfg.prepare.manifests_dir))]}]")
        assert seen["result"] == [False, False], "the worker node sees the head's workspace"
        assert (work / "params.yaml").is_file() and cfg.path(cfg.prepare.manifests_dir).is_dir()
        worker0 = nodes.worker_node_id(0)
        assert seen["node_id"] == worker0

        env = nodes.driver_env()
        log = tmp_path / "sweep.log"  # a file, not a pipe: nobody reads a pipe while the test waits below
        sweep = subprocess.Popen([sys.executable, "-m", "visual_words", "sweep", *SETTINGS, "--no-progress"],
                                 cwd=work, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        trained_dir = cfg.path(cfg.train.out_dir)
        deadline = time.time() + 600
        while not list(trained_dir.rglob("*.safetensors.json")):  # the first batch came back: kill mid-training
            assert sweep.poll() is None, f"the sweep ended before any batch came back:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, "no trained file after 10 min"
            time.sleep(0.5)
        finished_at_kill = len(list(trained_dir.rglob("*.safetensors.json")))
        nodes.kill_raylet(0)
        nodes.add_worker()
        sweep.wait(timeout=900)
        sweep_out = log.read_text()
        assert sweep.returncode == 0, f"the sweep failed after the node kill:\n{sweep_out[-4000:]}"
        assert finished_at_kill < len(trials), "the kill should land in the middle of training"
        assert f"{len(trials)} trials, 0 already done, {len(trials)} to run" in sweep_out
        assert f"done: {len(trials)} trained, 0 reused" in sweep_out  # every trial trained (and written) once
        _vw(["evaluate", "run", *SETTINGS, "--set", "evaluate.engine=ray", "--quiet"], work, env=env)
        cluster_s = time.time() - t0
        records = nodes.records()
        name = f"{cfg.sweep.experiment_prefix}/{cfg.profile}/train"
        server = _runs_by_trial(nodes.tracking_uri, name)  # read while the head's server is up
        server_facts = {tid: [(r.info.status, _run_facts(nodes.tracking_uri, r)) for r in rs]
                        for tid, rs in server.items()}
    finally:
        nodes.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)

    # Ray's own records: the head has no CPUs; every task attempt ran on a worker node; the killed node is dead;
    # training tasks ran on both worker nodes (the killed node's batches were retried on the new one).
    worker1 = next(n["NodeID"] for n in records["nodes"] if n["Raylet"].startswith(str(ray_tmp / "worker1") + "/"))
    by_id = {n["NodeID"]: n for n in records["nodes"]}
    head = [n for n in records["nodes"] if n["NodeID"] not in (worker0, worker1)]
    assert len(head) == 1 and head[0]["Resources"].get("CPU", 0) == 0
    assert not by_id[worker0]["Alive"] and by_id[worker1]["Alive"]
    def kind(task):  # Ray names a task after its function
        return next((k for k in ("run_batch", "evaluate_unit") if task["name"].endswith(k)), None)

    ours = [t for t in records["tasks"] if kind(t)]
    assert {kind(t) for t in ours} == {"run_batch", "evaluate_unit"}, records["tasks"]
    assert {t["node_id"] for t in ours if t["node_id"]} <= {worker0, worker1}
    train_nodes = {t["node_id"] for t in ours if kind(t) == "run_batch"}
    assert train_nodes == {worker0, worker1}, "training ran on both worker nodes"
    assert {t["node_id"] for t in ours if kind(t) == "evaluate_unit"} == {worker1}

    # Every output of the two stages equals the single-node run's (sidecars up to their wall-clock fields).
    single_cfg = load_config("smoke", single / "params.yaml", {"study.datasets": ["coco"]})
    got, want = _outputs(cfg), _outputs(single_cfg)
    assert sorted(got) == sorted(want)
    assert len([n for n in got if n.endswith(".safetensors")]) == len(trials)
    differing = [n for n in want if _comparable(n, got[n]) != _comparable(n, want[n])]
    assert not differing, f"{len(differing)} outputs differ from the single-node run, e.g. {differing[:5]}"

    # MLflow: one FINISHED run per trial on the head's server, nothing left RUNNING, each run equal to the
    # single-node run's (params, metrics incl. the evaluation's, our tags, the loss curve, the logged files).
    local_uri = f"sqlite:///{single / 'mlflow.db'}"
    local = _runs_by_trial(local_uri, name)
    assert sorted(server_facts) == sorted(t.id for t in trials)
    assert all(len(rs) == 1 and rs[0][0] == "FINISHED" for rs in server_facts.values())
    for trial_id, [(_, facts)] in server_facts.items():
        assert facts == _run_facts(local_uri, local[trial_id][0]), trial_id
    print(f"\n[cluster-test] {len(trials)} trials; single node {single_s:.0f} s; two nodes with a node kill "
          f"{cluster_s:.0f} s; whole test {time.time() - t_start:.0f} s; {finished_at_kill} trials were back when "
          "worker node 0's raylet was killed")
