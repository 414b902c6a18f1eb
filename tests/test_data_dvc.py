"""DVC wiring of the data stage: data.dvc tracks data/raw, and `dvc repro prepare` runs the smoke profile on a fresh
checkout (no data/raw, no artifacts, no ../shared needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_data_dvc_tracks_the_raw_folder_and_the_stage_never_writes_under_data():
    dvc_file = yaml.safe_load((REPO / "data.dvc").read_text())
    assert [o["path"] for o in dvc_file["outs"]] == ["data/raw"]
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["prepare"]
    assert stage["cmd"] == "vw data prepare"
    assert stage["params"] == ["profile", "study", "prepare", "profiles"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
    assert outs == ["artifacts/${profile}/manifests", "artifacts/${profile}/synthetic"]
    assert not any(o.startswith("data/") for o in outs)
    assert all((REPO / d).exists() for d in stage["deps"])  # every dep exists in a fresh clone
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert not params["prepare"]["synthetic_root"].startswith("data/")
    assert not params["prepare"]["manifests_dir"].startswith("data/")


@pytest.mark.slow
def test_dvc_repro_prepare_on_a_fresh_checkout(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    # the checkout's files as a fresh clone has them: tracked files only (no data/raw, no artifacts)
    for rel in ("params.yaml", "dvc.yaml", "data.dvc", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore",
                "data/fetched.json", "data/dreambooth_boxes.json", "src/visual_words/registry",
                "src/visual_words/data", "src/visual_words/preprocess.py"):
        src, dst = REPO / rel, ws / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    (ws / "artifacts").mkdir()
    (ws / "artifacts" / "tiny").symlink_to(REPO / "artifacts" / "tiny")  # the tiny models `vw tiny` builds
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("VW_PARAMS", None)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "add", "-A"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", "fresh"], cwd=ws, check=True)
    assert not (ws / "data" / "raw").exists()
    run = subprocess.run([str(BIN / "dvc"), "repro", "prepare"], cwd=ws, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Running stage 'prepare'" in run.stdout
    for ds in ("coco", "pascal"):
        assert (ws / "artifacts" / "smoke" / "manifests" / f"{ds}.json").is_file()  # the params file's profile's
    assert (ws / "artifacts" / "smoke" / "synthetic" / "coco" / "annotations" / "instances_train2017.json").is_file()
    assert list((ws / "artifacts" / "cache").glob("*/*/model.json"))
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert "prepare" in lock["stages"]
    again = subprocess.run([str(BIN / "dvc"), "repro", "prepare"], cwd=ws, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "didn't change, skipping" in again.stdout
