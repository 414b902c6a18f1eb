"""A Ray task's slice of the workspace, carried through Ray instead of a shared disk (docs/cluster.md).

On a cluster whose nodes share no disk (KubeRay, cloud VMs without NFS) a worker sees none of the driver's
workspace. So the driver packs the files a task reads — its manifest, the images and the cached features it reads,
the trained files or maps it needs — into a `Bundle` (bytes keyed by their place in the driver's workspace); the
worker unpacks it into a scratch copy of the workspace (`Scratch`), runs the unchanged stage code there, and hands
back the files that code wrote as another Bundle; the driver writes them into its workspace. The same path runs on
one machine, so a local study tests it.

Layout on a worker node (`VW_NODE_DIR`, default `<temp dir>/visual-words-node-<uid>`):

    <node dir>/artifacts/tiny/…        tiny checkpoints, built once per node (relative registry ids resolve here)
    <node dir>/tasks/<random>/…         one task's scratch workspace, deleted when the task ends

Model weights are the node's own (its hub cache or the image's baked copy; tiny ones built on the node), never
shipped: they are GBs and every node loads them once per worker process anyway.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

# The config settings that name workspace folders a task reads or writes; a worker's copy of the config points
# them into its scratch workspace. (Other folders — data_root, synthetic_root — are reached through the manifests.)
WORKSPACE_SETTINGS = (("prepare", "manifests_dir"), ("prepare", "cache_dir"), ("maps", "out_dir"),
                      ("train", "out_dir"), ("evaluate", "out_dir"))
ABSOLUTE = "_abs"  # where a file from outside the driver's workspace root goes in a scratch workspace
NOT_RETURNED = ("provenance.json",)  # the driver writes its stage's provenance itself (it records the driver's config)
SCRATCH_ONLY_DIRS = (".checkpoints",)  # trial-batch checkpoints stay on the node (a retry elsewhere restarts)


@dataclass
class Bundle:
    """Files as bytes, keyed by their place in the driver's workspace: a POSIX path relative to its root, or an
    absolute path for a file outside it."""

    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.files.values())

    def __len__(self) -> int:
        return len(self.files)


def workspace_key(cfg, path: str | os.PathLike) -> str:
    """A driver path's key: relative to the workspace root when it is inside it, else absolute."""
    p = Path(os.path.abspath(path))
    root = Path(os.path.abspath(cfg.root))
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def pack(cfg, paths: Iterable[str | os.PathLike]) -> Bundle:
    """The files at `paths` (driver side; files that do not exist are left out: an untrained trial, say)."""
    out = Bundle()
    for p in paths:
        p = Path(p)
        if p.is_file():
            out.files[workspace_key(cfg, p)] = p.read_bytes()
    return out


