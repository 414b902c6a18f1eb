"""Shared fixtures. Tests run offline on tiny random-weight models built through the production code path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_ASSETS = REPO.parent / "shared" / "assets"


def prepared_coco_workspace(repo_root: Path, ws: Path, **more_sets) -> dict:
    """A smoke workspace in `ws` on the COCO manifest alone (features computed on demand), reading the repo's tiny
    checkpoints through a symlink; prepares it and returns the --set overrides its commands need."""
    import shutil

    from visual_words.config import load_config
    from visual_words.data.prepare import prepare

    shutil.copy(repo_root / "params.yaml", ws / "params.yaml")
    os.symlink(repo_root / "artifacts", ws / "artifacts")  # the tiny checkpoints (read only)
    sets = {"prepare.manifests_dir": str(ws / "manifests"), "prepare.cache_dir": str(ws / "cache"),
            "prepare.synthetic_root": str(ws / "synthetic"), "study.datasets": ["coco"],
            "prepare.precompute_features": False, "train.out_dir": str(ws / "emb"), **more_sets}
    prepare(load_config("smoke", ws / "params.yaml", sets), progress=False)
    return sets


def pytest_addoption(parser):
    parser.addoption("--rehearsal", action="store_true",
                     help="run only the checks of a finished rehearsal (make rehearse runs the rehearsal first)")
    parser.addoption("--cluster", action="store_true",
                     help="run only the two-node Ray cluster test (make cluster-test; minutes, needs root)")


def pytest_collection_modifyitems(config, items):
    """Rehearsal checks read a full-size run's outputs: collected with --rehearsal (alone), never otherwise. The
    two-node cluster test takes minutes: collected with --cluster (alone), never otherwise."""
    want = {m: config.getoption(f"--{m}") for m in ("rehearsal", "cluster")}
    keep = [it for it in items if all((it.get_closest_marker(m) is not None) == w for m, w in want.items())]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[it for it in items if it not in keep])
        items[:] = keep


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    """../shared/assets (real third-party samples). Skipped in a user's clone without it; never skipped in CI."""
    if not SHARED_ASSETS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the shared assets at {SHARED_ASSETS}")
        pytest.skip(f"real sample assets not present at {SHARED_ASSETS} (they ship beside the repo in CI)")
    return SHARED_ASSETS


@pytest.fixture(scope="session")
def smoke_config():
    from visual_words.config import load_config

    return load_config("smoke", REPO / "params.yaml")


@pytest.fixture(scope="session")
def tiny_sd():
    from visual_words.models.loading import load_model

    return load_model("tiny-sd", root=REPO)


@pytest.fixture(scope="session")
def tiny_owl():
    from visual_words.models.loading import load_model

    return load_model("tiny-owlv2", root=REPO)


@pytest.fixture(scope="session")
def tiny_clip():
    from visual_words.models.loading import load_model

    return load_model("tiny-clip", root=REPO)


@pytest.fixture(scope="session")
def tiny_clip_eval():
    from visual_words.models.loading import load_model

    return load_model("tiny-clip-eval", root=REPO)


@pytest.fixture
def fresh_tiny_sd():
    """A private tiny-sd for tests that change the pipeline (diffusers' load/unload_textual_inversion swaps the
    token-embedding module for a new, trainable one), so the shared session fixture stays frozen and untouched."""
    from visual_words.models.loading import load_model

    return load_model("tiny-sd", root=REPO)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium (.ci/run installs it); skipped in a user's clone without it, failed in CI."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium (.ci/run installs it)")
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    return path
