"""Model and concept registries: facts kept as data (models.yaml, concepts.yaml), read here.

Layer: foundations (docs/design.md, "Layers"; `make lint` enforces it). It may import only other foundation modules
(errors, io, config, tasks, …); never models or above.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

ROLES = ("generation", "detection", "classification", "evaluator")
LOCAL_PREFIX = "local-dir:"  # open_clip's prefix for a folder; other libraries take the folder path itself
# A YAML file naming other sources for registry models (docs/models.md): key -> one of
#   {id: ORG/NAME, revision: COMMIT}   another hub repo (a future move), checked against the same pins
#   {folder: DIR}                      a folder in the library's own layout (e.g. diffusers), checked the same way
#   {single_file: FILE, config: DIR}   SD's original all-in-one checkpoint, loaded by diffusers' from_single_file
#                                      with the diffusers configs in DIR (default: the registry repo's snapshot)
OVERRIDES_ENV = "VW_MODEL_OVERRIDES"
OVERRIDE_KEYS = {"id", "revision", "folder", "single_file", "config"}


@dataclass(frozen=True)
class ModelEntry:
    key: str
    role: str
    family: str
    library: str
    id: str
    revision: str
    text_width: int
    text_layers: int
    context_length: int
    image_size: int
    prediction_type: str = "epsilon"
    tiny: dict[str, Any] | None = None
    single_file: str | None = None  # an original single-file checkpoint (override), loaded with from_single_file
    config: str | None = None  # its diffusers config folder (None: the registry repo's snapshot in the hub cache)
    override: str | None = None  # the overrides file this entry's source came from (None: models.yaml as is)

    @property
    def is_local(self) -> bool:
        """True for a checkpoint in a local folder or file (tiny models, user copies) rather than on a hub."""
        return self.local_dir is not None or self.single_file is not None

    @property
    def local_dir(self) -> Path | None:
        ident = self.id[len(LOCAL_PREFIX):] if self.id.startswith(LOCAL_PREFIX) else self.id
        if (self.id.startswith(LOCAL_PREFIX) or self.tiny is not None or Path(ident).is_absolute()
                or ident.startswith(".")):
            return Path(ident)
        return None


@dataclass(frozen=True)
class Concept:
    dataset: str
    name: str
    anchor: str
    cls: str  # the dataset's own class name / id
    prompt_name: str
    index: int = field(default=0)  # position in the dataset's list


def _read_yaml(name: str) -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath(name).read_text())


def _overrides() -> tuple[str | None, dict[str, dict]]:
    """The overrides file named by $VW_MODEL_OVERRIDES: (its path, key -> fields of ModelEntry to replace)."""
    path = os.environ.get(OVERRIDES_ENV)
    if not path:
        return None, {}
    file = Path(path).expanduser()
    if file.is_dir():
        raise ValueError(f"{file}: ${OVERRIDES_ENV} names a folder, not an overrides file (docs/models.md)")
    if not file.is_file():
        raise ValueError(f"{file}: ${OVERRIDES_ENV} names no such file")
    try:
        raw = yaml.safe_load(file.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise ValueError(f"{file}: not a text file (not UTF-8); ${OVERRIDES_ENV} must name a YAML file of "
                         "model sources (docs/models.md)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ValueError(f"{file}: not valid YAML ({where}{getattr(e, 'problem', None) or e}); fix it or unset "
                         f"${OVERRIDES_ENV}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: must be a mapping of registry keys to sources (e.g. `sd21: {{folder: DIR}}`), "
                         f"got a {type(raw).__name__}; see docs/models.md")
    base = file.resolve().parent  # relative paths are relative to the overrides file, not the working directory
    out = {}
    for key, ov in raw.items():
        if not isinstance(ov, dict) or not ov or set(ov) - OVERRIDE_KEYS:
            raise ValueError(f"{file}: `{key}` must map some of {', '.join(sorted(OVERRIDE_KEYS))}")
        kinds = [k for k in ("id", "folder", "single_file") if k in ov]
        if len(kinds) != 1:
            raise ValueError(f"{file}: `{key}` needs exactly one of id, folder, single_file (has {kinds or 'none'})")
        if "id" in ov:
            fields = {"id": str(ov["id"]), "revision": ov.get("revision")}
        elif "folder" in ov:
            fields = {"id": str(base / Path(ov["folder"]).expanduser()), "revision": "local"}
        else:
            # id and revision stay the registry's: by default the configs come from that repo's snapshot
            fields = {"single_file": str(base / Path(ov["single_file"]).expanduser()),
                      "config": str(base / Path(ov["config"]).expanduser()) if ov.get("config") else None}
        out[key] = fields | {"override": str(file)}
    return str(file), out


@functools.cache
def models() -> dict[str, ModelEntry]:
    out = {}
    ov_file, overrides = _overrides()
    table = _read_yaml("models.yaml")
    unknown = set(overrides) - set(table)
    if unknown:
        raise ValueError(f"{ov_file}: unknown model `{sorted(unknown)[0]}` "
                         f"(registry/models.yaml has: {', '.join(table)})")
    # Each entry's `family` is checked where it is used (models.families.family_of names the known families), not
    # here: the registry sits below the models (tests/test_families.py checks every family named here is registered).
    for key, raw in table.items():
        entry = ModelEntry(key=key, **(raw | overrides.get(key, {})))
        if entry.role not in ROLES:
            raise ValueError(f"models.yaml: `{key}.role` is {entry.role!r}; known roles: {', '.join(ROLES)}")
        out[key] = entry
    return out


def text_widths() -> dict[str, int]:
    """Each registry model's text width, from models.yaml alone: an override changes where the weights come from,
    never the architecture, so a caller that needs only widths (`vw inspect` without --model) does not read
    $VW_MODEL_OVERRIDES."""
    return {key: int(raw["text_width"]) for key, raw in _read_yaml("models.yaml").items()}


def model(key: str) -> ModelEntry:
    table = models()
    if key not in table:
        raise KeyError(f"unknown model `{key}` (registry/models.yaml has: {', '.join(table)})")
    return table[key]


@functools.cache
def datasets() -> dict[str, list[Concept]]:
    out = {}
    for ds, raw in _read_yaml("concepts.yaml").items():
        out[ds] = [
            Concept(dataset=ds, name=c["name"], anchor=c["anchor"], cls=c["class"], prompt_name=c["prompt_name"],
                    index=i)
            for i, c in enumerate(raw["concepts"])
        ]
    return out


def concepts(dataset: str) -> list[Concept]:
    table = datasets()
    if dataset not in table:
        raise KeyError(f"unknown dataset `{dataset}` (registry/concepts.yaml has: {', '.join(table)})")
    return table[dataset]


def all_concepts() -> list[Concept]:
    return [c for ds in datasets().values() for c in ds]


def anchors(dataset: str) -> list[str]:
    """The anchor words of a dataset, in order: each concept is trained from every one of them (the 10×10 design)."""
    return [c.anchor for c in concepts(dataset)]


def study_concepts(cfg, dataset: str) -> list[Concept]:
    """The study's concepts of a dataset (the first `study.concepts_per_dataset`; paper: all 10): its classes for
    every metric (the label set a word is scored among), classification negatives and the detection pool."""
    return concepts(dataset)[: cfg.study.concepts_per_dataset]


def uses_tiny_models(cfg) -> bool:
    """True when any of the study's models is a tiny random-weight checkpoint (the smoke profile, or any profile
    that swaps one in): what decides the smoke banner (report/banner.py) and the plan's note, not the profile's
    name."""
    return any(model(key).tiny is not None for key in cfg.study.models.values())
