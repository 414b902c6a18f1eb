"""`vw data fetch DATASET`: put a dataset under `prepare.data_root` from its public source, checked.

COCO 2017, VOC 2012 and DreamBooth are downloaded from the sources in registry/datasets.yaml, checked against their
known md5 (DreamBooth: every photo the study uses against its sha256), and unpacked into `<data_root>/<folder>`.
Each archive lists its sources in order (the original first, then mirrors maintained projects use): a source that
cannot be reached or serves other bytes is skipped with a note, the next one is tried, and the fetch says (and
records in fetched.json) which source served each archive.
ImageNet is never downloaded (its terms forbid redistribution): `fetch imagenet --from PATH` only checks the user's
copy and says how to point `prepare.imagenet_root` at it.

Without internet access the download fails with a message saying so, and the same command works from what the user
already has: `--from PATH` takes a folder holding the official archives (checked, then unpacked) or the unpacked
dataset itself (its layout checked, then linked — or copied with `--copy`).

Fetching is a command, not a DVC stage: its output is `data/raw`, which `data.dvc` tracks, and a stage may not
write into a tracked folder. After a fetch, `dvc commit data.dvc` records the new contents (the command says so). Each
fetch also writes what it fetched (source, checksums, time) to `fetched.json` beside data_root; the `prepare` stage
depends on that file, so `dvc repro` re-runs prepare after a fetch.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path

import yaml
from tqdm import tqdm

from visual_words.io import write_json

CHUNK = 1 << 20


@functools.cache
def sources() -> dict[str, dict]:
    return yaml.safe_load(resources.files("visual_words.registry").joinpath("datasets.yaml").read_text())


def source(dataset: str, overrides: str | Path | None = None) -> dict:
    """The dataset's entry of registry/datasets.yaml; with `overrides` (`prepare.dataset_sources`: a YAML file in
    the same format), each key the file gives for the dataset replaces the registry's (e.g. `archives` with a local
    mirror's URLs and md5s), and the rest (layout, files_sha256) stays the registry's."""
    table = sources()
    if dataset not in table:
        raise KeyError(f"unknown dataset `{dataset}` (registry/datasets.yaml has: {', '.join(table)})")
    if not overrides:
        return table[dataset]
    return table[dataset] | _override_file(str(overrides)).get(dataset, {})


@functools.cache
def _override_file(path: str) -> dict[str, dict]:
    try:
        table = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: dataset sources file (prepare.dataset_sources) not found") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: dataset sources file is not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f"{path}: dataset sources file must map dataset names to entries in the format of "
                         "registry/datasets.yaml")
    unknown = sorted(set(table) - set(sources()))
    if unknown:
        raise ValueError(f"{path}: unknown dataset `{unknown[0]}` (registry/datasets.yaml has: "
                         f"{', '.join(sources())})")
    return table


def configured_source(cfg, dataset: str) -> dict:
    """The dataset's sources and checksums for this config (the registry's, or `prepare.dataset_sources`')."""
    return source(dataset, cfg.path(cfg.prepare.dataset_sources) if cfg.prepare.dataset_sources else None)


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def archive_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def archive_file(a: dict) -> str:
    """The archive's file name (`file:`, else the last part of its only URL)."""
    return a.get("file") or archive_name(a["url"])


def archive_sources(a: dict) -> list[str]:
    """The URLs to try for an archive, in order."""
    return [src["url"] for src in a["sources"]] if a.get("sources") else [a["url"]]


