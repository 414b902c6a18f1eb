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
import subprocess
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
