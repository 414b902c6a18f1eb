"""The container's parts that can be checked without a Docker daemon (`make docker-test` builds and runs it).

The Dockerfile is linted with hadolint; the files it copies or mounts exist and survive .dockerignore; the bake
step runs from exactly the files it mounts; the image's `vw` wrapper seeds a workspace and runs the real `vw`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(path: str) -> bool:
    """.dockerignore semantics for the patterns we use: the last match wins, `!` re-includes, an excluded folder
    hides what is in it, `**/` matches at any depth."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    out = False
    for pat in dockerignore():
        neg, pat = pat.startswith("!"), pat.lstrip("!")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], pat[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatchcase(p, pat) for p in prefixes)
        if hit:
            out = not neg
    return out


def bake_mounts() -> dict[str, str]:
    """source -> target of the bind mounts the bake step runs from."""
    return dict(re.findall(r"--mount=type=bind,source=(\S+?),target=(\S+?)\s", DOCKERFILE))


def test_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    r = subprocess.run([str(hadolint), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_builds_offline_from_a_local_base_and_runs_vw_as_non_root():
    assert not re.search(r"^#\s*syntax=", DOCKERFILE, re.M)  # BuildKit would pull its frontend from Docker Hub
    assert "ARG BASE=debian:bookworm-slim\nFROM ${BASE}" in DOCKERFILE
    assert 'ENTRYPOINT ["vw"]' in DOCKERFILE and 'VOLUME ["/workspace"]' in DOCKERFILE
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    for env in ("HF_HUB_OFFLINE=1", "MLFLOW_DISABLE_TELEMETRY=true", "RAY_USAGE_STATS_ENABLED=0", "DVC_NO_ANALYTICS=1",
                "NUMBA_CACHE_DIR=/tmp/", "RAY_TMPDIR=/tmp/ray", "HOME=/home/vw", "VW_MODELS_LOCK=/opt/models/"):
        assert env in DOCKERFILE, env
    # The CA bundle is a secret mount on the RUNs that reach the network, never a COPY.
    assert DOCKERFILE.count("--mount=type=secret,id=extra_ca,required=false") == 2
    assert "extra_ca" not in "".join(re.findall(r"^COPY .*$", DOCKERFILE, re.M))


def test_what_the_dockerfile_copies_and_mounts_is_in_the_build_context():
    sources = [s for s in bake_mounts()] + ["requirements.lock", "docker/vw-entrypoint.sh", "params.yaml",
                                           "pyproject.toml", "src/visual_words/cli.py"]
    for src in sources:
        assert (REPO / src).exists(), src
        assert not ignored(src), f"{src} is excluded by .dockerignore"
    for junk in (".git", ".venv", "artifacts/tiny/tiny-sd", "mlflow.db", "reports/smoke/index.html",
                 "src/visual_words/__pycache__/cli.cpython-311.pyc", "src/visual_words.egg-info", "models.lock.json"):
        assert ignored(junk), f"{junk} would be sent into the image"
    assert not ignored("reports/README.md")
    assert os.access(REPO / "docker" / "vw-entrypoint.sh", os.X_OK)


def test_bake_step_runs_from_exactly_the_files_it_mounts(tmp_path):
    """The image bakes before the project is installed: the lock module must import nothing else of ours."""
    for src, target in bake_mounts().items():
        dest = tmp_path / target.removeprefix("/tmp/bake/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (REPO / src).is_dir() else shutil.copy)(REPO / src, dest)
    env = os.environ | {"PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    probe = ("import sys, visual_words.models.lock as m; print(m.__file__);"
             "sys.exit(m.main(['bake', '--cache', sys.argv[1], '--lock', sys.argv[1] + '/l.json']))")
    r = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "hub")], env=env, capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.stdout.startswith(str(tmp_path)), r.stdout + r.stderr  # the mounted copy, not the installed package
    assert r.returncode == 2 and "run it with HF_HUB_OFFLINE=0" in r.stderr, r.stderr  # reached the download step


def run_wrapper(ws: Path, seed: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"VW_WORKSPACE": str(ws), "VW_SEED": str(seed),
                        "VW_EXEC": str(Path(sys.executable).parent / "vw")}
    env.pop("VW_PARAMS", None)
    return subprocess.run(["sh", str(REPO / "docker" / "vw-entrypoint.sh"), *args], cwd=ws, env=env,
                          capture_output=True, text=True)


@pytest.fixture
def seed(tmp_path) -> Path:
    seed = tmp_path / "seed"
    (seed / "data").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", seed / "params.yaml")
    (seed / "data" / "note.txt").write_text("from the image")
    return seed


def test_wrapper_seeds_an_empty_workspace_then_runs_vw_there(tmp_path, seed):
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    (ws / "data" / "note.txt").write_text("mine")  # a user's file is never overwritten
    r = run_wrapper(ws, seed, "check-models", "--profile", "smoke")
    assert r.returncode == 0, r.stderr
    assert "seeded" in r.stderr and "no hub models to check" in r.stdout  # the real vw read the seeded params.yaml
    assert (ws / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    assert (ws / "data" / "note.txt").read_text() == "mine"


def test_wrapper_leaves_a_workspace_with_its_own_params_alone(tmp_path, seed):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text().replace("profile: smoke", "profile: paper", 1))
    r = run_wrapper(ws, seed, "check-models", "--lock", str(tmp_path / "absent.json"))
    assert "seeded" not in r.stderr and not (ws / "data").exists()
    # The user's params say paper: its hub models are checked and the missing lock is a clear error.
    assert r.returncode == 2 and "no model lock at" in r.stderr and "BAKE_MODELS=1" in r.stderr
