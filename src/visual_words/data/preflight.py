"""Before any stage runs: are the study's datasets on disk? `vw reproduce` fetches those that are not, or stops.

`vw reproduce` calls `ensure_datasets` after the model check and the plan, before the first stage (docs/data.md
"Fetching"). For a profile that reads real images (`prepare.source: real`), each dataset of `study.datasets` must be
unpacked under `prepare.data_root` in its registry layout (ImageNet: `prepare.imagenet_root` set). A missing one
is fetched with `vw data fetch`'s code (the sources and checksums of registry/datasets.yaml, or of
`prepare.dataset_sources`) when `prepare.fetch` is true; otherwise, or when it cannot be downloaded, the run stops
with one line naming the command to run. The smoke profile draws its images (`source: synthetic`): nothing to do.

Fetching is not a DVC stage: it writes into `data/raw`, which data.dvc tracks, and no stage may write into a
tracked folder; `dvc repro` itself stays offline. Run by hand, `dvc repro` of a profile with missing data stops in
`prepare` with the same advice (`missing_message`).
"""

from __future__ import annotations

from pathlib import Path

from visual_words.data.fetch import archive_file, configured_source, fetch, missing_layout
from visual_words.errors import UserError


class DatasetMissingError(UserError, FileNotFoundError):
    """A dataset the study reads is not on disk (and was not fetched); the message names the command to run."""


def dataset_folder(cfg, dataset: str) -> Path:
    return cfg.path(cfg.prepare.data_root) / configured_source(cfg, dataset)["folder"]


def missing_datasets(cfg) -> list[str]:
    """The study's datasets that are not unpacked where prepare reads them (none for synthetic images)."""
    if cfg.prepare.source != "real":
        return []
    out = []
    for ds in cfg.study.datasets:
        if ds == "imagenet":
            if not cfg.prepare.imagenet_root:
                out.append(ds)
            continue
        folder = dataset_folder(cfg, ds)
        if not folder.is_dir() or missing_layout(folder, configured_source(cfg, ds)):
            out.append(ds)
    return out


def missing_message(cfg, dataset: str, why: str = "") -> str:
    """One line: what is missing and the command that puts it there."""
    if dataset == "imagenet":
        return ("ImageNet is used by this profile but `prepare.imagenet_root` is not set (its licence forbids a "
                "download): check your copy with `vw data fetch imagenet --from PATH`, then set "
                "prepare.imagenet_root")
    spec = configured_source(cfg, dataset)
    where = dataset_folder(cfg, dataset)
    files = ", ".join(archive_file(a) for a in spec.get("archives", []))
    if why:
        return (f"{spec['name']} is not in {where} and could not be downloaded ({why}); put {files} "
                f"(sources and md5 in registry/datasets.yaml) in a folder and run "
                f"`vw data fetch {dataset} --from FOLDER`, then run again")
    return (f"{spec['name']} is not in {where}: run `vw data fetch {dataset}` (downloads {files}, checked), then "
            "run again")


def ensure_datasets(cfg, timeout: float = 20.0) -> list[str]:
    """Fetch the study's missing datasets (`prepare.fetch`), or raise DatasetMissingError naming the command.
    Returns the datasets fetched."""
    missing = missing_datasets(cfg)
    if "imagenet" in missing:
        raise DatasetMissingError(missing_message(cfg, "imagenet"))
    if missing and not cfg.prepare.fetch:
        raise DatasetMissingError(missing_message(cfg, missing[0]) + (
            f" (also missing: {', '.join(missing[1:])})" if missing[1:] else "")
            + "; or set prepare.fetch: true and `vw reproduce` fetches them")
    fetched = []
    for ds in missing:
        spec = configured_source(cfg, ds)
        print(f"[fetch] {spec['name']} is not in {dataset_folder(cfg, ds)}: fetching it "
              f"({', '.join(archive_file(a) for a in spec.get('archives', []))}, checked)", flush=True)
        folder = dataset_folder(cfg, ds)
        if folder.exists() or folder.is_symlink():  # never delete what someone put there: they decide
            raise DatasetMissingError(f"{folder} exists but is not a complete {spec['name']} "
                                      f"({missing_layout(folder, spec)[0]} is missing): complete it, or replace it "
                                      f"with `vw data fetch {ds} --force`, then run again")
        try:
            fetch(ds, cfg.path(cfg.prepare.data_root), downloads=cfg.path(cfg.prepare.downloads_dir), spec=spec,
                  timeout=timeout)
        except ConnectionError as e:
            first = str(e).split(" — ", 1)[-1].split(";")[0].split(": this machine")[0]
            raise DatasetMissingError(missing_message(cfg, ds, why=first)) from None
        fetched.append(ds)
    return fetched
