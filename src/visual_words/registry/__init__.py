"""Model and concept registries: facts kept as data (models.yaml, concepts.yaml), read here."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

FAMILIES = ("stable-diffusion", "owl-vit", "open-clip", "hf-clip")
ROLES = ("generation", "detection", "classification", "evaluator")
LOCAL_PREFIX = "local-dir:"  # open_clip's prefix for a folder; other libraries take the folder path itself


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

    @property
    def is_local(self) -> bool:
        """True for a checkpoint in a local folder (tiny models, user folders) rather than on a hub."""
        return self.local_dir is not None

    @property
    def local_dir(self) -> Path | None:
        ident = self.id[len(LOCAL_PREFIX):] if self.id.startswith(LOCAL_PREFIX) else self.id
        if self.id.startswith(LOCAL_PREFIX) or self.tiny is not None or Path(ident).is_absolute() or ident.startswith("."):
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


@functools.cache
def models() -> dict[str, ModelEntry]:
    out = {}
    for key, raw in _read_yaml("models.yaml").items():
        entry = ModelEntry(key=key, **raw)
        if entry.family not in FAMILIES:
            raise ValueError(f"models.yaml: `{key}.family` is {entry.family!r}; known families: {', '.join(FAMILIES)}")
        if entry.role not in ROLES:
            raise ValueError(f"models.yaml: `{key}.role` is {entry.role!r}; known roles: {', '.join(ROLES)}")
        out[key] = entry
    return out


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
            Concept(dataset=ds, name=c["name"], anchor=c["anchor"], cls=c["class"], prompt_name=c["prompt_name"], index=i)
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
