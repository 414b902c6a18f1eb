"""Stages fanned out on Ray: one start-up, one resource request, one wait loop and one failure report.

The train stage (train/sweep.py: one task per trial batch) and the evaluate stage (evaluate/fanout.py: one task per
evaluation unit) both run here:

- start-up: `RAY_ADDRESS` points at a real cluster (Slurm via Ray's sbatch recipe, Kubernetes via KubeRay), whose
  resources are its own; without it a fresh in-process local cluster of `sweep.num_workers` CPUs and this machine's
  GPUs starts (`address="local"`, never a stale cluster), listening on the loopback interface only;
- resources: a GPU share (`sweep.gpus_per_task`) and one CPU per task when the cluster has GPUs and the study is not
  pinned to the CPU, else one CPU;
- the wait loop: tasks are collected as they finish (a progress bar advances by each job's weight); a failed task's
  remote error is kept as its last line and printed at once, and every other task still runs to its end;
- the failure report: one line per failed job, the first of its trial ids and how many more, then the error.

Workers keep their models loaded across tasks (`max_calls=0` + a per-process cache in the caller's task function).

Layer: foundations (imports nothing of the project), so training and evaluation share it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_ray(cfg):
    """Connect to `RAY_ADDRESS`'s cluster, or start a fresh local one; returns the `ray` module."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # A local study needs no network: with Ray's "cluster mode" off (the switch Ray itself uses on laptops; its
        # name says Windows/OSX, it works on Linux too) the node's address is the loopback one, and the GCS, the
        # raylet and every worker listen on 127.0.0.1 only (tests/test_reliability_faults.py checks the sockets).
        os.environ[LOCAL_ONLY_ENV] = "0"
    import ray

    if address:  # a real cluster: its resources are its own
        ray.init(address=address, log_to_driver=True)
    else:
        import torch
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time; covers a `ray` imported before the env was set

        # "local" always starts a fresh in-process cluster (a bare ray.init() may attach to a dead one).
        ray.init(address="local", num_cpus=cfg.sweep.num_workers, num_gpus=torch.cuda.device_count(),
                 include_dashboard=False, object_store_memory=300 * 2**20, log_to_driver=True)
    return ray


def task_resources(cfg) -> dict[str, Any]:
    """What one task asks of the running cluster."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and cfg.study.device != "cpu":
        return {"num_gpus": cfg.sweep.gpus_per_task, "num_cpus": 1}
    return {"num_cpus": 1}


def last_line(e: BaseException) -> str:
    """The last line of an error (a RayTaskError carries the whole remote traceback)."""
    text = str(e).strip().splitlines()
    return text[-1] if text else repr(e)


def run_on_ray(cfg, fn: Callable, jobs: Sequence[Any], args: Callable[[Any], tuple], *, label: str,
               describe: Callable[[Any], str], weight: Callable[[Any], int] = lambda job: 1, bar_desc: str,
               bar_unit: str, progress: bool = True) -> tuple[list[tuple[Any, Any]], list[tuple[Any, str]]]:
    """Run `fn(*args(job))` as one Ray task per job on a cluster started here and shut down before returning.

    Returns (job, result) of every task that finished and (job, last line of its error) of every task that failed;
    each failure is printed as it happens: `[label] FAILED <describe(job)>` and the error's last line."""
    ray = start_ray(cfg)
    done: list[tuple[Any, Any]] = []
    failed: list[tuple[Any, str]] = []
    try:
        from tqdm import tqdm

        remote = ray.remote(max_calls=0, max_retries=cfg.sweep.max_retries)(fn)
        opts = task_resources(cfg)
        pending = {remote.options(**opts).remote(*args(job)): job for job in jobs}
        bar = tqdm(total=sum(weight(job) for job in jobs), desc=bar_desc, unit=bar_unit, disable=not progress,
                   file=sys.stdout)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ref)
            try:
                done.append((job, ray.get(ref)))
            except Exception as e:  # RayTaskError carries the remote traceback; keep its last line + the job
                failed.append((job, last_line(e)))
                print(f"[{label}] FAILED {describe(job)}\n  {last_line(e)}", file=sys.stderr, flush=True)
            bar.update(weight(job))
        bar.close()
    finally:
        ray.shutdown()
    return done, failed


def failure_report(failed: Sequence[tuple[Sequence[str], str]], what: str, kept: str) -> str:
    """The message of a stage whose tasks failed: `failed` holds (trial ids, error) per failed job."""
    lines = [f"  {ids[0]}{' (+%d more)' % (len(ids) - 1) if len(ids) > 1 else ''}: {err}" for ids, err in failed]
    return (f"{sum(len(i) for i, _ in failed)} {what} failed (re-run to resume; finished {kept} are kept):\n"
            + "\n".join(lines))
