"""`vw ui` starts the real MLflow UI on loopback; headless Chromium sees the trial runs on the page."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def test_ui_lists_the_smoke_runs(tmp_path, repo_root, chromium):
    from visual_words.config import load_config
    from visual_words.data.prepare import prepare
    from visual_words.train.sweep import run_sweep
    from visual_words.trials import trial_grid

    # a real (small) smoke sweep: the COCO classification trials, 2 steps each, tracked in a fresh store
    cfg = load_config("smoke", repo_root / "params.yaml", {
        "prepare.manifests_dir": str(tmp_path / "manifests"), "prepare.cache_dir": str(tmp_path / "cache"),
        "train.out_dir": str(tmp_path / "embeddings"), "sweep.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "study.datasets": ["coco"], "train.steps": 2})
    prepare(cfg, progress=False)
    trials = [t for t in trial_grid(cfg) if t.task == "classification"][:4]
    summary = run_sweep(cfg, trials, progress=False)
    uri, exp = summary.tracking_uri, summary.experiment_id
    names = [t.id for t in trials]
    port = _free_port()
    env = dict(os.environ, VW_PARAMS=str(repo_root / "params.yaml"), MLFLOW_TRACKING_URI=uri)
    server = subprocess.Popen([sys.executable, "-m", "visual_words", "ui", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health")
        url = f"http://127.0.0.1:{port}/#/experiments/{exp}/runs"
        common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        for n in names:
            assert n in dom, f"run {n} not on the MLflow page"
        shot = repo_root / "build" / "test-artifacts" / "mlflow-ui.png"  # kept for people to look at
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*common, "--window-size=1400,900", f"--screenshot={shot}", url], capture_output=True,
                       timeout=120)
        assert shot.stat().st_size > 10_000  # kept as a test artifact in the test's tmp dir
        # the server is bound to loopback only
        out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
        listening = [ln for ln in out.splitlines() if f":{port} " in ln]
        assert all("127.0.0.1" in ln for ln in listening)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
