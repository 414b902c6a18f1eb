"""What produced an output: the resolved config, the git commit and the package versions (DINOv2 style), and the
sha256 of every table a stage wrote, so that a reader can refuse a damaged one (`verify_output`).

When it was produced is kept apart: wall-clock times (a stage's elapsed seconds, a trial's start and end) go to
`*.times.json` files beside the outputs, which `.dvcignore` keeps out of DVC's hashes, and to MLflow. So two
identical runs write identical DVC outputs, and an identical retrain does not make every later stage run again.
"""

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


TIMES_SUFFIX = ".times.json"  # matched by .dvcignore


def _inside(path: str, root: str | Path) -> str:
    """`path` relative to `root` when it lies inside it (absolute otherwise)."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def provenance(config: Any, stage: str) -> dict[str, Any]:
    return {
        "stage": stage,
        "profile": config.profile,
        "config": config.to_dict(),
        "params_file": _inside(config.source, config.root),  # the same in every clone of the checkout
        "git_commit": git_commit(config.root),
        "packages": package_versions(),
    }


def write_provenance(out_dir: str | Path, config: Any, stage: str, elapsed_s: float | None = None,
                     files: Any = ()) -> Path:
    """Write `<out_dir>/provenance.json` next to a stage's outputs with the sha256 of each of `files` (outputs in
    `out_dir` that later stages read), and the stage's time (now, and its wall seconds when given) to
    `provenance.times.json`."""
    out_dir = Path(out_dir)
    record = provenance(config, stage)
    record["files"] = {Path(f).name: sha256_file(f) for f in files if f is not None and Path(f).is_file()}
    path = write_json(out_dir / PROVENANCE, record)
    write_times(path, {"elapsed_s": elapsed_s,
                       "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return path


def times_path(path: str | Path) -> Path:
    """Where the wall-clock times of the output `path` are kept: `x.json` → `x.times.json`, `x.safetensors` →
    `x.safetensors.times.json` (out of DVC's hashes, see the module doc)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".json") + TIMES_SUFFIX)


def write_times(path: str | Path, times: dict[str, Any]) -> Path:
    return write_json(times_path(path), times)


def read_times(path: str | Path) -> dict[str, Any]:
    """The times recorded for the output `path`; {} when none were (a pulled or older output)."""
    import json

    try:
        times = json.loads(times_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return times if isinstance(times, dict) else {}


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