def download_first(a: dict, dest: Path, timeout: float = 20.0) -> str:
    """Download archive `a` from the first of its sources that serves it with the published md5; returns that URL.

    Raises ConnectionError listing every source and why it was passed over."""
    tried = []
    for url in archive_sources(a):
        try:
            download(url, dest, timeout)
        except ConnectionError as e:
            reason = str(e).removeprefix(f"cannot download {url} ").split(": this machine")[0]
            tried.append(f"{url} {reason}")
            print(f"[fetch] {dest.name}: {url} failed {reason}", flush=True)
            continue
        if a.get("md5") and (got := md5sum(dest)) != a["md5"]:
            dest.unlink()  # never keep bytes that are not the published archive
            tried.append(f"{url} served other bytes (md5 {got}, published {a['md5']})")
            print(f"[fetch] {dest.name}: {url} served other bytes (md5 {got} ≠ {a['md5']})", flush=True)
            continue
        print(f"[fetch] {dest.name}: served by {url}" + (f" (after {len(tried)} failed)" if tried else ""),
              flush=True)
        return url
    raise ConnectionError(f"cannot download {dest.name} from any of its {len(tried)} source(s) — "
                          + "; ".join(tried) + ": this machine seems to have no internet access, or every source "
                          "is down")


def download(url: str, dest: Path, timeout: float = 20.0) -> Path:
    """Stream `url` to `dest` (via a .part file); a network failure says clearly that there is no access."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: r.read(CHUNK), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise ConnectionError(f"cannot download {url} ({reason}): this machine seems to have no internet "
                              "access") from None
    os.replace(part, dest)
    return dest


def check_archive(path: Path, md5: str | None) -> None:
    if md5 and (got := md5sum(path)) != md5:
        raise ValueError(f"{path}: md5 {got} does not match the published {md5} (a broken or different download; "
                         "delete it and fetch again)")


def unpack(archive: Path, into: Path, member_prefix: str = "") -> None:
    """Unpack a zip or tar into `into`, keeping only members under `member_prefix` (stripped)."""
    def wanted(name: str) -> str | None:
        if not name.startswith(member_prefix):
            return None
        rel = name[len(member_prefix):]
        return rel or None

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in tqdm(z.infolist(), desc=f"unpacking {archive.name}", unit="file"):
                rel = wanted(info.filename)
                if rel is None or info.is_dir():
                    continue
                target = (into / rel).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise ValueError(f"{archive}: member {info.filename} would unpack outside {into}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = []
            for m in t.getmembers():
                rel = wanted(m.name)
                if rel is not None:
                    m.name = rel
                    members.append(m)
            t.extractall(into, members=members, filter="data")  # "data": no absolute paths, links out, devices
    else:
        raise ValueError(f"{archive}: neither a zip nor a tar archive")


def missing_layout(folder: Path, spec: dict) -> list[str]:
    return [p for p in spec.get("layout", []) if not (folder / p).exists()]


def check_files(folder: Path, spec: dict) -> None:
    """DreamBooth: every photo the study uses must be there, byte for byte (sha256)."""
    from visual_words.io import sha256_file

    for rel, sha in (spec.get("files_sha256") or {}).items():
        path = folder / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the {spec['name']} copy")
        if sha256_file(path) != sha:
            raise ValueError(f"{path}: sha256 differs from the published photo (a different or damaged copy)")


def record(data_root: Path, dataset: str, entry: dict) -> Path:
    """Add what was fetched to `<data_root>/../fetched.json` (the prepare stage depends on this file)."""
    path = data_root.parent / "fetched.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    table[dataset] = entry | {"fetched_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return write_json(path, table)


def _install_folder(src: Path, target: Path, copy: bool) -> None:
    if target.is_symlink() or target.exists():
        raise FileExistsError(f"{target} already exists; remove it (or use --force) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        target.symlink_to(src.resolve(), target_is_directory=True)


def _remove(target: Path) -> None:
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)


def fetch(dataset: str, data_root: str | Path, src: str | Path | None = None, copy: bool = False,
          force: bool = False, downloads: str | Path | None = None, spec: dict | None = None,
          timeout: float = 20.0) -> Path:
    """Fetch `dataset` into `<data_root>/<folder>` (see the module doc); returns that folder."""
    spec = spec or source(dataset)
    data_root = Path(data_root)
    if spec.get("user_supplied"):
        from visual_words.data.imagenet import check_root

        root = check_root(src or "")
        missing = missing_layout(root, spec)
        if missing:
            raise FileNotFoundError(f"{root}: not a complete {spec['name']} copy ({missing[0]} is missing)")
        record(data_root, dataset, {"source": str(root), "kind": "user-supplied folder"})
        print(f"[fetch] {dataset}: {root} looks complete; set `prepare.imagenet_root: {root}` in params.yaml "
              f"(or --set prepare.imagenet_root={root})")
        return root
    target = data_root / spec["folder"]
    if target.exists() or target.is_symlink():
        if not force:
            if not missing_layout(target, spec):
                check_files(target, spec)
                print(f"[fetch] {dataset}: already at {target} (use --force to fetch again)")
                return target
            raise FileExistsError(f"{target} exists but is incomplete ({missing_layout(target, spec)[0]} missing); "
                                  "use --force to replace it")
    archives = spec.get("archives", [])
    entry: dict = {"source": None, "archives": {}}
    if src is not None:
        src = Path(src).expanduser()
        if not src.exists():
            raise FileNotFoundError(f"{src}: --from folder does not exist")
        if src.is_dir() and not missing_layout(src, spec):  # an unpacked copy
            check_files(src, spec)
            if force:
                _remove(target)
            _install_folder(src, target, copy)
            entry.update(source=str(src.resolve()), kind="copied folder" if copy else "linked folder")
            record(data_root, dataset, entry)
            _done(dataset, target)
            if not copy:
                print(f"[fetch] note: {target} links to {src}; DVC does not hash through a linked folder, so "
                      "data.dvc will not record its contents (use --copy for that)")
            return target
        folder = src if src.is_dir() else src.parent
        files = [folder / archive_file(a) for a in archives]
        absent = [f for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{src}: neither an unpacked {spec['name']} (missing "
                                    f"{missing_layout(src, spec)[0] if src.is_dir() else src}) nor the archive "
                                    f"{absent[0].name} (from {archive_sources(archives[files.index(absent[0])])[0]})")
        entry.update(source=str(folder.resolve()), kind="local archives")
        served = {archive_file(a): str(f.resolve()) for a, f in zip(archives, files)}
    else:
        downloads = Path(downloads) if downloads else Path("artifacts/downloads")
        files, served = [], {}
        for a in archives:
            dest = downloads / archive_file(a)
            if dest.is_file() and (not a.get("md5") or md5sum(dest) == a["md5"]):
                served[dest.name] = f"already downloaded ({dest})"
            else:
                try:
                    served[dest.name] = download_first(a, dest, timeout)
                except ConnectionError as e:
                    raise ConnectionError(
                        f"{e}. Download the {spec['name']} archive(s) yourself — "
                        + ", ".join(f"{archive_file(x)} from {' or '.join(archive_sources(x))}"
                                    + (f" (md5 {x['md5']})" if x.get("md5") else "") for x in archives)
                        + f" — into a folder and run `vw data fetch {dataset} --from FOLDER`, or point --from at an "
                        "unpacked copy you already have") from None
            files.append(dest)
        entry.update(source="download", kind="public archives")
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec['folder']}.", dir=_mkdir(data_root)))
    try:
        for a, f in zip(archives, files):
            check_archive(f, a.get("md5"))
            unpack(f, tmp, a.get("member_prefix", ""))
            entry["archives"][archive_file(a)] = {"md5": a.get("md5") or "unchecked archive; files checked by sha256",
                                                  "served_by": served[archive_file(a)]}
        missing = missing_layout(tmp, spec)
        if missing:
            raise ValueError(f"the {spec['name']} archives did not contain {missing[0]}")
        check_files(tmp, spec)
        if force:
            _remove(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record(data_root, dataset, entry)
    _done(dataset, target)
    return target


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _done(dataset: str, target: Path) -> None:
    print(f"[fetch] {dataset}: ready at {target}. Record it with DVC: `dvc commit data.dvc` (data.dvc tracks "
          "the raw datasets folder)")
