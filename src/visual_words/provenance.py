"""What produced an output: the resolved config, the git commit and the package versions (DINOv2 style), and the
sha256 of every table a stage wrote, so that a reader can refuse a damaged one (`verify_output`)."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from visual_words.io import sha256_file, write_json

PROVENANCE = "provenance.json"

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


def write_provenance(out_dir: str | Path, config: Any, stage: str, elapsed_s: float | None = None,
                     files: Any = ()) -> Path:
    """Write `<out_dir>/provenance.json` next to a stage's outputs (with the stage's wall time when given) and the
    sha256 of each of `files` (outputs in `out_dir` that later stages read)."""
    out_dir = Path(out_dir)
    record = provenance(config, stage, elapsed_s)
    record["files"] = {Path(f).name: sha256_file(f) for f in files if f is not None and Path(f).is_file()}
    return write_json(out_dir / PROVENANCE, record)


def record_output(path: str | Path) -> None:
    """Record a rewritten output's sha256 in its folder's provenance.json (e.g. `vw evaluate summarize`)."""
    import json

    path = Path(path)
    prov = path.parent / PROVENANCE
    if prov.is_file():
        record = json.loads(prov.read_text())
        record.setdefault("files", {})[path.name] = sha256_file(path)
        write_json(prov, record)


def verify_output(path: str | Path) -> Path:
    """`path`, unless its folder's provenance.json records another sha256 for it: a damaged table is refused (one
    line naming it and the command that rebuilds it), never read."""
    import json

    from visual_words.errors import UserError

    path = Path(path)
    prov = path.parent / PROVENANCE
    try:
        record = json.loads(prov.read_text()) if prov.is_file() else {}
    except (OSError, ValueError):
        record = {}
    want = (record.get("files") or {}).get(path.name) if isinstance(record, dict) else None
    if want and sha256_file(path) != want:
        from visual_words.stages import STAGES

        stage = next((s for s in STAGES if s.name == record.get("stage")), None)
        again = f"`vw {' '.join(stage.command)}`" if stage else "its stage"
        raise UserError(f"{path}: damaged (its sha256 differs from the one {prov.name} recorded when it was "
                        f"written); run {again} again to rebuild it")
    return path
