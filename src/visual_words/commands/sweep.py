"""`vw sweep` (the train stage: the trial grid on Ray, tracked in MLflow, resumable) and `vw ui` (the MLflow UI)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from visual_words.commands import add_config_args, config_from_args


def cmd_sweep(args) -> int:
    from visual_words.commands.plan import check_budget
    from visual_words.commands.train import select_trials_from_args
    from visual_words.provenance import write_provenance
    from visual_words.train.stage import run
    from visual_words.train.sweep import SweepError

    cfg = config_from_args(args)
    trials = select_trials_from_args(cfg, args)
    from visual_words.data.manifest import check_manifests_cover
    from visual_words.models.speed import check_precision

    # what would fail every trial is said now, before Ray starts
    check_precision(cfg.train.precision, [t.model for t in trials], "train.precision")
    # the whole profile's projection (a filtered run is part of it); under `vw reproduce` it was shown and agreed to
    if check_budget(cfg, args, quiet=os.environ.get("VW_PLAN_SHOWN") == "1"):
        return 2
    check_manifests_cover(cfg, trials)  # a grid the manifests were not prepared for
    t0 = time.time()
    try:
        s = run(cfg, trials, progress=not args.no_progress)
    except SweepError as e:
        print(f"vw sweep: {e}", file=sys.stderr)
        return 1
    write_provenance(cfg.path(cfg.train.out_dir), cfg, "train", elapsed_s=round(time.time() - t0, 2))
    print(f"[sweep] done: {s.trained} trained, {s.already_done} reused, {s.total} total; "
          f"runs in MLflow experiment {s.experiment_id} at {s.tracking_uri}")
    return 0


def cmd_ui(args) -> int:
    from visual_words.tracking import study_links, tracking_uri

    cfg = config_from_args(args)
    uri = tracking_uri(cfg)
    if uri.startswith("http"):
        print(f"tracking server already at {uri}; open it in a browser")
        for name, link in study_links(cfg, uri):
            print(f"  {name}: {link}")
        return 0
    # The lean server form (docs/toolchain.md §4): 1 worker, no job runner (~0.5 GB instead of ~3 GB).
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port), "--workers", "1",
           "--backend-store-uri", uri]
    if args.host not in ("127.0.0.1", "localhost"):
        cmd += ["--allowed-hosts", "*"]  # e.g. inside a container published with -p
    _check_port_free(args.host, args.port)
    # a wildcard bind (a container's 0.0.0.0, published with -p 127.0.0.1:PORT:PORT) is browsed on loopback
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"MLflow UI: {base}  (store {uri}; Ctrl-C to stop)", flush=True)
    for name, link in study_links(cfg, base):  # each experiment's runs table, opened as a training study
        print(f"  {name}: {link}", flush=True)
    # The server (and its uvicorn worker) in a process group of its own, stopped with vw however vw ends: Ctrl-C,
    # SIGTERM (commands.main turns it into an exception), an error. Otherwise a killed `vw ui` leaves them listening.
    server = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        rc = server.wait()
    finally:
        _stop_group(server)
    if rc:
        print(f"vw ui: the MLflow server exited with code {rc} (its messages are above)", file=sys.stderr)
    return rc


def _check_port_free(host: str, port: int) -> None:
    """A second `vw ui` on a port in use would print its URL and exit 0 while the server fails: refuse first."""
    import errno
    import socket

    from visual_words.errors import UserError

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            why = "is in use (another `vw ui` or server?)" if e.errno == errno.EADDRINUSE else f"cannot be used " \
                f"({e.strerror})"
            raise UserError(f"port {port} on {host} {why}; choose another with --port") from None


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left of it after 10 s."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + 10
        while time.time() < deadline:
            server.poll()  # reap the leader; the group may outlive it (uvicorn's worker)
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def register(sub) -> None:
    p = sub.add_parser("sweep", help="train the trial grid (the `train` stage): Ray fan-out, MLflow runs, resume",
                       description="Trains every trial of the profile's grid that is not done yet. Trials of one "
                       "model and dataset train together in batches (train.trials_per_batch); each batch is a Ray "
                       "task (a local cluster of sweep.num_workers CPUs by default; RAY_ADDRESS for a cluster). "
                       "Each trial becomes an MLflow run. Killed? Run it again: finished trials are skipped.")
    add_config_args(p)
    from visual_words.commands.train import add_trial_filters

    add_trial_filters(p)
    from visual_words.commands.plan import add_plan_args

    add_plan_args(p)
    p.add_argument("--yes", action="store_true", help="run even when the projection exceeds "
                   "sweep.confirm_above_gpu_hours (non-interactive runs refuse otherwise)")
    p.set_defaults(func=cmd_sweep, takes_run_lock=True, loads_models=True, tracks=True, writes="train.out_dir")
    p = sub.add_parser("ui", help="start the MLflow UI on the workspace's runs (bound to 127.0.0.1)",
                       description="Starts MLflow's server on the workspace's store and prints one link per "
                       "experiment of the profile: each opens its runs table as a model-training study; the train "
                       "experiment's opens the study view (trial tags, final loss, distance to the anchor, each "
                       "task's score as columns). A trial's run page shows its curves and evaluation pictures.")
    add_config_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui, tracks=True)
