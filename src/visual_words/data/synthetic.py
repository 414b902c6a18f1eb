"""The smoke profile's image set, built at run time with no download and no ../shared: every dataset laid out in its
REAL on-disk format (COCO instances JSON, VOC XML + ImageSets, ImageNet LOC CSVs + CLS-LOC folders, DreamBooth subject
folders + box file), so `vw data prepare` reads it with the very loaders the paper profile uses.

Each image is drawn by this script with known boxes: a background (a tinted crop of one of scikit-image's bundled
grey-level photos: brick, grass, gravel, …), the concept's object (one of scikit-image's bundled colour photos —
Chelsea the cat, a coffee cup, an astronaut, a rocket, … — cut to an ellipse, rectangle or triangle with a coloured
outline, one look per concept) and, in half of the images, a smaller object of another concept. A few
"decoy" images per split are labelled with a class that is not one of the concepts (the largest box) while also
holding a small box of a concept: the largest-box rule must leave them out.

It proves the machinery, not the science: the tiny models see distinct, repeatable objects, nothing more.
Everything is seeded, so every machine draws the same pixels and the feature caches stay valid between runs.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visual_words import registry
from visual_words.data import dreambooth as db
from visual_words.io import disk_full_names, sha256_file

VERSION = 1  # bump when the drawing changes: the marker then no longer matches and the set is rebuilt
MARKER = ".synthetic.json"
# scikit-image's bundled colour photos (no download); a concept whose name matches gets its own photo
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "colorwheel", "stereo_motorcycle", "hubble_deep_field",
          "immunohistochemistry", "retina", "logo")
PHOTO_FOR = {"cat": "chelsea", "cat2": "chelsea", "cup": "coffee", "person": "astronaut", "airplane": "rocket"}
TEXTURES = ("brick", "grass", "gravel", "camera", "moon", "coins", "page", "text")
COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))
DECOY = {"coco": "person", "pascal": "chair", "imagenet": "n01440764"}  # a class outside each dataset's 10 concepts
DECOY_NAMES = {"n01440764": "tench, Tinca tinca"}
DECOYS_PER_SPLIT = 2


@dataclass
class Drawn:
    name: str  # file name stem chosen by the layout writer
    image: Image.Image
    boxes: list[tuple[str, tuple[int, int, int, int]]]  # (class, (x, y, w, h)), largest first


@functools.cache
def _photo(name: str) -> np.ndarray:
    import skimage.data

    im = getattr(skimage.data, name)()
    im = im[0] if isinstance(im, tuple) else im  # stereo_motorcycle returns (left, right, disparity)
    im = np.asarray(im)
    if im.ndim == 2:
        im = np.stack([im] * 3, -1)
    return im[..., :3].astype(np.uint8)


def _texture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    tex = _photo(TEXTURES[int(rng.integers(len(TEXTURES)))])[..., 0]
    y, x = (int(rng.integers(0, s - 64)) for s in tex.shape[:2])
    crop = Image.fromarray(tex[y : y + 64, x : x + 64]).resize((w, h), Image.BILINEAR)
    tint = rng.integers(40, 255, 3)
    arr = np.asarray(crop, dtype=np.float32)[..., None] / 255.0 * tint[None, None, :]
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def _draw_object(canvas: Image.Image, look: int, photo: str, box: tuple[int, int, int, int]) -> None:
    x, y, w, h = box
    sprite = Image.fromarray(_photo(photo)).resize((w, h), Image.BILINEAR)
    mask = Image.new("L", (w, h), 0)
    md = ImageDraw.Draw(mask)
    shape = look % 3
    if shape == 0:
        md.ellipse((0, 0, w - 1, h - 1), fill=255)
    elif shape == 1:
        md.rectangle((0, 0, w - 1, h - 1), fill=255)
    else:
        md.polygon([(w // 2, 0), (w - 1, h - 1), (0, h - 1)], fill=255)
    canvas.paste(sprite, (x, y), mask)
    d = ImageDraw.Draw(canvas)
    colour = COLOURS[look % len(COLOURS)]
    if shape == 0:
        d.ellipse((x, y, x + w - 1, y + h - 1), outline=colour, width=2)
    elif shape == 1:
        d.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=2)
    else:
        d.polygon([(x + w // 2, y), (x + w - 1, y + h - 1), (x, y + h - 1)], outline=colour, width=2)


def _box(rng: np.random.Generator, w: int, h: int, lo: float, hi: float) -> tuple[int, int, int, int]:
    bw, bh = (max(4, int(s * rng.uniform(lo, hi))) for s in (w, h))
    return int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1)), bw, bh


def draw_image(rng: np.random.Generator, size: int, main: tuple[str, int, str],
               other: tuple[str, int, str] | None) -> tuple[Image.Image, list]:
    """One image: background + the main object (largest) + maybe a smaller other one. main/other = (class, look,
    photo). Returns the image and its boxes [(class, (x, y, w, h))], largest first."""
    w, h = [(size, size), (size, size * 3 // 4), (size * 3 // 4, size)][int(rng.integers(3))]
    canvas = _texture(rng, w, h)
    boxes = [(main[0], _box(rng, w, h, 0.5, 0.8))]
    if other is not None:
        boxes.append((other[0], _box(rng, w, h, 0.18, 0.3)))
    for (cls, look, photo), (_, box) in reversed(list(zip([main, other], boxes))):  # small object drawn last (on top)
        _draw_object(canvas, look, photo, box)
    return canvas, boxes


def _looks(dataset: str) -> list[tuple[str, int, str]]:
    """(class, look, photo) of each of the dataset's concepts, in registry order; no two concepts share a photo."""
    concepts = registry.concepts(dataset)
    named = {c.name: PHOTO_FOR[c.name] for c in concepts if c.name in PHOTO_FOR}
    spare = iter([p for p in PHOTOS if p not in named.values()] * 2)
    return [(c.cls, i, named.get(c.name) or next(spare)) for i, c in enumerate(concepts)]


