"""Per-dataset manifests: the contract between the data stage and training / evaluation.

A manifest is one human-readable JSON file per dataset (``<prepare.manifests_dir>/<dataset>.json``):

    {"dataset": "coco", "source": "real|synthetic", "seed": 0, "image_root": "<folder images are relative to>",
     "concepts": {"cup": {"train": [IMAGE, …], "eval": [IMAGE, …]}, …},
     "counts": {"cup": {"train": 8, "eval": 10}, …},
     "meta": {…}}                       # optional: how it was built (splits, per-concept counts asked, notes)
    IMAGE = {"file": "train2017/000000000009.jpg", "width": 640, "height": 480, "label": "cup",
             "boxes": [{"concept": "cup", "bbox": [x, y, w, h]}, …]}   # + "iscrowd": true on COCO crowd regions

``label`` is the concept of the image's largest box; ``boxes`` holds every box of the dataset's selected concepts in
the image (COCO-style absolute xywh pixels), so detection can be scored on all 10 classes. COCO crowd regions are
kept, marked `iscrowd`: detection scoring ignores detections on them as COCOeval does; training and labels use only
the other boxes.

A relative ``image_root`` is relative to the manifest file's folder (so a moved checkout keeps working);
``read_manifest`` resolves it, so ``Manifest.path_of`` gives a path that works from any working directory.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from visual_words.errors import UserError
from visual_words.io import json_digest, write_text


@dataclass(frozen=True)
class Box:
    concept: str
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels
    iscrowd: bool = False  # a COCO crowd region (an ignore region for detection scoring)

    @property
    def area(self) -> float:
        return self.bbox[2] * self.bbox[3]


@dataclass(frozen=True)
class ImageRecord:
    file: str  # relative to the manifest's image_root
    width: int
    height: int
    label: str
    boxes: tuple[Box, ...] = field(default_factory=tuple)

    def boxes_of(self, concept: str) -> list[Box]:
        """The concept's object boxes (crowd regions left out: they are not one object)."""
        return [b for b in self.boxes if b.concept == concept and not b.iscrowd]

    def crowd_boxes_of(self, concept: str) -> list[Box]:
        """The concept's crowd regions (COCO `iscrowd`), which detection scoring ignores."""
        return [b for b in self.boxes if b.concept == concept and b.iscrowd]


@dataclass
class ConceptSplit:
    train: list[ImageRecord]
    eval: list[ImageRecord]


@dataclass
class Manifest:
    dataset: str
    source: str
    seed: int
    image_root: str
    concepts: dict[str, ConceptSplit]
    meta: dict = field(default_factory=dict)  # how the manifest was built (split names, counts asked, notes)

    def path_of(self, rec: ImageRecord) -> Path:
        return Path(self.image_root) / rec.file

    def counts(self) -> dict[str, dict[str, int]]:
        return {c: {"train": len(s.train), "eval": len(s.eval)} for c, s in self.concepts.items()}

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "source": self.source, "seed": self.seed, "image_root": self.image_root,
                "concepts": {c: {"train": [_rec_dict(r) for r in s.train], "eval": [_rec_dict(r) for r in s.eval]}
                             for c, s in self.concepts.items()},
                "counts": self.counts(), **({"meta": self.meta} if self.meta else {})}


def _rec_dict(r: ImageRecord) -> dict:
    d = asdict(r)
    d["boxes"] = [{"concept": b.concept, "bbox": list(b.bbox)} | ({"iscrowd": True} if b.iscrowd else {})
                  for b in r.boxes]
    return d


def _rec(d: dict) -> ImageRecord:
    return ImageRecord(file=d["file"], width=int(d["width"]), height=int(d["height"]), label=d["label"],
                       boxes=tuple(Box(b["concept"], tuple(float(x) for x in b["bbox"]), bool(b.get("iscrowd", False)))
                                   for b in d.get("boxes", [])))


def write_manifest(path: str | Path, m: Manifest) -> Path:
    """Atomic write; concepts stay in their dataset's order (registry order), not sorted; number lists (boxes) on
    one line, so the file stays short enough to read."""
    body = m.to_dict()
    text = json.dumps({**body, CONTENT_HASH: json_digest(body)}, indent=2)
    text = re.sub(r"\[\s+([-0-9.,eE\s]*?)\s+\]", lambda g: "[" + " ".join(g.group(1).split()) + "]", text)
    return write_text(path, text + "\n")


CONTENT_HASH = "content_sha256"  # sha256 of the manifest's fields (sorted-key JSON), checked by read_manifest


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: manifest not found (run `vw data prepare` / the prepare stage)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: manifest is not valid JSON ({e})") from None
    if isinstance(raw, dict) and CONTENT_HASH in raw:
        want = raw.pop(CONTENT_HASH)
        if json_digest(raw) != want:
            raise UserError(f"{path}: damaged: its content does not match the hash recorded when it was written; "
                            "re-run `vw data prepare` (the prepare stage) to rebuild it")
    try:
        root = Path(raw["image_root"])
        root = root if root.is_absolute() else Path(os.path.normpath(path.parent.absolute() / root))
        return Manifest(dataset=raw["dataset"], source=raw["source"], seed=int(raw["seed"]),
                        image_root=str(root), meta=raw.get("meta") or {},
                        concepts={c: ConceptSplit([_rec(r) for r in s["train"]], [_rec(r) for r in s["eval"]])
                                  for c, s in raw["concepts"].items()})
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: manifest is missing field {e}") from None


def manifest_path(cfg, dataset: str) -> Path:
    return cfg.path(cfg.prepare.manifests_dir) / f"{dataset}.json"


def check_manifests_cover(cfg, trials) -> None:
    """Before any training: every dataset the trials train on has a manifest holding the study's concepts (each
    trial's own, and the others its loss reads as negatives). A manifest prepared for another grid (a changed
    `study.concepts_per_dataset`, `study.datasets`) fails every trial; say so once, with the command that fixes it."""
    from visual_words import registry

    for dataset in dict.fromkeys(t.dataset for t in trials):
        path = manifest_path(cfg, dataset)
        if not path.is_file():
            raise UserError(f"{path}: manifest not found: run `vw data prepare` (the prepare stage) with the same "
                            "--profile and --set as this run first")
        have = read_manifest(path).concepts
        missing = [c.name for c in registry.study_concepts(cfg, dataset) if c.name not in have]
        if missing:
            raise UserError(f"{path}: prepared for another grid: it lacks {len(missing)} concept(s) the study trains "
                            f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}); run `vw data prepare` "
                            "(the prepare stage) with the same --profile and --set as this run first")
