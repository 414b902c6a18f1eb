"""Per-concept splits (docs/design.md D7): a `DatasetIndex` + the selected concepts -> a `Manifest`.

- COCO, PASCAL VOC, ImageNet: a concept's candidates are the images of a split whose label (class of the largest
  box) is the concept's class. Training images are the first `train_per_concept` of a seeded permutation of the
  train split's candidates; held-out images the first `eval_per_concept` of a seeded permutation of the val split's.
- DreamBooth (a deviation from the paper, which does not say how it split 4–6 photos into 8 training images and a
  held-out set): per subject, a seeded permutation of its photos; the first `dreambooth_holdout` are held out, the
  next up to `train_per_concept` (all the rest, 2–4 photos) are the training images.

Each (dataset, concept, split) has its own random stream, derived from the seed and its name, so adding or removing
a concept never changes another concept's images. Candidates are sorted by file first, so the result depends only on
the seed and the data, not on the order an annotation file lists images in.

A concept with fewer candidates than asked is an error naming the concept and both counts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from visual_words.data.index import AnnotatedImage, DatasetIndex
from visual_words.data.manifest import Box, ConceptSplit, ImageRecord, Manifest
from visual_words.registry import Concept

DREAMBOOTH_NOTE = ("DreamBooth subjects have 4-6 photos: per subject, `dreambooth_holdout` photos of a seeded "
                   "permutation are held out and the rest (up to train_per_concept) are the training images "
                   "(docs/design.md D7; the paper does not say how it split them).")


def seeded_permutation(n: int, seed: int, *names: str) -> np.ndarray:
    """A permutation of range(n) from a stream named by `names` (e.g. dataset, concept, split) and the seed."""
    digest = hashlib.sha256("/".join(names).encode()).digest()
    stream = np.random.SeedSequence([seed, int.from_bytes(digest[:8], "little")])
    return np.random.default_rng(stream).permutation(n)


def pick(images: Sequence[AnnotatedImage], n: int, seed: int, *names: str) -> list[AnnotatedImage]:
    ordered = sorted(images, key=lambda im: im.file)
    return [ordered[i] for i in seeded_permutation(len(ordered), seed, *names)[:n]]


def class_map(concepts: Sequence[Concept]) -> dict[str, str]:
    """dataset class -> concept name; two concepts on one class would make labels ambiguous, so that is an error."""
    out: dict[str, str] = {}
    for c in concepts:
        if c.cls in out:
            raise ValueError(f"registry/concepts.yaml: concepts `{out[c.cls]}` and `{c.name}` of {c.dataset} share "
                             f"the class `{c.cls}`")
        out[c.cls] = c.name
    return out


def to_record(im: AnnotatedImage, classes: dict[str, str]) -> ImageRecord:
    """An image as a manifest record: label = concept of its largest box; boxes = those of the selected concepts."""
    return ImageRecord(file=im.file, width=im.width, height=im.height, label=classes[im.label],
                       boxes=tuple(Box(classes[b.cls], b.bbox, b.iscrowd) for b in im.boxes if b.cls in classes))


def _too_few(dataset: str, c: Concept, split: str, have: int, want: int, key: str, root: Path) -> ValueError:
    return ValueError(f"{dataset}: concept `{c.name}` (class `{c.cls}`) has {have} image(s) labelled with it in "
                      f"split `{split}` of {root}, fewer than the {want} asked (prepare.{key})")


def relative_root(root: Path, manifest_dir: Path | None, repo: Path | None = None) -> str:
    """The image root as the manifest stores it. Inside the checkout (`repo`): relative to the manifest's folder,
    so a moved or re-cloned checkout keeps working; outside (e.g. a user's ImageNet on another disk): absolute."""
    root = Path(os.path.abspath(root))
    if manifest_dir is None or repo is None or not root.is_relative_to(os.path.abspath(repo)):
        return str(root)
    return os.path.relpath(root, os.path.abspath(manifest_dir))


def build_manifest(index: DatasetIndex, concepts: Sequence[Concept], *, train_per_concept: int,
                   eval_per_concept: int, seed: int, source: str, manifest_dir: Path | None = None,
                   repo: Path | None = None, train_split: str = "train", eval_split: str = "val") -> Manifest:
    """COCO / VOC / ImageNet: train images from `train_split`, held-out images from `eval_split` (D7)."""
    classes = class_map(concepts)
    train_by, eval_by = index.by_label(train_split), index.by_label(eval_split)
    out = {}
    for c in concepts:
        train_c, eval_c = train_by.get(c.cls, []), eval_by.get(c.cls, [])
        if len(train_c) < train_per_concept:
            raise _too_few(index.name, c, train_split, len(train_c), train_per_concept, "train_per_concept", index.root)
        if len(eval_c) < eval_per_concept:
            raise _too_few(index.name, c, eval_split, len(eval_c), eval_per_concept, "eval_per_concept", index.root)
        train = pick(train_c, train_per_concept, seed, index.name, c.name, "train")
        held_out = pick(eval_c, eval_per_concept, seed, index.name, c.name, "eval")
        out[c.name] = ConceptSplit(train=[to_record(im, classes) for im in train],
                                   eval=[to_record(im, classes) for im in held_out])
    meta = {"train_split": train_split, "eval_split": eval_split, "train_per_concept": train_per_concept,
            "eval_per_concept": eval_per_concept, "label_rule": "class of the largest box (w*h)",
            "classes": {c.name: c.cls for c in concepts}}
    return Manifest(dataset=index.name, source=source, seed=seed,
                    image_root=relative_root(index.root, manifest_dir, repo), concepts=out, meta=meta)


def build_holdout_manifest(index: DatasetIndex, concepts: Sequence[Concept], *, holdout: int, train_per_concept: int,
                           seed: int, source: str, manifest_dir: Path | None = None, repo: Path | None = None,
                           split: str = "all") -> Manifest:
    """DreamBooth: per subject, `holdout` photos held out and up to `train_per_concept` of the rest for training."""
    classes = class_map(concepts)
    by = index.by_label(split)
    out = {}
    for c in concepts:
        photos = by.get(c.cls, [])
        if len(photos) < holdout + 1:
            raise ValueError(f"{index.name}: subject `{c.name}` has {len(photos)} photo(s) with a box in {index.root}, "
                             f"too few to hold out {holdout} (prepare.dreambooth_holdout) and train on at least one")
        order = pick(photos, len(photos), seed, index.name, c.name, "holdout")
        train = order[holdout : holdout + train_per_concept]
        out[c.name] = ConceptSplit(train=[to_record(im, classes) for im in train],
                                   eval=[to_record(im, classes) for im in order[:holdout]])
    meta = {"split": split, "dreambooth_holdout": holdout, "train_per_concept": train_per_concept,
            "label_rule": "class of the largest box (w*h)", "deviation": DREAMBOOTH_NOTE,
            "classes": {c.name: c.cls for c in concepts}}
    return Manifest(dataset=index.name, source=source, seed=seed,
                    image_root=relative_root(index.root, manifest_dir, repo), concepts=out, meta=meta)
