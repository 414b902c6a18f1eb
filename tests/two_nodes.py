"""A two-node Ray cluster on one machine whose second node cannot see the workspace, and an MLflow server on the
head (tests/test_cluster.py; docs/cluster.md says why each piece is so).

- Everything listens on 127.0.0.1, on free random ports (other test runs share the machine). Ray binds loopback
  only in its "local" mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); in cluster mode it binds every interface and
  rewrites 127.0.0.1 to the host's address. Its CLI refuses to start a second node in local mode, so the worker
  node is started through a three-line wrapper that lifts that one check and keeps the loopback address as given.
- The head offers no CPUs (`--num-cpus=0`): every task has to run on a worker node.
- A worker node runs in its own mount namespace (`unshare --mount --propagation private`, root only) with an empty
  tmpfs mounted over each hidden folder: the study's workspace, and the repository's data and artifacts folders.
  The code (src/) and the virtual environment stay visible, as an image's would; the node gets its own VW_NODE_DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Sequence

RAY_CLI = "from ray.scripts.scripts import main; main()"
# Ray's CLI refuses `ray start --address` unless cluster mode is on; cluster mode would rewrite the loopback address
# to the host's interface address. Lift the refusal, keep the address as given (the test's worker nodes only).
WORKER_CLI = ("import ray._private.ray_constants as c; c.ENABLE_RAY_CLUSTER = True\n"
              "from ray._private import services; services.resolve_ip_for_localhost = lambda host: host\n" + RAY_CLI)
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_hide_folders() -> str:
    """"" when this process can run a node in its own mount namespace; else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (a mount namespace with a tmpfs over the workspace)"
    if shutil.which("unshare") is None:
        return "no `unshare` (util-linux)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare --mount` fails here: {probe.stderr.strip()[:200]}"
    return ""


