"""PASCAL VOC 2012 in its released layout (the `VOCtrainval_11-May-2012.tar` tree):

    <root>/Annotations/2007_000027.xml      one XML per image: <size>, <object><name>, <bndbox>
    <root>/JPEGImages/2007_000027.jpg
    <root>/ImageSets/Main/train.txt         image ids of a split (also ImageSets/Segmentation/train.txt …)

`root` is the `VOC2012` folder; a folder holding `VOCdevkit/VOC2012` or `VOC2012` is accepted too. A split is read
from `ImageSets/<image_sets>/<split>.txt`: `Main` (every image with boxes: 5,717 train / 5,823 val) or
`Segmentation` (the 1,464 / 1,449 images DA-Fusion used). `image_sets=None` reads every XML in `Annotations/` as one
split named `all` (for partial copies without ImageSets, e.g. a sample folder).

VOC boxes are 1-based inclusive pixel indices (xmin..xmax); they become COCO-style xywh with 0-based corners, as
detectron2's VOC loader does: x = xmin − 1, w = xmax − xmin + 1.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from visual_words.data.index import AnnotatedImage, DatasetIndex, RawBox, require_file

SPLITS = ("train", "val")


def find_voc_root(root: str | Path) -> Path:
    """The VOC2012 folder itself (the one with Annotations/), given it or a folder above it."""
    root = Path(root)
    for cand in (root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if (cand / "Annotations").is_dir():
            return cand
    raise FileNotFoundError(f"{root}: no PASCAL VOC folder here (expected Annotations/ in it, or in "
                            "VOCdevkit/VOC2012/ below it; fetch it with `vw data fetch pascal`)")


def parse_annotation(path: Path) -> AnnotatedImage:
    """One VOC XML file -> the image (file relative to the VOC root) with its boxes."""
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: VOC annotation file not found") from None
    except ET.ParseError as e:
        raise ValueError(f"{path}: not valid VOC annotation XML ({e})") from None
    node = tree.getroot()
    try:
        filename = (node.findtext("filename") or f"{path.stem}.jpg").strip()
        size = node.find("size")
        width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
        boxes = []
        for obj in node.iter("object"):
            bb = obj.find("bndbox")
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append(RawBox(obj.findtext("name").strip(), (x0 - 1.0, y0 - 1.0, x1 - x0 + 1.0, y1 - y0 + 1.0)))
    except (AttributeError, TypeError, ValueError) as e:  # a missing <size>/<bndbox> field or a non-number
        raise ValueError(f"{path}: malformed VOC annotation ({type(e).__name__}: {e})") from None
    return AnnotatedImage(file=f"JPEGImages/{filename}", width=width, height=height, boxes=tuple(boxes))


def split_ids(voc_root: Path, image_sets: str, split: str) -> list[str]:
    path = require_file(voc_root / "ImageSets" / image_sets / f"{split}.txt", f"VOC split list `{split}`",
                        f"set prepare.voc_image_sets to a folder of {voc_root / 'ImageSets'} that exists")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def load_voc(root: str | Path, image_sets: str | None = "Main", splits=SPLITS) -> DatasetIndex:
    """VOC at `root`; `image_sets` names the ImageSets/ subfolder the split lists come from (None: one split `all`)."""
    voc = find_voc_root(root)
    if image_sets is None:
        files = sorted((voc / "Annotations").glob("*.xml"))
        return DatasetIndex("pascal", voc, {"all": [parse_annotation(f) for f in files]})
    return DatasetIndex("pascal", voc, {
        s: [parse_annotation(voc / "Annotations" / f"{i}.xml") for i in split_ids(voc, image_sets, s)] for s in splits
    })