def draw_split(dataset: str, split: str, per_concept: int, size: int, seed: int, decoys: int) -> list[Drawn]:
    looks = _looks(dataset)
    out = []
    for i, main in enumerate(looks):
        for k in range(per_concept):
            rng = np.random.default_rng([seed, i, k, *map(ord, f"{dataset}/{split}")])
            other = looks[int(rng.integers(len(looks)))] if rng.random() < 0.5 else None
            other = None if other is not None and other[0] == main[0] else other
            image, boxes = draw_image(rng, size, main, other)
            out.append(Drawn(f"{i:02d}{k:03d}", image, boxes))
    if dataset in DECOY:
        for k in range(decoys):
            rng = np.random.default_rng([seed, 99, k, *map(ord, f"{dataset}/{split}/decoy")])
            decoy = (DECOY[dataset], len(looks), PHOTOS[len(looks) % len(PHOTOS)])
            image, boxes = draw_image(rng, size, decoy, looks[k % len(looks)])
            out.append(Drawn(f"99{k:03d}", image, boxes))
    return out


def _jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=95)


# ---- writers: one per dataset, each in the dataset's released layout ------------------------------------------


def write_coco(out: Path, splits: dict[str, list[Drawn]]) -> None:
    classes = [c.cls for c in registry.concepts("coco")] + [DECOY["coco"]]
    cat_id = {name: i + 1 for i, name in enumerate(classes)}
    image_id, ann_id = 0, 0
    for split, drawn in splits.items():
        release = f"{split}2017"
        images, anns = [], []
        for d in drawn:
            image_id += 1
            name = f"{image_id:012d}.jpg"
            _jpeg(d.image, out / release / name)
            images.append({"id": image_id, "file_name": name, "width": d.image.width, "height": d.image.height,
                           "license": 0})
            for cls, (x, y, w, h) in d.boxes:
                ann_id += 1
                polygon = [[x, y, x + w, y, x + w, y + h, x, y + h]]
                anns.append({"id": ann_id, "image_id": image_id, "category_id": cat_id[cls], "iscrowd": 0,
                             "bbox": [x, y, w, h], "area": w * h, "segmentation": polygon})
        doc = {"info": {"description": "visual-words synthetic smoke set (COCO 2017 layout)", "version": str(VERSION)},
               "licenses": [{"id": 0, "name": "drawn by visual_words.data.synthetic from scikit-image sample photos"}],
               "categories": [{"id": i, "name": n, "supercategory": "synthetic"} for n, i in cat_id.items()],
               "images": images, "annotations": anns}
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"instances_{release}.json").write_text(json.dumps(doc))


