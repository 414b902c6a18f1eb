"""What produced an output: the resolved config, the git commit and the package versions (DINOv2 style)."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from visual_words.io import write_json

PACKAGES = ("visual-words", "torch", "diffusers", "transformers", "open_clip_torch", "numpy", "numba", "dvc",
            "mlflow", "ray", "pycocotools", "safetensors")


@functools.cache
def git_commit(root: str = ".") -> str:
    """The checkout's commit, with `-dirty` when tracked files changed; `unknown` outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        # no git checkout (e.g. the container's workspace): the image records the commit it was built from
        return os.environ.get("VW_SOURCE_COMMIT", "unknown")


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(config: Any, stage: str, elapsed_s: float | None = None) -> dict[str, Any]:
    return {
        "elapsed_s": elapsed_s,
        "stage": stage,
        "profile": config.profile,
        "config": config.to_dict(),
        "params_file": config.source,
        "git_commit": git_commit(config.root),
        "packages": package_versions(),
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_provenance(out_dir: str | Path, config: Any, stage: str, elapsed_s: float | None = None) -> Path:
    """Write `<out_dir>/provenance.json` next to a stage's outputs (with the stage's wall time when given)."""
    return write_json(Path(out_dir) / "provenance.json", provenance(config, stage, elapsed_s))
