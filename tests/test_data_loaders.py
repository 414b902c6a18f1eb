"""Dataset loaders on the real samples in ../shared/assets and on small fixtures in each dataset's real layout.

Real samples (credits in ../shared/assets/README.md): coco128 (COCO 2017 train images + their instances JSON,
CC-BY-4.0 annotations), voc100 (PASCAL VOC 2012 XML), dreambooth (google/dreambooth, CC-BY-4.0), imagenet-samples
(one ImageNet image per concept, ImageNet terms).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from visual_words import registry
from visual_words.io import sha256_file

# ---- COCO ----------------------------------------------------------------------------------------------------------


def test_coco128_reads_every_image_and_box_with_crowd_regions_marked(shared_assets):
    from visual_words.data.coco import load_coco

    root = shared_assets / "coco128"
    index = load_coco(root, {"train": "train2017"})
    raw = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    images = index.images("train")
    assert len(images) == len(raw["images"]) == 128
    # 939 annotations, 10 of them crowd regions: kept and marked (detection scoring ignores them, as COCOeval does)
    assert sum(a["iscrowd"] for a in raw["annotations"]) == 10
    assert sum(len(im.boxes) for im in images) == 939
    assert sum(b.iscrowd for im in images for b in im.boxes) == 10
    crowded = [im for im in images if any(b.iscrowd for b in im.boxes)]
    assert all(im.label == max((b for b in im.boxes if not b.iscrowd), key=lambda b: b.area, default=None).cls
               for im in crowded if any(not b.iscrowd for b in im.boxes))  # a crowd region never labels an image
    im = next(im for im in images if im.file == "train2017/000000000009.jpg")
    assert (im.width, im.height) == (640, 480)
    assert len(im.boxes) == 8 and not any(b.iscrowd for b in im.boxes)
    assert (root / im.file).is_file()
    # the label is the class of the largest box: a bowl covering most of the picture
    assert im.label == "bowl"
    biggest = max(im.boxes, key=lambda b: b.bbox[2] * b.bbox[3])
    assert biggest.bbox == pytest.approx((1.08, 187.69, 611.59, 285.84))


def test_coco128_images_per_concept_match_the_assets_readme(shared_assets):
    """README: cup in 10 images, dog 9, cat 4 (images holding a box of the class)."""
    from visual_words.data.coco import load_coco

    images = load_coco(shared_assets / "coco128", {"train": "train2017"}).images("train")
    holding = {c: sum(any(b.cls == c and not b.iscrowd for b in im.boxes) for im in images)
               for c in ("cup", "dog", "cat")}
    assert holding == {"cup": 10, "dog": 9, "cat": 4}
    labelled = {c: sum(im.label == c for im in images) for c in ("cup", "dog", "cat")}
    assert labelled == {"cup": 1, "dog": 4, "cat": 1}  # largest box decides: most cups are small


def test_coco_missing_or_broken_annotation_file_is_named(tmp_path):
    from visual_words.data.coco import load_coco

    with pytest.raises(FileNotFoundError, match="instances_val2017.json: COCO annotation file of `val2017`"):
        load_coco(tmp_path, {"val": "val2017"})
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{not json")
    with pytest.raises(ValueError, match="instances_train2017.json: not valid JSON"):
        load_coco(tmp_path, {"train": "train2017"})
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a COCO instances file"):
        load_coco(tmp_path, {"train": "train2017"})


def test_coco_crowd_regions_reach_the_manifest_marked_and_never_label_or_train(tmp_path):
    from visual_words.data.coco import load_coco
    from visual_words.data.manifest import Box, ConceptSplit, ImageRecord, Manifest, read_manifest, write_manifest

    (tmp_path / "annotations").mkdir()
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
           "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "dog"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 90, 70], "iscrowd": 1},
                           {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 0}]}
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    (im,) = load_coco(tmp_path, {"train": "train2017"}).images("train")
    assert [(b.cls, b.iscrowd) for b in im.boxes] == [("dog", True), ("cup", False)]
    assert im.label == "cup"  # the much larger crowd region of dogs does not label the image

    rec = ImageRecord("a.jpg", 100, 80, "cup", (Box("dog", (0, 0, 90, 70), True), Box("dog", (1, 1, 5, 5))))
    m = Manifest("coco", "real", 0, str(tmp_path), {"dog": ConceptSplit([rec], [rec])})
    back = read_manifest(write_manifest(tmp_path / "m.json", m)).concepts["dog"].train[0]
    assert back == rec and '"iscrowd": true' in (tmp_path / "m.json").read_text()
    assert [b.bbox for b in back.boxes_of("dog")] == [(1, 1, 5, 5)]  # what training and the positives use
    assert [b.bbox for b in back.crowd_boxes_of("dog")] == [(0, 0, 90, 70)]  # what scoring ignores


def test_largest_box_ties_go_to_the_first_box():
    from visual_words.data.index import AnnotatedImage, RawBox

    boxes = (RawBox("b", (0, 0, 2, 3)), RawBox("a", (5, 5, 3, 2)), RawBox("c", (0, 0, 1, 1)))
    im = AnnotatedImage("a.jpg", 10, 10, boxes)
    assert im.label == "b"
    assert AnnotatedImage("x.jpg", 1, 1).label is None


# ---- PASCAL VOC ----------------------------------------------------------------------------------------------------


def test_voc100_reads_all_objects_and_converts_boxes(shared_assets):
    from visual_words.data.voc import load_voc

    index = load_voc(shared_assets / "voc100", image_sets=None)
    images = index.images("all")
    assert len(images) == 100
    assert sum(len(im.boxes) for im in images) == 273
    names = {b.cls for im in images for b in im.boxes}
    assert names == set((shared_assets / "voc100" / "voc.names").read_text().split())  # all 20 classes
    first = images[0]
    assert first.file == "JPEGImages/2007_000027.jpg" and (index.root / first.file).is_file()
    assert (first.width, first.height) == (486, 500)
    # <bndbox> 174 101 349 351 (1-based, inclusive) -> 0-based xywh
    assert first.boxes[0].cls == "person"
    assert first.boxes[0].bbox == (173.0, 100.0, 176.0, 251.0)
    # every concept's VOC class exists in the real annotations (concepts.yaml `class` = VOC XML name)
    assert {c.cls for c in registry.concepts("pascal")} <= names


def _voc_tree(src: Path, dst: Path, train: list[str], val: list[str]) -> Path:
    """A VOCdevkit/VOC2012 tree (Annotations, JPEGImages, ImageSets/Main) holding some voc100 images."""
    voc = dst / "VOCdevkit" / "VOC2012"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for i in train + val:
        shutil.copy(src / "Annotations" / f"{i}.xml", voc / "Annotations")
        (voc / "JPEGImages" / f"{i}.jpg").symlink_to(src / "JPEGImages" / f"{i}.jpg")
    (voc / "ImageSets/Main/train.txt").write_text("\n".join(train) + "\n")
    (voc / "ImageSets/Main/val.txt").write_text("\n".join(val) + "\n")
    return dst


def test_voc_split_lists_and_missing_or_broken_annotation(shared_assets, tmp_path):
    from visual_words.data.voc import load_voc

    src = shared_assets / "voc100"
    ids = sorted(p.stem for p in (src / "Annotations").glob("*.xml"))
    root = _voc_tree(src, tmp_path / "pascal", ids[:6], ids[6:10])
    index = load_voc(root)  # finds VOCdevkit/VOC2012 below the given folder
    assert index.root == root / "VOCdevkit" / "VOC2012"
    assert [Path(im.file).stem for im in index.images("train")] == ids[:6]
    assert [Path(im.file).stem for im in index.images("val")] == ids[6:10]
    with pytest.raises(FileNotFoundError, match="ImageSets/Segmentation/train.txt"):
        load_voc(root, image_sets="Segmentation")
    (index.root / "Annotations" / f"{ids[7]}.xml").unlink()
    with pytest.raises(FileNotFoundError, match=f"{ids[7]}.xml: VOC annotation file not found"):
        load_voc(root)
    (index.root / "Annotations" / f"{ids[7]}.xml").write_text("<annotation><size><width>3</width></size>")
    with pytest.raises(ValueError, match=f"{ids[7]}.xml: not valid VOC annotation XML"):
        load_voc(root)
    (index.root / "Annotations" / f"{ids[7]}.xml").write_text("<annotation><object><name>cat</name></object>"
                                                              "</annotation>")
    with pytest.raises(ValueError, match=f"{ids[7]}.xml: malformed VOC annotation"):
        load_voc(root)
    with pytest.raises(FileNotFoundError, match="no PASCAL VOC folder"):
        load_voc(tmp_path / "nowhere")


# ---- ImageNet CLS-LOC ----------------------------------------------------------------------------------------------


def _imagenet_tree(samples: Path, root: Path) -> dict:
    """An ILSVRC CLS-LOC tree in the localisation release's layout, from the real ImageNet sample images:
    each concept's image twice in train (with LOC boxes), once in val; plus a val image with two classes."""
    concepts = registry.concepts("imagenet")
    (root / "ILSVRC/Data/CLS-LOC/val").mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\n" +
                                                 "".join(f"{c.cls} {c.prompt_name}\n" for c in concepts))
    train_rows, val_rows, sizes = [], [], {}
    from PIL import Image

    for k, c in enumerate(concepts):
        sample = next(samples.glob(f"{c.cls}_*.JPEG"))
        w, h = Image.open(sample).size
        sizes[c.cls] = (w, h)
        folder = root / "ILSVRC/Data/CLS-LOC/train" / c.cls
        folder.mkdir(parents=True)
        for n in (1, 2):
            shutil.copy(sample, folder / f"{c.cls}_{n}.JPEG")
            train_rows.append([f"{c.cls}_{n}", f"{c.cls} 10 20 {w // 2} {h // 2} "])
        vid = f"ILSVRC2012_val_{k + 1:08d}"
        shutil.copy(sample, root / "ILSVRC/Data/CLS-LOC/val" / f"{vid}.JPEG")
        val_rows.append([vid, f"{c.cls} 0 0 {w - 1} {h - 1} n01440764 5 5 50 50"])
    # a val image whose largest box is a tench: its small strawberry box must not make it a strawberry image
    shutil.copy(next(samples.glob("n07745940_*.JPEG")), root / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000099.JPEG")
    val_rows.append(["ILSVRC2012_val_00000099", "n01440764 0 0 300 300 n07745940 1 1 30 30"])
    for name, rows in (("LOC_train_solution.csv", train_rows), ("LOC_val_solution.csv", val_rows)):
        with open(root / name, "w", newline="") as f:
            csv.writer(f).writerows([["ImageId", "PredictionString"], *rows])
    return sizes


def test_imagenet_cls_loc_layout(shared_assets, tmp_path):
    from visual_words.data.imagenet import load_imagenet

    sizes = _imagenet_tree(shared_assets / "imagenet-samples", tmp_path / "ilsvrc")
    wnids = {c.cls for c in registry.concepts("imagenet")}
    index = load_imagenet(tmp_path / "ilsvrc", wnids)
    train, val = index.images("train"), index.images("val")
    assert len(train) == 20 and len(val) == 11
    first = next(im for im in train if im.file.endswith("n02051845_1.JPEG"))
    assert first.file == "ILSVRC/Data/CLS-LOC/train/n02051845/n02051845_1.JPEG"
    w, h = sizes["n02051845"]
    assert (first.width, first.height) == (w, h)  # read from the image header
    assert first.boxes[0].bbox == (10.0, 20.0, w // 2 - 10.0, h // 2 - 20.0)  # xmin ymin xmax ymax -> xywh
    by = index.by_label("val")
    assert "n01440764" in by and len(by["n07745940"]) == 1  # the tench-dominated image is not a strawberry image
    assert {im.label for im in train} == wnids
    only = load_imagenet(tmp_path / "ilsvrc", {"n02051845"})
    assert len(only.images("train")) == 2


def test_imagenet_missing_path_or_files_gives_clear_errors(shared_assets, tmp_path):
    from visual_words.data.imagenet import load_imagenet

    with pytest.raises(FileNotFoundError, match="set prepare.imagenet_root"):
        load_imagenet("")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_imagenet(tmp_path / "no-imagenet")
    _imagenet_tree(shared_assets / "imagenet-samples", tmp_path / "ilsvrc")
    with pytest.raises(ValueError, match="n99999999 is not an ImageNet class"):
        load_imagenet(tmp_path / "ilsvrc", {"n99999999"})
    (tmp_path / "ilsvrc/ILSVRC/Data/CLS-LOC/train/n02051845/n02051845_2.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match="n02051845_2.JPEG: image file not found"):
        load_imagenet(tmp_path / "ilsvrc", {"n02051845"})
    (tmp_path / "ilsvrc/LOC_val_solution.csv").write_text("ImageId,PredictionString\nX,n02051845 1 2 3\n")
    with pytest.raises(ValueError, match="LOC_val_solution.csv:2: PredictionString must be groups"):
        load_imagenet(tmp_path / "ilsvrc", {"n02051845"}, splits=("val",))
    (tmp_path / "ilsvrc/LOC_val_solution.csv").unlink()
    with pytest.raises(FileNotFoundError, match="LOC_val_solution.csv: ImageNet val box file not found"):
        load_imagenet(tmp_path / "ilsvrc", {"n02051845"}, splits=("val",))


# ---- DreamBooth ----------------------------------------------------------------------------------------------------


def _box_file(root: Path, out: Path, subjects: list[str], checked: bool = True) -> Path:
    """A box file in the documented format for the real photos (a centred box; what a reviewer would write)."""
    from PIL import Image

    from visual_words.data import dreambooth as db

    data = db.empty_box_file({"model": "test"})
    for s in subjects:
        for p in db.subject_images(root, s):
            w, h = Image.open(p).size
            data["images"][f"{s}/{p.name}"] = {"subject": s, "query": s, "sha256": sha256_file(p), "width": w,
                                               "height": h, "boxes": [{"bbox": [w / 4, h / 4, w / 2, h / 2],
                                                                       "score": 0.9}],
                                               "checked": checked, "note": ""}
    db.write_box_file(out, data)
    return out


def test_dreambooth_subjects_classes_and_box_file(shared_assets, tmp_path):
    from visual_words.data import dreambooth as db

    root = shared_assets / "dreambooth"
    classes = db.read_classes(root)
    assert classes["cat2"] == "cat" and classes["duck_toy"] == "toy" and classes["pink_sunglasses"] == "glasses"
    assert len(classes) == 30  # the public dataset's 30 subjects (the folder holds the paper's 10)
    subjects = [c.cls for c in registry.concepts("dreambooth")]
    counts = {s: len(db.subject_images(root, s)) for s in subjects}
    assert all(4 <= n <= 6 for n in counts.values()) and sum(counts.values()) == 53
    boxes = _box_file(root, tmp_path / "boxes.json", subjects[:2])
    index = db.load_dreambooth(root, boxes, subjects[:2])
    images = index.images("all")
    assert len(images) == counts["cat2"] + counts["vase"]
    assert {im.label for im in images} == {"cat2", "vase"}
    cat = next(im for im in images if im.file == "cat2/00.jpg")
    assert (cat.width, cat.height) == (1920, 1920) and cat.boxes[0].bbox == (480.0, 480.0, 960.0, 960.0)


def test_dreambooth_box_file_problems_name_the_photo(shared_assets, tmp_path):
    from visual_words.data import dreambooth as db

    root = shared_assets / "dreambooth"
    with pytest.raises(FileNotFoundError, match="boxes.json: DreamBooth box file not found"):
        db.load_dreambooth(root, tmp_path / "boxes.json", ["cat2"])
    boxes = _box_file(root, tmp_path / "boxes.json", ["cat2"], checked=False)
    with pytest.raises(ValueError, match=r"5 DreamBooth box\(es\) not checked by hand yet \(cat2/00.jpg"):
        db.load_dreambooth(root, boxes, ["cat2"])
    assert len(db.load_dreambooth(root, boxes, ["cat2"], allow_unchecked=True).images("all")) == 5
    with pytest.raises(ValueError, match="no box for DreamBooth photo .*vase/00.jpg"):
        db.load_dreambooth(root, boxes, ["cat2", "vase"], allow_unchecked=True)
    data = json.loads(boxes.read_text())
    data["images"]["cat2/01.jpg"]["sha256"] = "0" * 64
    boxes.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="cat2/01.jpg: the photo differs"):
        db.load_dreambooth(root, boxes, ["cat2"], allow_unchecked=True)
    data["images"]["cat2/01.jpg"]["boxes"] = [{"bbox": [1, 2, 0, 4]}]
    boxes.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="entry `cat2/01.jpg` is malformed"):
        db.read_box_file(boxes)
    boxes.write_text(json.dumps({"images": {}}))
    with pytest.raises(ValueError, match="not a DreamBooth box file"):
        db.read_box_file(boxes)


def test_shipped_box_file_is_valid_and_waits_for_review(repo_root):
    """data/dreambooth_boxes.json ships in the documented format, empty until someone runs and checks the tool."""
    from visual_words.data import dreambooth as db

    data = db.read_box_file(repo_root / "data" / "dreambooth_boxes.json")
    assert data["format"] == db.FORMAT