class Shipper:
    """The driver's side of shipping: `put(paths)` packs the files once and hands the same Ray object to every task
    that reads exactly those files (a dataset's images and features, a map), so each node fetches it at most once
    while the stage runs; `nbytes` counts each object once. Objects live until the Shipper is dropped."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._refs: dict[tuple[str, ...], tuple[object, int]] = {}

    def put(self, paths: Iterable[str | os.PathLike]):
        """The Ray object of these files (Ray must be running)."""
        import ray

        key = tuple(sorted({os.path.abspath(p) for p in paths}))
        if key not in self._refs:
            bundle = pack(self.cfg, key)
            self._refs[key] = (ray.put(bundle), bundle.nbytes)
        return self._refs[key][0]

    def size(self, paths: Iterable[str | os.PathLike]) -> int:
        """The bytes of the object `put(paths)` made (what one task receives through it)."""
        return self._refs[tuple(sorted({os.path.abspath(p) for p in paths}))][1]

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self._refs.values())


def feature_entries(cfg, model_key: str, images: Iterable[str | os.PathLike]) -> list[Path]:
    """The feature-cache entries of `model_key` for these image files (every kind and fingerprint folder of the
    model: the worker's FeatureCache picks the one its loaded model fingerprints to), plus each folder's model.json."""
    from visual_words.io import content_hash

    root = cfg.path(cfg.prepare.cache_dir)
    folders = sorted(root.glob(f"*/{model_key}-*"))
    if not folders:
        return []
    out: list[Path] = []
    for h in sorted({content_hash(p) for p in images}):
        out += [f / h[:2] / f"{h}.safetensors" for f in folders]
    return out + [f / "model.json" for f in folders]


def write_back(cfg, bundle: Bundle) -> list[Path]:
    """Write a task's returned files into the driver's workspace (atomically; sidecars — `<file>.json` beside a
    file of the bundle — after their file, since a sidecar marks its file complete). Returns the paths."""
    from visual_words.io import atomic_path

    keys = sorted(bundle.files, key=lambda k: (k.endswith(".json") and k[:-5] in bundle.files, k))
    written = []
    for key in keys:
        path = cfg.path(key)
        with atomic_path(path, suffix=Path(key).suffix) as tmp:
            Path(tmp).write_bytes(bundle.files[key])
        written.append(path)
    return written


def node_dir() -> Path:
    """This node's own folder for the project (tiny checkpoints, scratch workspaces)."""
    env = os.environ.get("VW_NODE_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"visual-words-node-{os.getuid()}"


class Scratch:
    """A scratch workspace on this node holding only the bundles' files; `cfg` is the driver's config pointed at
    it (its root is the node folder, so tiny checkpoints are built once per node). Use as a context manager: the
    folder is deleted on exit. `returned(folder setting)` gives the files the task wrote there."""

    def __init__(self, cfg, bundles: Iterable[Bundle]):
        self.driver_cfg = cfg
        home = node_dir()
        (home / "tasks").mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="task-", dir=home / "tasks"))
        self.staged: dict[str, bytes] = {}
        for b in bundles:
            for key, data in b.files.items():
                path = self._local(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                self.staged[key] = data
        self._localise_manifests(cfg)
        sections = {}
        for section, name in WORKSPACE_SETTINGS:
            part = sections.get(section, getattr(cfg, section))
            sections[section] = dataclasses.replace(part, **{name: str(self._local(getattr(part, name)))})
        self.cfg = dataclasses.replace(cfg, root=str(home), **sections)

    def _local(self, key: str | os.PathLike) -> Path:
        p = Path(key)
        return self.dir / ABSOLUTE / p.relative_to("/") if p.is_absolute() else self.dir / p

    def _localise_manifests(self, cfg) -> None:
        """Point each shipped manifest's image_root at where its images are in this scratch workspace, when the
        manifest's own (relative or absolute) image_root would miss them: images outside the workspace, or a
        manifests folder and an image folder on different sides of the workspace root."""
        import json

        from visual_words.data.manifest import read_manifest, write_manifest

        folder = Path(os.path.abspath(cfg.path(cfg.prepare.manifests_dir)))
        for key in list(self.staged):
            driver_path = Path(os.path.abspath(cfg.path(key)))
            if driver_path.parent != folder or driver_path.suffix != ".json":
                continue
            local = self._local(key)
            root = json.loads(local.read_text()).get("image_root", "")
            driver_root = os.path.normpath(driver_path.parent / root)  # an absolute root stays itself
            wanted = str(self._local(workspace_key(cfg, driver_root)))
            if os.path.normpath(local.parent / root) != wanted:
                m = read_manifest(local)
                write_manifest(local, dataclasses.replace(m, image_root=wanted))

    def _key(self, local: Path) -> str:
        rel = local.relative_to(self.dir)
        return "/" + rel.relative_to(ABSOLUTE).as_posix() if rel.parts[0] == ABSOLUTE else rel.as_posix()

    def returned(self, folder: str) -> Bundle:
        """The files under `folder` (a config value, e.g. cfg.train.out_dir of the driver) that the task wrote or
        changed, keyed for the driver; provenance.json and checkpoints stay here."""
        out = Bundle()
        base = self._local(folder)
        if not base.is_dir():
            return out
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.name in NOT_RETURNED or path.name.startswith(".") \
                    or any(part in SCRATCH_ONLY_DIRS for part in path.relative_to(base).parts):
                continue
            key = self._key(path)
            data = path.read_bytes()
            if self.staged.get(key) != data:
                out.files[key] = data
        return out

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
