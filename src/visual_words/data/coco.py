"""COCO 2017 in its released layout, read through pycocotools:

    <root>/annotations/instances_train2017.json   <root>/train2017/000000000009.jpg …
    <root>/annotations/instances_val2017.json     <root>/val2017/…

Boxes are the instances' `bbox` (absolute xywh pixels). Crowd annotations (`iscrowd: 1`) mark regions of many
objects: they are kept with `iscrowd` set, so detection scoring can treat them as COCOeval does (a detection on a
crowd region is ignored, neither a hit nor a false positive); they never label an image and never train.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from visual_words.data.index import AnnotatedImage, DatasetIndex, RawBox, require_file

SPLITS = {"train": "train2017", "val": "val2017"}  # our split -> the release's folder / annotation-file suffix


def annotation_file(root: Path, release_split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{release_split}.json"


def load_split(root: str | Path, release_split: str) -> list[AnnotatedImage]:
    """The images of one release split (e.g. `train2017`) with their boxes (crowd regions marked), in id order."""
    from pycocotools.coco import COCO

    root = Path(root)
    path = require_file(annotation_file(root, release_split), f"COCO annotation file of `{release_split}`",
                        "fetch COCO 2017 with `vw data fetch coco`, or point prepare.data_root at a COCO folder")
    coco = COCO()
    try:
        coco.dataset = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(coco.dataset, dict) or "images" not in coco.dataset or "categories" not in coco.dataset:
        raise ValueError(f"{path}: not a COCO instances file (needs `images`, `annotations`, `categories`)")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    out = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        try:
            boxes = tuple(RawBox(names[a["category_id"]], tuple(float(v) for v in a["bbox"]), bool(a.get("iscrowd", 0)))
                          for a in anns)
        except KeyError as e:
            raise ValueError(f"{path}: an annotation of image {image_id} names unknown category id {e}") from None
        out.append(AnnotatedImage(file=f"{release_split}/{info['file_name']}", width=int(info["width"]),
                                  height=int(info["height"]), boxes=boxes))
    return out


def load_coco(root: str | Path, splits: dict[str, str] | None = None) -> DatasetIndex:
    """COCO at `root`: our split name -> the release split it reads (default train2017 / val2017)."""
    root = Path(root)
    splits = SPLITS if splits is None else splits
    return DatasetIndex("coco", root, {ours: load_split(root, theirs) for ours, theirs in splits.items()})
