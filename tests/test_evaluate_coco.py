"""The COCO AP wrapper equals pycocotools run by hand; perfect = 1, no hit = 0; clear errors; `vw evaluate coco-ap`."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from visual_words.cli import main
from visual_words.evaluate.coco import STAT_NAMES, CocoFormatError, coco_summary


def _reference(gt_path, dt_path, cat_ids=None):
    """pycocotools exactly as its README runs it (file paths in, stats out)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(dt_path)), "bbox")
        if cat_ids:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, map(float, ev.stats)))


def _gt():
    images = [{"id": i, "width": 200, "height": 150, "file_name": f"{i}.jpg"} for i in (1, 2, 3)]
    boxes = [(1, 1, [10, 10, 50, 40]), (1, 2, [100, 20, 60, 60]), (2, 1, [30, 30, 100, 80]), (3, 2, [5, 5, 40, 40])]
    anns = [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (i, c, b) in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "dog"}]}


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_hand_made_detections_match_pycocotools(tmp_path):
    gt = _gt()
    dets = [  # a good hit, a loose hit, a false positive, a missed-class detection, a dog hit
        {"image_id": 1, "category_id": 1, "bbox": [11, 9, 50, 42], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [40, 35, 90, 70], "score": 0.6},
        {"image_id": 3, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.8},
        {"image_id": 1, "category_id": 2, "bbox": [100, 20, 60, 60], "score": 0.7},
        {"image_id": 3, "category_id": 2, "bbox": [60, 60, 40, 40], "score": 0.95},
    ]
    gt_p, dt_p = _write(tmp_path, "gt.json", gt), _write(tmp_path, "dt.json", dets)
    for cats in (None, [1], [2]):
        ours = coco_summary(gt, dets, cat_ids=cats)
        ref = _reference(gt_p, dt_p, cats)
        assert ours == ref  # the very same numbers (same library, same inputs)
        assert list(ours) == list(STAT_NAMES)
    assert 0.0 < coco_summary(gt, dets, cat_ids=[1])["AP"] < 1.0


def test_perfect_detections_give_ap_one_and_no_hits_give_zero():
    gt = _gt()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    s = coco_summary(gt, perfect)
    assert s["AP"] == 1.0 and s["AP50"] == 1.0 and s["AP75"] == 1.0 and s["AR100"] == 1.0
    miss = [{"image_id": 1, "category_id": 1, "bbox": [150, 100, 20, 20], "score": 0.9}]
    s = coco_summary(gt, miss, cat_ids=[1])
    assert s["AP"] == 0.0 and s["AP50"] == 0.0 and s["AR100"] == 0.0
    # No detections at all is legal (pycocotools' loadRes cannot take an empty list): AP 0 where there is GT.
    s = coco_summary(gt, [], cat_ids=[1])
    assert s["AP"] == 0.0 and s["AP50"] == 0.0
    # A class without ground truth has undefined AP: pycocotools' -1 is passed through.
    gt["categories"].append({"id": 3, "name": "cat"})
    assert coco_summary(gt, miss, cat_ids=[3])["AP"] == -1.0


def test_real_coco128_annotations_match_pycocotools(shared_assets, tmp_path):
    """Hand-made detections (jittered, partly dropped and shuffled ground-truth boxes) on real COCO annotations."""
    gt_path = shared_assets / "coco128" / "annotations" / "instances_train2017.json"
    gt = json.loads(gt_path.read_text())
    rng = np.random.default_rng(0)
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = a["bbox"]
        j = rng.normal(scale=0.08, size=4) * [w, h, w, h]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                     "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)]})
    dt_path = _write(tmp_path, "dt.json", dets)
    ours = coco_summary(gt_path, dt_path)
    assert ours == _reference(gt_path, dt_path)
    assert 0.2 < ours["AP"] < 0.9


def test_bad_inputs_get_clear_errors(tmp_path):
    gt = _gt()
    with pytest.raises(CocoFormatError, match="missing list `categories`"):
        coco_summary({"images": [], "annotations": []}, [])
    with pytest.raises(CocoFormatError, match=r"annotations\[0\].bbox must be"):
        coco_summary({**gt, "annotations": [{**gt["annotations"][0], "bbox": [1, 2, 3]}]}, [])
    with pytest.raises(CocoFormatError, match=r"\[0\].image_id 99 is not an image"):
        coco_summary(gt, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}])
    with pytest.raises(CocoFormatError, match=r"\[0\] has no `score`"):
        coco_summary(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(CocoFormatError, match="looks like a ground-truth file"):
        coco_summary(gt, gt)
    with pytest.raises(CocoFormatError, match=r"category ids \[7\]"):
        coco_summary(gt, [], cat_ids=[7])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CocoFormatError, match="bad.json: detections file is not valid JSON"):
        coco_summary(gt, bad)
    with pytest.raises(FileNotFoundError, match="no such ground-truth file"):
        coco_summary(tmp_path / "nope.json", [])


def test_vw_evaluate_coco_ap_prints_the_summary_as_json(tmp_path, capsys):
    gt = _gt()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    gt_p, dt_p = _write(tmp_path, "gt.json", gt), _write(tmp_path, "dt.json", perfect)
    assert main(["evaluate", "coco-ap", str(gt_p), str(dt_p)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(STAT_NAMES) and out["AP"] == 1.0 and out["AR1"] == 1.0
    assert all(isinstance(v, float) and not math.isnan(v) for v in out.values())
    assert main(["evaluate", "coco-ap", str(gt_p), str(dt_p), "--category", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["AP"] == 1.0
    # Swapped arguments: one line naming the file and the problem, exit 2, no traceback.
    assert main(["evaluate", "coco-ap", str(dt_p), str(gt_p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vw evaluate: error:") and "dt.json" in err and len(err.strip().splitlines()) == 1
