"""COCO-style box AP through pycocotools (the reference implementation; never re-implemented here).

``coco_summary(ground_truth, detections)`` takes a COCO ground-truth dict (or file) and a COCO results list (or
file), checks them with clear errors (pycocotools itself answers bad input with bare asserts and KeyErrors), runs
``COCOeval`` for boxes, and returns its twelve summary numbers by name. pycocotools' own progress prints are
silenced. No detections at all is a legal result (AP 0 where there is ground truth), which ``COCO.loadRes`` cannot
take, so that case gets an empty result set built the way ``loadRes`` builds one.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from visual_words.errors import UserError

# The order of COCOeval.stats for iouType="bbox" (pycocotools' summarize()).
STAT_NAMES = ("AP", "AP50", "AP75", "APsmall", "APmedium", "APlarge", "AR1", "AR10", "AR100", "ARsmall", "ARmedium",
              "ARlarge")


class CocoFormatError(UserError, ValueError):
    """A ground-truth or detections file/object that is not usable COCO; the message says where and what."""


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CocoFormatError(f"{path}: {what} file is not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise CocoFormatError(f"{path}: {what} file is not text JSON") from None


def _is_box(b: Any) -> bool:
    return isinstance(b, (list, tuple)) and len(b) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b
    ) and b[2] >= 0 and b[3] >= 0


def check_ground_truth(gt: Any, where: str = "ground truth") -> dict:
    """A COCO instances dict: ``images`` (id), ``categories`` (id), ``annotations`` (id, image_id, category_id,
    bbox [x, y, w, h], area, iscrowd). ``id``/``area``/``iscrowd`` may be left out of hand-made annotations
    (filled as 1.., w·h, 0, which is what COCO files carry)."""
    if not isinstance(gt, dict):
        raise CocoFormatError(f"{where}: must be a COCO object with images/annotations/categories, got "
                              f"{type(gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise CocoFormatError(f"{where}: missing list `{key}` (a COCO instances file has images, annotations, "
                                  "categories)")
    gt = copy.deepcopy(gt)
    img_ids = set()
    for i, img in enumerate(gt["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise CocoFormatError(f"{where}: images[{i}] has no `id`")
        if img["id"] in img_ids:
            raise CocoFormatError(f"{where}: images[{i}] repeats id {img['id']!r}; image ids must be unique")
        img_ids.add(img["id"])
    cat_ids = set()
    for i, cat in enumerate(gt["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise CocoFormatError(f"{where}: categories[{i}] has no `id`")
        if cat["id"] in cat_ids:
            raise CocoFormatError(f"{where}: categories[{i}] repeats id {cat['id']!r}; category ids must be unique")
        cat_ids.add(cat["id"])
    used_ids = set()
    for i, ann in enumerate(gt["annotations"]):
        if isinstance(ann, dict) and "id" in ann:
            # pycocotools indexes annotations by id: a repeated id silently drops boxes and changes AP
            if ann["id"] in used_ids:
                raise CocoFormatError(f"{where}: annotations[{i}] repeats id {ann['id']!r}; annotation ids must be "
                                      "unique")
            used_ids.add(ann["id"])
    next_id = max([i for i in used_ids if isinstance(i, int)], default=0) + 1
    for i, ann in enumerate(gt["annotations"]):
        if not isinstance(ann, dict):
            raise CocoFormatError(f"{where}: annotations[{i}] is not an object")
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise CocoFormatError(f"{where}: annotations[{i}] has no `{key}`")
        if not _is_box(ann["bbox"]):
            raise CocoFormatError(f"{where}: annotations[{i}].bbox must be [x, y, w, h] (finite, w, h >= 0), got "
                                  f"{ann['bbox']!r}")
        if ann["image_id"] not in img_ids:
            raise CocoFormatError(f"{where}: annotations[{i}].image_id {ann['image_id']!r} is not in `images`")
        if ann["category_id"] not in cat_ids:
            raise CocoFormatError(f"{where}: annotations[{i}].category_id {ann['category_id']!r} is not in "
                                  "`categories`")
        if "id" not in ann:
            ann["id"], next_id = next_id, next_id + 1
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    return gt


def check_detections(dets: Any, gt: dict, where: str = "detections") -> list[dict]:
    """A COCO results list: ``[{image_id, category_id, bbox [x, y, w, h], score}, …]`` on the ground truth's images."""
    if isinstance(dets, dict) and isinstance(dets.get("annotations"), list):
        raise CocoFormatError(f"{where}: looks like a ground-truth file (it has `annotations`); a COCO results file "
                              "is a list of {image_id, category_id, bbox, score}")
    if not isinstance(dets, list):
        raise CocoFormatError(f"{where}: must be a list of {{image_id, category_id, bbox, score}}, got "
                              f"{type(dets).__name__}")
    img_ids = {img["id"] for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    keys = ("image_id", "category_id", "bbox", "score")
    for i, d in enumerate(dets):
        if not isinstance(d, dict):
            raise CocoFormatError(f"{where}: [{i}] is not an object")
        for key in keys:
            if key not in d:
                raise CocoFormatError(f"{where}: [{i}] has no `{key}`")
        if d["image_id"] not in img_ids:
            raise CocoFormatError(f"{where}: [{i}].image_id {d['image_id']!r} is not an image of the ground truth")
        if d["category_id"] not in cat_ids:
            raise CocoFormatError(f"{where}: [{i}].category_id {d['category_id']!r} is not a ground-truth category")
    # Boxes and scores are checked in one pass over an array (a detections file holds 100 per image); only when
    # that fails are they checked one by one, to name the first bad entry.
    try:
        boxes = np.asarray([d["bbox"] for d in dets], dtype=np.float64).reshape(len(dets), 4)
        scores = np.asarray([d["score"] for d in dets], dtype=np.float64).reshape(len(dets))
        ok = np.isfinite(boxes).all() and (boxes[:, 2:] >= 0).all() and np.isfinite(scores).all() and \
            not any(isinstance(d["score"], bool) for d in dets)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        for i, d in enumerate(dets):
            if not _is_box(d["bbox"]):
                raise CocoFormatError(f"{where}: [{i}].bbox must be [x, y, w, h] (finite, w, h >= 0), got "
                                      f"{d['bbox']!r}")
            s = d["score"]
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise CocoFormatError(f"{where}: [{i}].score must be a finite number, got {s!r}")
    # Fresh dicts: pycocotools' loadRes writes id/area/iscrowd/segmentation into them.
    return [{"image_id": d["image_id"], "category_id": d["category_id"], "bbox": b, "score": sc}
            for d, b, sc in zip(dets, boxes.tolist(), scores.tolist())]


def coco_eval(gt: dict, dets: list[dict], cat_ids: list | None = None, img_ids: list | None = None):
    """Run pycocotools' COCOeval (bbox) on inputs from ``check_ground_truth``/``check_detections`` (fresh objects:
    pycocotools annotates the detection dicts in place); returns the evaluated ``COCOeval`` object."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes(dets)  # checked inputs are our own fresh dicts: loadRes may annotate them
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_summary(ground_truth: Any, detections: Any, cat_ids: list | None = None) -> dict[str, float]:
    """COCO's box summary (AP@[.50:.95], AP50, AP75, AP/AR by size, AR@1/10/100) by name.

    ``ground_truth``/``detections`` are objects or paths to JSON files. ``cat_ids`` restricts the evaluation to
    some categories (the target class). pycocotools writes -1 where a number is undefined (no ground truth of
    that size); it is passed through as -1.0.
    """
    gt_where, dt_where = "ground truth", "detections"
    if isinstance(ground_truth, (str, os.PathLike)):
        gt_where = str(ground_truth)
        ground_truth = _read_json(Path(ground_truth), "ground-truth")
    if isinstance(detections, (str, os.PathLike)):
        dt_where = str(detections)
        detections = _read_json(Path(detections), "detections")
    gt = check_ground_truth(ground_truth, gt_where)
    dets = check_detections(detections, gt, dt_where)
    if cat_ids is not None:
        unknown = set(cat_ids) - {c["id"] for c in gt["categories"]}
        if unknown:
            raise CocoFormatError(f"{gt_where}: category ids {sorted(unknown)} are not in `categories`")
    ev = coco_eval(gt, dets, cat_ids)
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
