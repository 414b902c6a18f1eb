"""The pieces each trial's loss is built from: OWL positives (D4), boxes in OWL's frame, the signed-cosine direction."""

import torch

from visual_words.data.manifest import Box, ImageRecord
from visual_words.train.targets import gt_boxes_normalised, owl_positive_mask, signed_cosine_direction


def test_owl_positives_are_iou_half_or_the_best_match():
    gt = torch.tensor([[0.1, 0.1, 0.5, 0.5]])  # xyxy
    pred = torch.tensor([
        [0.3, 0.3, 0.4, 0.4],  # the same box (cxcywh): IoU 1
        [0.32, 0.3, 0.4, 0.4],  # shifted a little: IoU ≈ 0.9
        [0.8, 0.8, 0.2, 0.2],  # elsewhere: IoU 0
        [0.3, 0.3, 0.8, 0.8],  # 4× the area around it: IoU 0.25
    ])
    assert owl_positive_mask(pred, gt).tolist() == [True, True, False, False]
    # no proposal reaches 0.5: the best one is still a positive
    assert owl_positive_mask(pred[2:], gt).tolist() == [False, True]
    assert owl_positive_mask(pred, torch.zeros(0, 4)).tolist() == [False] * 4


def test_gt_boxes_follow_owls_padding():
    rec = ImageRecord("a.jpg", width=200, height=100, label="cup",
                      boxes=(Box("cup", (20.0, 10.0, 100.0, 50.0)), Box("dog", (0.0, 0.0, 5.0, 5.0))))
    # OWLv2 pads to 200 × 200 at the bottom: both axes scale by 200
    torch.testing.assert_close(gt_boxes_normalised(rec, "cup", 100, 200), torch.tensor([[0.1, 0.05, 0.6, 0.3]]))
    # OWL-ViT v1 stretches: x by the width, y by the height
    torch.testing.assert_close(gt_boxes_normalised(rec, "cup", 100, 200, padded=False),
                               torch.tensor([[0.1, 0.1, 0.6, 0.6]]))
    assert gt_boxes_normalised(rec, "cat", 100, 200).shape == (0, 4)


def test_signed_cosine_direction_without_negatives_is_minus_the_positive_mean():
    pos = torch.eye(3)[:2]
    torch.testing.assert_close(signed_cosine_direction(pos, torch.zeros(0, 3)), torch.tensor([-0.5, -0.5, 0.0]))


def test_generation_batches_mix_in_the_mirror_latents_with_flip_augment(tiny_sd):
    from visual_words.models.adapters import adapter_for
    from visual_words.train.targets import TrialData, draw_batch

    d = TrialData("generation", latents=torch.zeros(3, 4, 2, 2), flipped=torch.ones(3, 4, 2, 2))
    batch = draw_batch(adapter_for(tiny_sd), [d], [torch.Generator().manual_seed(0)], 64)
    per_sample = batch["latents"][0].flatten(1)
    assert set(per_sample.mean(1).tolist()) == {0.0, 1.0}  # whole samples, either the image or its mirror
    assert batch["noise"].shape == batch["latents"].shape and batch["timesteps"].shape == (1, 64)