def write_voc(out: Path, splits: dict[str, list[Drawn]]) -> None:
    voc = out / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    n = 0
    for split, drawn in splits.items():
        ids = []
        for d in drawn:
            n += 1
            stem = f"2012_{n:06d}"
            ids.append(stem)
            _jpeg(d.image, voc / "JPEGImages" / f"{stem}.jpg")
            root = ET.Element("annotation")
            ET.SubElement(root, "folder").text = "VOC2012"
            ET.SubElement(root, "filename").text = f"{stem}.jpg"
            size = ET.SubElement(root, "size")
            for k, v in (("width", d.image.width), ("height", d.image.height), ("depth", 3)):
                ET.SubElement(size, k).text = str(v)
            for cls, (x, y, w, h) in d.boxes:  # VOC: 1-based inclusive pixel indices
                obj = ET.SubElement(root, "object")
                ET.SubElement(obj, "name").text = cls
                ET.SubElement(obj, "difficult").text = "0"
                bb = ET.SubElement(obj, "bndbox")
                for k, v in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
                    ET.SubElement(bb, k).text = str(v)
            ET.ElementTree(root).write(voc / "Annotations" / f"{stem}.xml")
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def write_imagenet(out: Path, splits: dict[str, list[Drawn]]) -> None:
    concepts = registry.concepts("imagenet")
    names = {c.cls: c.prompt_name for c in concepts} | DECOY_NAMES
    (out / "LOC_synset_mapping.txt").parent.mkdir(parents=True, exist_ok=True)
    (out / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in sorted(names.items())))
    val_n = 0
    for split, drawn in splits.items():
        rows = []
        for k, d in enumerate(drawn):
            wnid = d.boxes[0][0]
            if split == "train":
                image_id = f"{wnid}_{k}"
                path = out / "ILSVRC/Data/CLS-LOC/train" / wnid / f"{image_id}.JPEG"
            else:
                val_n += 1
                image_id = f"ILSVRC2012_val_{val_n:08d}"
                path = out / "ILSVRC/Data/CLS-LOC/val" / f"{image_id}.JPEG"
            _jpeg(d.image, path)
            rows.append([image_id, " ".join(f"{c} {x} {y} {x + w} {y + h}" for c, (x, y, w, h) in d.boxes) + " "])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([["ImageId", "PredictionString"], *rows])
        (out / f"LOC_{split}_solution.csv").write_text(buf.getvalue())


def write_dreambooth(out: Path, photos: list[Drawn]) -> None:
    """Subject folders + prompts_and_classes.txt + a box file whose boxes are the drawn ones (checked: they are
    known exactly, no detector involved)."""
    concepts = registry.concepts("dreambooth")
    (out / db.CLASSES_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out / db.CLASSES_FILE).write_text("Classes\n\nsubject_name,class\n" +
                                       "".join(f"{c.cls},{c.prompt_name}\n" for c in concepts) + "\nPrompts\n")
    boxes = db.empty_box_file({"model": "none: boxes drawn by visual_words.data.synthetic"})
    counters: dict[str, int] = {}
    for d in photos:
        subject = d.boxes[0][0]
        k = counters[subject] = counters.get(subject, -1) + 1
        key = f"{subject}/{k:02d}.jpg"
        _jpeg(d.image, out / key)
        # DreamBooth photos show one subject: keep only its box (the drawn second object is scenery here)
        x, y, w, h = d.boxes[0][1]
        boxes["images"][key] = {"subject": subject, "query": subject, "sha256": sha256_file(out / key),
                                "width": d.image.width, "height": d.image.height,
                                "boxes": [{"bbox": [x, y, w, h], "score": 1.0}], "checked": True, "note": "synthetic"}
    db.write_box_file(out / "dreambooth_boxes.json", boxes)


def spec(cfg, dataset: str) -> dict:
    p = cfg.prepare
    return {"version": VERSION, "dataset": dataset, "size": p.synthetic_image_size,
            "train": p.train_per_concept + 2, "val": p.eval_per_concept + 1,
            "dreambooth": p.train_per_concept + p.dreambooth_holdout, "seed": 0}


def build(out: Path, s: dict) -> Path:
    """Draw dataset `s["dataset"]` into `out` (a fresh folder) in its real layout."""
    ds, size, seed = s["dataset"], s["size"], s["seed"]
    if ds == "dreambooth":
        drawn = draw_split(ds, "all", s["dreambooth"], size, seed, decoys=0)
        write_dreambooth(out, drawn)
    else:
        splits = {"train": draw_split(ds, "train", s["train"], size, seed, DECOYS_PER_SPLIT),
                  "val": draw_split(ds, "val", s["val"], size, seed, DECOYS_PER_SPLIT)}
        {"coco": write_coco, "pascal": write_voc, "imagenet": write_imagenet}[ds](out, splits)
    (out / MARKER).write_text(json.dumps(s, sort_keys=True))
    return out


def ensure_synthetic(cfg, dataset: str) -> Path:
    """`<prepare.synthetic_root>/<dataset>`, drawn now unless a complete set with the same spec is already there.

    Built in a temp folder and swapped in with renames, so a killed build never leaves a half set behind."""
    if dataset not in ("coco", "pascal", "imagenet", "dreambooth"):
        raise ValueError(f"no synthetic layout for dataset `{dataset}`")
    from filelock import FileLock

    s = spec(cfg, dataset)
    target = cfg.path(cfg.prepare.synthetic_root) / dataset
    marker = target / MARKER
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # concurrent prepares: one draws, the others wait and reuse it
        if marker.is_file() and json.loads(marker.read_text()) == s:
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}.", dir=target.parent))
        old = target.parent / f".{dataset}.old.{os.getpid()}"
        try:
            with disk_full_names(target):
                build(tmp, s)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    return target


def dataset_root(root: Path, dataset: str) -> Path:
    """The folder the dataset's loader reads, inside a synthetic set."""
    return root / "VOCdevkit" / "VOC2012" if dataset == "pascal" else root

