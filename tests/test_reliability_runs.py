"""Runs that are the same give the same DVC outputs; a killed run leaves no temporary that DVC records or that the
next run keeps.

Identical runs: the wall-clock times of a trial or a stage go to `*.times.json` beside the outputs (and to MLflow),
which .dvcignore keeps out of DVC's hashes; everything DVC hashes is byte-identical (`diff -r`). Temporaries: the
one atomic writer names them `.<target>.<random>.tmp`; .dvcignore keeps them out of every output, SIGTERM removes
them, and each stage removes what a SIGKILLed run left in its output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visual_words.cli import main

REPO = Path(__file__).resolve().parents[1]


def _argv(sets: dict) -> list[str]:
    return sum((["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"] for k, v in sets.items()), [])


# ---- identical runs, identical DVC outputs -----------------------------------------------------------------------


def test_dvcignore_keeps_times_and_temporaries_out_of_outputs():
    patterns = [line.strip() for line in (REPO / ".dvcignore").read_text().splitlines()]
    assert "*.times.json" in patterns and "*.tmp" in patterns


def _clone(folder: Path) -> Path:
    """A checkout of the smoke study in `folder` (params.yaml, the tiny checkpoints, the COCO manifest); every
    path in its settings is relative, as in a clone."""
    folder.mkdir()
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    os.symlink(REPO / "artifacts", folder / "artifacts")  # the tiny checkpoints (read only)
    assert main(["data", "prepare", "--params", str(folder / "params.yaml"), *_argv(CLONE_SETS)]) == 0
    return folder


CLONE_SETS = {"prepare.manifests_dir": "manifests", "prepare.cache_dir": "cache", "prepare.synthetic_root": "synthetic",
              "study.datasets": ["coco"], "prepare.precompute_features": False, "train.out_dir": "emb"}


@pytest.mark.slow  # two sweeps, each starting a local Ray cluster
def test_two_identical_sweeps_write_identical_outputs(tmp_path, capsys):
    for run in ("a", "b"):
        ws = _clone(tmp_path / run)
        argv = ["sweep", "--params", str(ws / "params.yaml"), *_argv(CLONE_SETS), "--task", "classification",
                "--limit", "3", "--no-progress"]
        assert main(argv) == 0, capsys.readouterr()
    a, b = tmp_path / "a" / "emb", tmp_path / "b" / "emb"
    diff = subprocess.run(["diff", "-r", "-x", "*.times.json", str(a), str(b)], capture_output=True, text=True)
    assert diff.returncode == 0 and diff.stdout == "", diff.stdout
    assert len(list(a.rglob("*.safetensors"))) == 3 and (a / "provenance.json").is_file()
    # the times exist, beside the outputs, and differ between the runs: kept out of what DVC hashes
    times = sorted(p.relative_to(a) for p in a.rglob("*.times.json"))
    assert len(times) == 5 and Path("provenance.times.json") in times, times
    side = json.loads(next(a.rglob("*.safetensors.json")).read_text())
    assert "started_ms" not in side and "finished_ms" not in side
    prov = json.loads((a / "provenance.json").read_text())
    assert "written_at" not in prov and "elapsed_s" not in prov and prov["params_file"] == "params.yaml"
    assert json.loads((a / "provenance.times.json").read_text())["elapsed_s"] > 0


# ---- temporaries: removed on SIGTERM and by the next run, never part of an output --------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": "1"}


def test_sigterm_inside_an_atomic_write_removes_its_temporary(tmp_path):
    """`vw` turns SIGTERM into an exception, so the writer's `finally` removes its temporary (Python's default
    ends the process at once: the issue's 0-byte `.tmp` in the evaluation rows)."""
    code = ("import os, signal, sys, time\nfrom pathlib import Path\n"
            "from visual_words.commands.main import Terminated, sigterm_raises\n"
            "from visual_words.io import atomic_path\n"
            "with sigterm_raises():\n"
            "    try:\n"
            "        with atomic_path(Path(sys.argv[1]) / 'rows' / 'r.json') as tmp:\n"
            "            print(tmp.name, flush=True)\n"
            "            os.kill(os.getpid(), signal.SIGTERM)\n"
            "            time.sleep(30)\n"
            "    except Terminated:\n"
            "        print('terminated', flush=True)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=_env(),
                       timeout=60)
    name, said = r.stdout.split()
    assert name.startswith(".r.json.") and name.endswith(".tmp") and said == "terminated"
    assert list((tmp_path / "rows").iterdir()) == []  # neither the temporary nor a half-written r.json


def test_temporaries_a_killed_run_left_are_removed_by_the_next_run(tmp_path, capsys):
    """kill -9 runs no `finally`: each stage command removes the temporaries in its output folder, under the run
    lock (no other run can be writing them), before it starts; other hidden files stay."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    rows, figures = tmp_path / "ev" / "rows", tmp_path / "rep" / "smoke" / "figures"
    rows.mkdir(parents=True)
    figures.mkdir(parents=True)
    left = [rows / ".0a1b.json.k2j3h4g5.tmp", figures / ".fig6.png.x8y7z6w5.png.tmp"]
    for p in left:
        p.write_bytes(b"")
    (figures / ".keep").write_text("not a temporary")
    sets = ["--set", f"evaluate.out_dir={tmp_path / 'ev'}", "--set", f"report.out_dir={tmp_path / 'rep'}"]
    main(["report", "--params", str(tmp_path / "params.yaml"), *sets])  # no evaluation to report: that is fine
    assert not left[1].exists() and left[0].exists()  # only its own output folder
    assert f"[vw] removed 1 temporary file(s) a killed run left in {tmp_path / 'rep'}" in capsys.readouterr().err
    assert main(["evaluate", "run", "--params", str(tmp_path / "params.yaml"), *sets]) == 2  # nothing trained yet
    assert not left[0].exists() and (figures / ".keep").is_file()


@pytest.mark.slow  # a fresh interpreter importing torch, twice
def test_sigterm_mid_training_stops_cleanly_and_resumes(tmp_path):
    ws = _clone(tmp_path / "ws")
    sets = {**CLONE_SETS, "train.steps": 400, "train.checkpoint_every": 1}  # a checkpoint write at every step
    argv = [sys.executable, "-m", "visual_words", "train", "--params", str(ws / "params.yaml"), *_argv(sets),
            "--task", "classification", "--limit", "2", "--no-progress"]
    p = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpts = ws / "emb" / "classification" / ".checkpoints"
    deadline = time.time() + 120
    while p.poll() is None and not list(ckpts.glob("*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1] == "vw train: terminated; re-run to resume (finished outputs are kept)"
    assert not [f for f in (ws / "emb").rglob("*") if f.name.endswith(".tmp")]
    assert not list(ws.glob(".vw-run-*.lock"))  # the run lock went with it
    assert list(ckpts.glob("*.pt"))  # the last checkpoint is kept: the rerun resumes from it
    r = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0 and "2 trained, 0 already done" in r.stdout