class TwoNodes:
    """`start()` starts the head, the MLflow server and one worker node; `add_worker()` another; `kill_raylet(i)`
    kills worker i's raylet (SIGKILL); `stop()` stops everything this object started (by process group and by its
    own temp folder, never by name)."""

    def __init__(self, tmp: Path, hidden: Sequence[Path], log=print):
        self.tmp = Path(tmp)  # keep it short: Ray's socket paths under it must stay within 107 bytes
        self.hidden = [Path(p) for p in hidden]
        self.log = log
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.gcs_port = free_port()
        self.mlflow_port = free_port()
        self.python = sys.executable

    # -- addresses and environments ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def driver_env(self, **more) -> dict[str, str]:
        """The environment of a driver on the head: RAY_ADDRESS and the tracking server."""
        return dict(os.environ, **LOOPBACK_ENV, RAY_ADDRESS=self.address, MLFLOW_TRACKING_URI=self.tracking_uri,
                    **more)

    def _ports(self) -> list[str]:
        return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

    def _spawn(self, argv: list[str], log: Path, env: dict, cwd: Path) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=cwd,
                             start_new_session=True)
        self.procs.append(p)
        return p

    # -- start ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **LOOPBACK_ENV)
        (self.tmp / "head").mkdir(exist_ok=True)
        self._spawn([self.python, "-c", RAY_CLI, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                     f"--port={self.gcs_port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false",
                     f"--temp-dir={self.tmp / 'head'}", "--object-store-memory=200000000",
                     "--disable-usage-stats", *self._ports()], self.tmp / "head.log", env, self.tmp)
        server_env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self._spawn([self.python, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
                     "--workers", "1", "--backend-store-uri", f"sqlite:///{self.tmp / 'mlflow.db'}",
                     "--artifacts-destination", str(self.tmp / "mlartifacts")],
                    self.tmp / "mlflow.log", server_env, self.tmp)
        self._wait_http(f"{self.tracking_uri}/health", "the MLflow server", self.tmp / "mlflow.log")
        self.add_worker()

    def add_worker(self, cpus: int = 2) -> int:
        """Start worker node number len(self.workers) in its own mount namespace; wait until it has joined."""
        i = len(self.workers)
        home = self.tmp / f"worker{i}"
        (home / "node").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **LOOPBACK_ENV, VW_NODE_DIR=str(home / "node"))
        env.pop("RAY_ADDRESS", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        hide = " && ".join(f"mount -t tmpfs -o size=1m,mode=755 vw-hidden {json.dumps(str(p))}"
                           for p in self.hidden if p.is_dir())
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", f'{hide} && exec "$@"', "sh",
                self.python, "-c", WORKER_CLI, "start", "--block", f"--address={self.address}",
                "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={home}",
                "--object-store-memory=200000000", "--disable-usage-stats", *self._ports()]
        self.workers.append(self._spawn(argv, self.tmp / f"worker{i}.log", env, home))
        t0 = time.time()
        while self.worker_node_id(i) is None:
            if self.workers[-1].poll() is not None or time.time() - t0 > 120:
                raise RuntimeError(f"worker node {i} did not join: {(self.tmp / f'worker{i}.log').read_text()[-3000:]}")
            time.sleep(1)
        return i

    def _wait_http(self, url: str, what: str, log: Path, timeout: float = 120) -> None:
        t0 = time.time()
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                if time.time() - t0 > timeout:
                    raise RuntimeError(f"{what} did not come up at {url}: {log.read_text()[-3000:]}") from None
                time.sleep(0.5)

    # -- what Ray says -------------------------------------------------------------------------------------------

    def records(self) -> dict[str, list[dict]]:
        """Ray's own records, read from the head's GCS by a driver in a child process (so this process never
        imports Ray under another cluster-mode setting): `nodes` (ray.nodes(): NodeID, Alive, Resources) and
        `tasks`, one per task attempt (name, task_id, attempt, node_id, state) from the GCS task events. (The
        ray.util.state listings need Ray's dashboard, which the minimal `ray` package the project pins lacks.)"""
        code = """
import json, os, ray
from ray._private.state import state
from ray.core.generated import common_pb2
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
attempts = {}
for ev in state._get_all_task_events():
    key = (ev.task_id.hex(), ev.attempt_number)
    a = attempts.setdefault(key, {"task_id": key[0], "attempt": key[1], "name": "", "node_id": "", "state": ""})
    if ev.HasField("task_info"):
        a["name"] = ev.task_info.name or a["name"]
    if ev.HasField("state_updates"):
        u = ev.state_updates
        if u.node_id:
            a["node_id"] = u.node_id.hex()
        if u.state_ts_ns:
            a["state"] = common_pb2.TaskStatus.Name(max(u.state_ts_ns.items(), key=lambda kv: kv[1])[0])
nodes = [{"NodeID": n["NodeID"], "Alive": n["Alive"], "Resources": n["Resources"], "Raylet": n["RayletSocketName"]}
         for n in ray.nodes()]
print(json.dumps({"nodes": nodes, "tasks": list(attempts.values())}))
"""
        out = subprocess.run([self.python, "-c", code], capture_output=True, text=True, timeout=120,
                             env=self.driver_env(), cwd=self.tmp)
        if out.returncode != 0:
            raise RuntimeError(f"reading Ray's records failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def worker_node_id(self, i: int, records: dict | None = None) -> str | None:
        """Ray's node id of worker node i once it has joined (its raylet socket lies in the node's own folder)."""
        try:
            records = records or self.records()
        except RuntimeError:
            return None
        home = str(self.tmp / f"worker{i}") + "/"
        return next((n["NodeID"] for n in records["nodes"] if n["Raylet"].startswith(home)), None)

    def run_on_worker(self, code: str) -> dict:
        """Run `code` (it sets `result`, a JSON value) as a Ray task on the cluster; returns {"result", "node_id"}."""
        script = ("import json, os, ray\n"
                  "ray.init(address=os.environ['RAY_ADDRESS'], log_to_driver=False)\n"
                  "@ray.remote(num_cpus=1)\n"
                  "def probe():\n"
                  "    result = None\n"
                  + "".join(f"    {line}\n" for line in code.splitlines()) +
                  "    return {'result': result, 'node_id': ray.get_runtime_context().get_node_id()}\n"
                  "print(json.dumps(ray.get(probe.remote())))\n")
        out = subprocess.run([self.python, "-c", script], capture_output=True, text=True, timeout=180,
                             env=self.driver_env(), cwd=self.tmp)
        if out.returncode != 0:
            raise RuntimeError(f"probe task failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    # -- faults and stop -----------------------------------------------------------------------------------------

    def raylet_pid(self, i: int) -> int:
        """The pid of worker node i's raylet (found by its temp folder, which only that node uses)."""
        import psutil

        home = str(self.tmp / f"worker{i}")
        for p in psutil.process_iter(["name", "cmdline"]):
            if p.info["name"] == "raylet" and any(home + "/" in a for a in p.info["cmdline"] or []):
                return p.pid
        raise RuntimeError(f"no raylet of worker node {i} is running")

    def kill_raylet(self, i: int) -> int:
        pid = self.raylet_pid(i)
        os.kill(pid, signal.SIGKILL)
        self.log(f"[cluster] killed worker node {i}'s raylet (pid {pid})")
        return pid

    def stop(self) -> None:
        import psutil

        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Ray's workers live in their own process groups: end those that mention this cluster's temp folder.
        mine = str(self.tmp) + "/"
        for p in psutil.process_iter(["cmdline"]):
            if any(mine in a for a in p.info["cmdline"] or []) and p.pid != os.getpid():
                try:
                    p.kill()
                except psutil.Error:
                    pass
