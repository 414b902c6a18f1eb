"""The cluster recipes in docs/cluster/ as far as a machine without Slurm or Kubernetes can check them: the batch
script is valid bash (and passes shellcheck where it is installed), the RayJob manifest is valid YAML whose pieces
say what docs/cluster.md promises (the project image everywhere, a head that runs no tasks, no volume on the
workers, a token shared by every pod, --gpus equal to the workers' GPUs)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

RECIPES = "docs/cluster"


def test_the_slurm_batch_script_is_valid_bash_and_follows_rays_recipe(repo_root):
    script = repo_root / RECIPES / "slurm.sbatch"
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n") and "#SBATCH --nodes=" in text
    head = re.search(r"ray start --head[^\n]*\n[^\n]*", text).group(0)
    assert "--num-cpus=0" in head and "--num-gpus=0" in head and "--block" in head
    assert 'ray start --address="$RAY_ADDRESS"' in text and "RAY_AUTH_TOKEN" in text
    assert re.search(r"vw reproduce --profile paper --gpus \"\$task_gpus\" --yes", text)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_slurm_batch_script_passes_shellcheck(repo_root):
    out = subprocess.run(["shellcheck", str(repo_root / RECIPES / "slurm.sbatch")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_the_rayjob_runs_the_study_on_gpu_workers_that_mount_no_workspace(repo_root):
    docs = list(yaml.safe_load_all((repo_root / RECIPES / "rayjob.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"RayJob", "PersistentVolumeClaim", "Secret"}
    job = kinds["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]["rayClusterSpec"]
    head, workers = spec["headGroupSpec"], spec["workerGroupSpecs"]
    assert head["rayStartParams"] == {"num-cpus": "0", "num-gpus": "0"}
    pods = [head["template"]["spec"]] + [w["template"]["spec"] for w in workers]
    images = {c["image"] for p in pods for c in p["containers"]}
    assert len(images) == 1 and images.pop().startswith("visual-words:")
    # the workspace volume is the head's alone; workers mount only their shared memory
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert {v["persistentVolumeClaim"]["claimName"] for v in head["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v} == {claim}
    for w in workers:
        assert all("persistentVolumeClaim" not in v for v in w["template"]["spec"]["volumes"])
        assert [m["mountPath"] for c in w["template"]["spec"]["containers"] for m in c["volumeMounts"]] == ["/dev/shm"]
    # one Ray token for every pod, from the Secret
    secret = kinds["Secret"]["metadata"]["name"]
    for p in pods:
        tokens = [e for c in p["containers"] for e in c.get("env", []) if e["name"] == "RAY_AUTH_TOKEN"]
        assert [e["valueFrom"]["secretKeyRef"]["name"] for e in tokens] == [secret]
    # the entrypoint prices and runs the paper profile for the workers' GPUs, without a terminal
    gpus = sum(int(w["replicas"]) * int(w["rayStartParams"]["num-gpus"]) for w in workers)
    entry = job["spec"]["entrypoint"]
    assert f"vw plan --profile paper --gpus {gpus}" in entry
    assert f"vw reproduce --profile paper --gpus {gpus} --yes" in entry
