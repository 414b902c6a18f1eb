"""`vw ui` starts the real MLflow UI on loopback; headless Chromium sees the trial runs on the page."""

import contextlib
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


def test_a_used_port_is_refused_and_sigterm_stops_the_server(tmp_path, repo_root):
    """A second `vw ui` on the same port fails in one line (rc 2) instead of printing a URL and exiting 0; `kill`
    (SIGTERM) of `vw ui` stops its `mlflow server` and uvicorn children too."""
    import psutil

    port = _free_port()
    env = dict(os.environ, VW_PARAMS=str(repo_root / "params.yaml"),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = [sys.executable, "-m", "visual_words", "ui", "--port", str(port)]
    first = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    children = []
    try:
        _wait_http(f"http://127.0.0.1:{port}/health")
        children = psutil.Process(first.pid).children(recursive=True)
        assert children  # the mlflow server (and its uvicorn worker)
        second = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "MLflow UI:" not in second.stdout
        assert second.stderr.strip() == (f"vw ui: error: port {port} on 127.0.0.1 is in use (another `vw ui` or "
                                         "server?); choose another with --port")
        first.send_signal(signal.SIGTERM)  # to `vw ui` alone, as `kill PID` does
        assert first.wait(timeout=60) == 143
        assert first.stderr.read().strip().splitlines()[-1] == "vw ui: terminated"
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, alive
        with socket.socket() as s:  # nothing listens on the port any more
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        for p in [*children, psutil.Process(first.pid)] if first.poll() is None else children:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
