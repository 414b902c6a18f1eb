"""`vw ui` starts the real MLflow UI on loopback; headless Chromium opens the study the way a user does: the link
`vw ui` prints for the train experiment shows the runs table as a model-training study with the study's columns,
and a trial's run page lists the pictures training and evaluation logged."""

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

# Debian's chromium, headless, with nothing of its own on the network and a fresh profile per page. Wide enough
# for every column of the study view: the runs table (ag-grid) leaves columns outside the window out of the page.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=20000", "--window-size=2600,1000"]
PICTURES = ("generated_0.png", "detection.png", "loss.png", "distance_to_anchor.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 90) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def _page(chromium, tmp_path, url: str, shot: str) -> str:
    """The page's DOM after its scripts ran, and a screenshot of it as `shot` (PNG) under tmp_path."""
    flags = [chromium, *CHROMIUM_FLAGS]
    dom = subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    png = tmp_path / shot
    subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={png}", url],
                   capture_output=True, timeout=120)
    assert png.stat().st_size > 10_000, f"no screenshot of {url}"
    print(f"screenshot: {png}")
    return dom


def _printed_links(log) -> dict[str, str]:
    """`vw ui` prints `  <experiment>: <link>` lines before it starts the server; read them off its output."""
    lines = log.read_text().splitlines()
    return dict(ln.strip().split(": ", 1) for ln in lines if ln.startswith("  ") and ": http://" in ln)


def test_ui_opens_the_smoke_study_with_its_columns_and_pictures(tmp_path, repo_root, chromium):
    from mlflow.tracking import MlflowClient

    from visual_words.config import load_config
    from visual_words.data.prepare import prepare
    from visual_words.evaluate.runner import run_evaluation
    from visual_words.tracking import STUDY_VIEW_NAME, TRIAL_ID, experiment_name, log_evaluation
    from visual_words.train.sweep import run_sweep
    from visual_words.transfer.stage import run as build_maps
    from visual_words.trials import trial_grid

    # a real (small) smoke study: two COCO classification trials (2 steps each) tracked in a fresh store, the maps,
    # and their evaluation in all three tasks (the generated image and the detection boxes come from there)
    cfg = load_config("smoke", repo_root / "params.yaml", {
        "prepare.manifests_dir": str(tmp_path / "manifests"), "prepare.cache_dir": str(tmp_path / "cache"),
        "train.out_dir": str(tmp_path / "embeddings"), "maps.out_dir": str(tmp_path / "maps"),
        "evaluate.out_dir": str(tmp_path / "evaluation"), "maps.holdout_fraction": 0.0,
        "evaluate.inference_steps": 2, "sweep.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "study.datasets": ["coco"], "train.steps": 2})
    prepare(cfg, progress=False)
    trials = [t for t in trial_grid(cfg) if t.task == "classification"][:2]
    summary = run_sweep(cfg, trials, progress=False)
    uri, exp = summary.tracking_uri, summary.experiment_id
    build_maps(cfg, progress=False)
    logged = log_evaluation(cfg, run_evaluation(cfg, progress=False).table)
    assert logged["trials_logged"] == 2 and logged["pictures_logged"] == 4
    runs = {r.data.tags[TRIAL_ID]: r.info.run_id for r in MlflowClient(uri).search_runs([exp])}
    assert sorted(runs) == sorted(t.id for t in trials)

    port = _free_port()
    env = dict(os.environ, VW_PARAMS=str(repo_root / "params.yaml"), MLFLOW_TRACKING_URI=uri)
    log = tmp_path / "vw-ui.log"  # a file, not a pipe: nobody reads the server's request log while it serves
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "visual_words", "ui", "--port", str(port)], cwd=tmp_path,
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/health")
        study = _printed_links(log)[experiment_name(cfg, "train")]
        assert study == f"{base}/#/experiments/{exp}/runs?workflowType=machine_learning&viewStateShareKey=" \
                        "visual-words-study"

        # the experiment page, opened from the printed link: the runs table of a model-training study, in the
        # study view, with the trials' coordinates, training results and each task's score as columns
        dom = _page(chromium, tmp_path, study, "experiment-page.png")
        assert "Model registry" in dom and "Judges" not in dom, "the UI did not open in its model-training mode"
        assert STUDY_VIEW_NAME in dom, "the study's saved view is not the active one"
        for column in ("task", "dataset", "concept", "anchor", "delta", "final_loss", "final_rel_dist",
                       "generation.gen_acc", "detection.map", "classification.cls_acc"):
            assert f">{column}<" in dom, f"column {column} not in the runs table"
        for t in trials:
            assert t.id in dom, f"run {t.id} not in the runs table"
            assert f">{t.concept}<" in dom and f">{t.anchor}<" in dom

        # a trial's run page: its artifacts list the pictures (one opened), and its overview shows them inline
        rid = runs[trials[0].id]
        run_page = f"{base}/#/experiments/{exp}/runs/{rid}"
        dom = _page(chromium, tmp_path, f"{run_page}/artifacts/detection.png?workflowType=machine_learning",
                    "run-page-artifacts.png")
        for name in PICTURES:
            assert f">{name}<" in dom, f"{name} not listed on the run page"
        dom = _page(chromium, tmp_path, f"{run_page}?workflowType=machine_learning", "run-page-overview.png")
        for name in PICTURES:
            src = f"get-artifact?path={name}&amp;run_uuid={rid}"
            assert src in dom, f"{name} not shown in the run's description"
            with urllib.request.urlopen(f"{base}/{src.replace('&amp;', '&')}", timeout=10) as r:
                assert r.read(8) == b"\x89PNG\r\n\x1a\n"  # the link the page shows serves the picture
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
