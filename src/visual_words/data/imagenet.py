"""ImageNet ILSVRC CLS-LOC with its localisation boxes, in the layout of the official localisation release
(Kaggle `imagenet-object-localization-challenge`), supplied by the user (ImageNet's terms forbid redistribution):

    <root>/LOC_synset_mapping.txt             "n01440764 tench, Tinca tinca" (one wnid per line)
    <root>/LOC_train_solution.csv             ImageId,PredictionString
                                              n02017213_7894,"n02017213 30 68 425 350 n02017213 …"
    <root>/LOC_val_solution.csv               ILSVRC2012_val_00008726,"n02119789 255 142 454 329 …"
    <root>/ILSVRC/Data/CLS-LOC/train/<wnid>/<ImageId>.JPEG
    <root>/ILSVRC/Data/CLS-LOC/val/<ImageId>.JPEG

A PredictionString is repeated groups of `wnid xmin ymin xmax ymax` (pixels). Only the training images listed in
LOC_train_solution.csv have boxes (about 544k of 1.28M), so the train split is those; the val split is the 50k
validation images, all boxed. Image sizes are not in the CSVs and are read from the image headers (no decode), only
for the images of the requested classes.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tqdm import tqdm

from visual_words.data.index import AnnotatedImage, DatasetIndex, RawBox, image_size, require_file

SYNSETS = "LOC_synset_mapping.txt"
SOLUTIONS = {"train": "LOC_train_solution.csv", "val": "LOC_val_solution.csv"}
IMAGES = {"train": "ILSVRC/Data/CLS-LOC/train/{wnid}/{image_id}.JPEG", "val": "ILSVRC/Data/CLS-LOC/val/{image_id}.JPEG"}


def check_root(root: str | Path) -> Path:
    """The user's ImageNet root, or a clear error saying what is missing and how to supply it."""
    if not str(root):
        raise FileNotFoundError("ImageNet is not available: set prepare.imagenet_root to your ILSVRC CLS-LOC folder "
                                f"(the one holding {SYNSETS}, LOC_*_solution.csv and ILSVRC/); ImageNet's licence "
                                "means the pipeline cannot download it")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: ImageNet root (prepare.imagenet_root) does not exist")
    require_file(root / SYNSETS, "ImageNet synset mapping", "is prepare.imagenet_root the CLS-LOC release folder?")
    return root


def read_synsets(root: Path) -> dict[str, str]:
    """wnid -> its human-readable names, in the file's order (= the 1000 classes' index order)."""
    out = {}
    for line in (root / SYNSETS).read_text().splitlines():
        if line.strip():
            wnid, _, names = line.strip().partition(" ")
            out[wnid] = names
    return out


def parse_prediction_string(text: str, where: str) -> tuple[RawBox, ...]:
    parts = text.split()
    if len(parts) % 5:
        raise ValueError(f"{where}: PredictionString must be groups of `wnid xmin ymin xmax ymax`, got {text!r}")
    boxes = []
    for i in range(0, len(parts), 5):
        wnid = parts[i]
        try:
            x0, y0, x1, y1 = (float(v) for v in parts[i + 1 : i + 5])
        except ValueError:
            raise ValueError(f"{where}: non-numeric box in PredictionString {text!r}") from None
        boxes.append(RawBox(wnid, (x0, y0, x1 - x0, y1 - y0)))
    return tuple(boxes)


def load_split(root: Path, split: str, classes: set[str] | None = None) -> list[AnnotatedImage]:
    """One split's boxed images; with `classes`, only images with a box of one of them (their other boxes kept)."""
    path = require_file(root / SOLUTIONS[split], f"ImageNet {split} box file", "part of the CLS-LOC release")
    rows = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise ValueError(f"{path}: expected the header `ImageId,PredictionString`, got {header!r}")
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{n}: expected `ImageId,PredictionString`, got {row!r}")
            image_id = row[0].strip()
            if split == "train" and classes is not None and image_id.split("_")[0] not in classes:
                continue  # train ImageIds start with their wnid: skip the other 990 classes without parsing
            boxes = parse_prediction_string(row[1], f"{path}:{n}")
            if classes is None or any(b.cls in classes for b in boxes):
                rows.append((image_id, boxes))
    rows.sort()
    out = []
    for image_id, boxes in tqdm(rows, desc=f"imagenet {split} image sizes", unit="img", disable=len(rows) < 2000):
        rel = IMAGES[split].format(wnid=image_id.split("_")[0], image_id=image_id)
        w, h = image_size(root / rel)
        out.append(AnnotatedImage(file=rel, width=w, height=h, boxes=boxes))
    return out


def load_imagenet(root: str | Path, classes: set[str] | None = None, splits=("train", "val")) -> DatasetIndex:
    """ImageNet CLS-LOC at `root`, restricted to `classes` (wnids) when given; unknown wnids are an error."""
    root = check_root(root)
    if classes is not None:
        known = read_synsets(root)
        missing = sorted(set(classes) - set(known))
        if missing:
            raise ValueError(f"{root / SYNSETS}: wnid {missing[0]} is not an ImageNet class "
                             "(registry/concepts.yaml `class` must be a CLS-LOC wnid)")
    return DatasetIndex("imagenet", root, {s: load_split(root, s, classes) for s in splits})
