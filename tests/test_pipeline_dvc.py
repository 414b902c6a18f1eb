"""The whole pipeline under DVC, and trained tokens travelling through a DVC remote.

From a fresh clone: `dvc repro` runs every stage on (a shrunken) smoke profile and a second `dvc repro` does
nothing; the embeddings are pushed to a local-folder remote; a second fresh clone `dvc pull`s the trained stages
and `dvc repro` rebuilds evaluation, analysis and report without training anything.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed in {cwd}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def _clone(src: Path, dst: Path, env) -> Path:
    _run(["git", "clone", "-q", str(src), str(dst)], cwd=src.parent, env=env)
    return dst


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1",
                DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                GIT_COMMITTER_EMAIL="t@t")


def test_repro_push_fresh_clone_pull_and_rebuild_without_training(tmp_path, env):
    if not (REPO / ".git").exists():
        pytest.skip("needs the project's git checkout")
    a = _clone(REPO, tmp_path / "a", env)
    # shrink the smoke grid so the test stays quick: 2 concepts × 1 anchor × (δ 0.5, ∞) × 3 tasks = 12 trials
    params = yaml.safe_load((a / "params.yaml").read_text())
    smoke = params["profiles"]["smoke"]
    smoke["study"].update(datasets=["coco"], concepts_per_dataset=2, anchors_per_concept=1)
    smoke["train"]["steps"] = 2
    smoke["evaluate"]["inference_steps"] = 2
    (a / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "commit", "-qam", "smaller smoke grid"], a, env)

    out = _run([BIN / "dvc", "repro"], a, env)
    for stage in ("prepare", "maps", "train", "evaluate", "analyze", "report"):
        assert f"Running stage '{stage}'" in out
    assert "12 trials, 0 already done, 12 to run" in out
    assert (a / "reports" / "smoke" / "index.html").is_file()
    again = _run([BIN / "dvc", "repro"], a, env)
    assert "Running stage" not in again and "Data and pipelines are up to date" in again
    metrics = _run([BIN / "dvc", "metrics", "show", "--json"], a, env)
    assert "in_domain" in metrics

    remote = tmp_path / "remote"
    _run([BIN / "dvc", "remote", "add", "-d", "tokens", str(remote)], a, env)
    _run([BIN / "dvc", "push"], a, env)
    _run(["git", "add", "dvc.lock", ".dvc/config"], a, env)
    _run(["git", "commit", "-qm", "trained tokens"], a, env)
    pushed = sorted((a / "artifacts" / "smoke" / "embeddings").rglob("*.safetensors"))
    assert len(pushed) == 12

    b = _clone(a, tmp_path / "b", env)
    assert not (b / "artifacts").exists()
    _run([BIN / "dvc", "pull", "prepare", "maps", "train"], b, env)
    pulled = sorted((b / "artifacts" / "smoke" / "embeddings").rglob("*.safetensors"))
    assert [p.relative_to(b) for p in pulled] == [p.relative_to(a) for p in pushed]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(pulled, pushed))
    out = _run([BIN / "dvc", "repro"], b, env)
    assert "Stage 'train' didn't change, skipping" in out and "[sweep]" not in out  # nothing trained
    for stage in ("evaluate", "analyze", "report"):
        assert f"Running stage '{stage}'" in out
    rows_a = (a / "artifacts" / "smoke" / "evaluation" / "evaluation.csv").read_text()
    rows_b = (b / "artifacts" / "smoke" / "evaluation" / "evaluation.csv").read_text()
    assert rows_a == rows_b  # the same tokens give the same evaluation on another checkout
    assert json.loads((b / "reports" / "smoke" / "metrics.json").read_text())["profile"] == "smoke"
