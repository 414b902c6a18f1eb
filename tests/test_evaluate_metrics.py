"""The three task metrics and the cell statistics on constructed inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from visual_words.evaluate.metrics import (
    GroundTruthImage,
    classification_accuracy,
    cxcywh_to_pixel_xywh,
    detection_ap,
    detections_for_query,
    generation_accuracy,
    ground_truth_for,
    owl_scores,
    zero_shot_predictions,
)
from visual_words.evaluate.stats import bootstrap_ci, summarize

E = torch.eye(4)


def test_classification_accuracy_counts_target_images_classified_as_the_target():
    # 4 held-out images of the target (class 0): three point mostly at e0, one at e1.
    images = torch.stack([E[0] + 0.1 * E[1], E[0] + 0.05 * E[1], E[0] + 0.2 * E[2], E[1]])
    plain = torch.stack([E[0], E[1], E[2]])  # class prompts; the target row is the token's
    assert classification_accuracy(images, plain, 0).item() == pytest.approx(0.75)
    # K = 3 trials in one call: token = e0 (right), token = e2 (the same text as class 2), token = -e0.
    per_trial = torch.stack([plain, torch.stack([E[2], E[1], E[2]]), torch.stack([-E[0], E[1], E[2]])])
    acc = classification_accuracy(images, per_trial, 0)
    assert acc.shape == (3,)
    # Trial 1: image 2 ties between the token row and class 2 (identical texts); argmax takes the first, the token.
    assert acc.tolist() == pytest.approx([0.75, 0.25, 0.0])
    # Feature scale does not matter (cosine).
    assert classification_accuracy(images * 7.0, per_trial * 0.1, 0).tolist() == acc.tolist()


def test_generation_accuracy_is_the_share_classified_as_the_target():
    labels = torch.stack([E[0], E[1], E[2]])  # "a photo of {name}" for 3 concepts
    gen = torch.stack([
        torch.stack([E[0], E[0], E[1], E[0]]),  # trial 0, target 0: 3 of 4
        torch.stack([E[2], E[2], E[2], E[2]]),  # trial 1, target 2: 4 of 4
        torch.stack([E[1], E[0], E[0], E[0]]),  # trial 2, target 2: 0 of 4
    ])
    assert generation_accuracy(gen, labels, torch.tensor([0, 2, 2])).tolist() == [0.75, 1.0, 0.0]
    assert generation_accuracy(gen[0], labels, 0).item() == 0.75  # one trial
    assert zero_shot_predictions(gen[0], labels).tolist() == [0, 0, 1, 0]


def test_owl_scores_follow_the_class_head_formula():
    torch.manual_seed(0)
    ce = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    shift, scale = torch.randn(2, 5), torch.rand(2, 5) + 0.5
    q = torch.randn(3, 8) * 4.0  # unnormalised queries: normalised inside, as OWL does
    s = owl_scores(ce, shift, scale, q)
    assert s.shape == (3, 2, 5)
    k, n, p = 2, 1, 3
    cos = float(ce[n, p] @ (q[k] / q[k].norm()))
    assert s[k, n, p].item() == pytest.approx(1 / (1 + math.exp(-(cos + shift[n, p].item()) * scale[n, p].item())),
                                              rel=1e-5)


def test_boxes_back_to_image_pixels():
    b = torch.tensor([[0.5, 0.25, 0.5, 0.5], [0.9, 0.9, 0.4, 0.4]])
    # OWLv2 pads 200 × 100 (w × h) to a 200 × 200 square: fractions of 200 on both axes, clipped to the image.
    px = cxcywh_to_pixel_xywh(b, 200, 100)
    assert px[0].tolist() == pytest.approx([50, 0, 100, 100])
    assert px[1].tolist() == pytest.approx([140, 100, 60, 0])  # entirely in the padding: clipped to nothing
    stretched = cxcywh_to_pixel_xywh(b[:1], 200, 100, padded_square=False)
    assert stretched[0].tolist() == pytest.approx([50, 0, 100, 50])


def test_detections_keep_each_images_best_patches_above_the_threshold():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.8]])
    boxes = [torch.arange(12.0).reshape(3, 4), torch.arange(12.0, 24.0).reshape(3, 4)]
    dets = detections_for_query(scores, boxes, [10, 11], max_dets=2, score_threshold=0.25)
    assert [(d["image_id"], d["score"]) for d in dets] == [(10, pytest.approx(0.9)), (10, pytest.approx(0.5)),
                                                           (11, pytest.approx(0.8)), (11, pytest.approx(0.3))]
    assert dets[0]["bbox"] == [4.0, 5.0, 6.0, 7.0] and dets[0]["category_id"] == 1


def _detection_case(query, threshold=0.0):
    """Two images of the target (one box each) and one image without it; 3 patches per image (D = 4)."""
    images = [GroundTruthImage(1, 100, 100, ((10.0, 10.0, 40.0, 40.0),)),
              GroundTruthImage(2, 100, 100, ((50.0, 50.0, 30.0, 30.0),)),
              GroundTruthImage(3, 100, 100, ())]
    # Patch 0 of images 1 and 2 sits exactly on the target box and its class embedding is e0; the rest are e1/e2.
    boxes = torch.tensor([[[0.3, 0.3, 0.4, 0.4], [0.8, 0.2, 0.2, 0.2], [0.2, 0.8, 0.2, 0.2]],
                          [[0.65, 0.65, 0.3, 0.3], [0.1, 0.1, 0.2, 0.2], [0.5, 0.1, 0.2, 0.2]],
                          [[0.5, 0.5, 0.3, 0.3], [0.2, 0.2, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2]]])
    ce = torch.stack([torch.stack([E[0], E[1], E[2]]), torch.stack([E[0], E[2], E[1]]),
                      torch.stack([E[1], E[2], E[1]])])
    scores = owl_scores(ce, torch.zeros(3, 3), torch.full((3, 3), 10.0), query[None])[0]
    px = [cxcywh_to_pixel_xywh(boxes[i], 100, 100) for i in range(3)]
    dets = detections_for_query(scores, px, [1, 2, 3], score_threshold=threshold)
    return detection_ap(ground_truth_for(images), dets)


def test_detection_ap_perfect_query_is_one_and_a_query_without_hits_is_zero():
    good = _detection_case(E[0])  # the target patches score highest everywhere
    assert good["map"] == pytest.approx(1.0) and good["ap50"] == pytest.approx(1.0)
    # A query that finds only off-target patches (the target patches stay at sigmoid(0) = 0.5, below the threshold).
    miss = _detection_case(E[1], threshold=0.9)
    assert miss["map"] == 0.0 and miss["ap50"] == 0.0
    # Without the threshold the target boxes come after the off-target ones: some AP, less than perfect.
    ranked_low = _detection_case(E[1])
    assert 0.0 < ranked_low["map"] < 1.0
    images = [GroundTruthImage(1, 100, 100, ((10.0, 10.0, 40.0, 40.0),))]
    assert detection_ap(ground_truth_for(images), [])["map"] == 0.0
    assert math.isnan(detection_ap(ground_truth_for([GroundTruthImage(1, 50, 50, ())]), [])["map"])


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def test_bootstrap_ci_is_scipys_percentile_interval_with_a_fixed_seed():
    vals = np.random.default_rng(0).binomial(1, 0.3, size=100).astype(float)
    mean, lo, hi = bootstrap_ci(vals, resamples=1000, seed=0)
    ref = scipy.stats.bootstrap((vals,), np.mean, n_resamples=1000, method="percentile",
                                rng=np.random.default_rng(0)).confidence_interval
    assert (lo, hi) == (ref.low, ref.high)
    assert mean == vals.mean() and lo < mean < hi
    assert bootstrap_ci(vals, 1000, 0) == (mean, lo, hi)  # reproducible
    assert 0.15 < hi - lo < 0.25  # ≈ ±1.96·sqrt(.3·.7/100) for a share
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    m, l1, h1 = bootstrap_ci([0.25])
    assert m == 0.25 and math.isnan(l1) and math.isnan(h1)
    assert bootstrap_ci([1.0, float("nan"), 0.0], 200, 0)[0] == 0.5
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_summarize_groups_cells():
    rows = pd.DataFrame({
        "dataset": ["coco"] * 6, "trained_task": ["generation"] * 6,
        "eval_task": ["generation"] * 3 + ["detection"] * 3, "delta": [0.5] * 6,
        "transferred": [False] * 3 + [True] * 3, "metric": ["gen_acc"] * 3 + ["map"] * 3,
        "value": [1.0, 0.0, 1.0, 0.2, 0.4, float("nan")],
    })
    s = summarize(rows, resamples=200, seed=0)
    assert len(s) == 2
    det = s[s.eval_task == "detection"].iloc[0]
    assert det.n == 2 and det["mean"] == pytest.approx(0.3) and det.metric == "map" and bool(det.transferred)
    gen = s[s.eval_task == "generation"].iloc[0]
    assert gen.n == 3 and gen["mean"] == pytest.approx(2 / 3) and gen.ci_low <= gen["mean"] <= gen.ci_high


def test_draw_boxes_puts_red_boxes_on_the_scaled_image(tmp_path):
    import torch
    from PIL import Image

    from visual_words.evaluate.tasks import draw_boxes

    Image.new("RGB", (400, 200), (0, 0, 0)).save(tmp_path / "black.png")
    im = draw_boxes(tmp_path / "black.png", torch.tensor([[100.0, 50.0, 100.0, 100.0]]), size=100)
    assert im.size == (200, 100)  # shorter side scaled to 100
    assert im.getpixel((50, 25))[0] > 200 and im.getpixel((50, 25))[1] < 50  # the box's top-left corner is red
    assert im.getpixel((75, 50)) == (0, 0, 0)  # inside the box: untouched


# ---------------------------------------------------------------------------------------------------------------
# The detection protocol (ARTIFACT.md §2): crowd regions ignored as COCOeval does; NMS only when asked for


def test_a_detection_on_a_crowd_region_is_ignored_not_a_false_positive():
    from visual_words.evaluate.metrics import GroundTruthImage, detection_ap, ground_truth_for

    box, crowd = (10.0, 10.0, 20.0, 20.0), (50.0, 50.0, 40.0, 40.0)
    dets = [{"image_id": 1, "category_id": 1, "bbox": [52.0, 52.0, 30.0, 30.0], "score": 0.95},  # inside the crowd
            {"image_id": 1, "category_id": 1, "bbox": list(box), "score": 0.9}]
    without = detection_ap(ground_truth_for([GroundTruthImage(1, 100, 100, (box,))]), dets)
    with_crowd = detection_ap(ground_truth_for([GroundTruthImage(1, 100, 100, (box,), (crowd,))]), dets)
    assert without["map"] == pytest.approx(0.5, abs=0.01)  # the crowd detection ranks first as a false positive
    assert with_crowd["map"] == pytest.approx(1.0) and with_crowd["ap50"] == pytest.approx(1.0)


def test_nms_is_a_setting_off_by_default():
    """Two overlapping boxes on a negative image outrank the hit on the positive one: without NMS both are false
    positives (AP 1/3), with NMS at IoU 0.5 the weaker is suppressed (AP 1/2)."""
    from visual_words.evaluate.metrics import GroundTruthImage, detection_ap, detections_for_query, ground_truth_for

    boxes = [torch.tensor([[10.0, 10.0, 20.0, 20.0], [60.0, 60.0, 20.0, 20.0]]),  # image 1: the hit, an empty patch
             torch.tensor([[10.0, 10.0, 30.0, 30.0], [12.0, 12.0, 30.0, 30.0]])]  # image 2: two overlapping boxes
    scores = torch.tensor([[0.9, 0.01], [0.95, 0.94]])
    gt = ground_truth_for([GroundTruthImage(1, 100, 100, ((10.0, 10.0, 20.0, 20.0),)),
                           GroundTruthImage(2, 100, 100, ())])
    plain = detections_for_query(scores, boxes, [1, 2], max_dets=1)
    default = detections_for_query(scores, boxes, [1, 2], max_dets=1, nms_iou=1.0)
    assert plain == default and len(plain) == 2  # max_dets=1 per image
    plain = detections_for_query(scores, boxes, [1, 2])
    suppressed = detections_for_query(scores, boxes, [1, 2], nms_iou=0.5)
    assert len(plain) == 4 and len(suppressed) == 3
    assert [d["score"] for d in suppressed if d["image_id"] == 2] == [pytest.approx(0.95)]
    assert detection_ap(gt, plain)["ap50"] == pytest.approx(1 / 3, abs=0.01)
    assert detection_ap(gt, suppressed)["ap50"] == pytest.approx(1 / 2, abs=0.01)
