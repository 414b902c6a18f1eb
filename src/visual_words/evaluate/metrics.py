"""The three task metrics on precomputed features (docs/design.md D6, docs/paper.md §6). No model code here: the runner
feeds them what the adapters and the feature cache produce, so each metric is testable on constructed inputs.

- classification accuracy: 10-way zero-shot over the dataset's concepts, held-out images of the target concept,
  the target's class prompt carrying the token (one text feature per class, the target's per trial);
- generation accuracy: the evaluator CLIP classifies each generated image among the dataset's concept names;
  the share classified as the target;
- detection AP: OWL's per-patch class scores for the token query, boxes in image pixels, the target class's
  COCO AP@[.50:.95] and AP50 by pycocotools (``visual_words.evaluate.coco``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from visual_words.evaluate.coco import coco_summary

# ---------------------------------------------------------------------------------------------------------------
# Zero-shot classification (classification and generation accuracy)


def zero_shot_predictions(image_feats: torch.Tensor, class_feats: torch.Tensor) -> torch.Tensor:
    """Predicted class of each image: argmax of the cosine similarity (features are L2-normalised here, so the
    argmax is the same whatever scale the model's logit head would apply).

    ``image_feats`` ``[..., N, D]``; ``class_feats`` ``[C, D]`` or per trial ``[K, C, D]`` (then ``image_feats`` is
    ``[N, D]`` or ``[K, N, D]``). Returns ``[..., N]`` class indices.
    """
    img = torch.nn.functional.normalize(image_feats.to(torch.float32), dim=-1)
    cls = torch.nn.functional.normalize(class_feats.to(torch.float32), dim=-1)
    logits = img @ cls.transpose(-1, -2)
    return logits.argmax(-1)


def share_of(predictions: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """Share of predictions equal to ``target`` along the last axis (``target`` per leading index, or one int)."""
    target = torch.as_tensor(target, device=predictions.device)
    if target.ndim:
        target = target.reshape(*target.shape, *([1] * (predictions.ndim - target.ndim)))
    return (predictions == target).to(torch.float64).mean(-1)


def classification_accuracy(image_feats: torch.Tensor, class_feats: torch.Tensor, target_index: int) -> torch.Tensor:
    """Zero-shot accuracy on images of the target concept: ``image_feats [N, D]`` of the target's held-out
    images, ``class_feats [K, C, D]`` (row ``target_index`` carries trial k's token) or ``[C, D]``.
    Returns ``[K]`` (or a scalar tensor)."""
    return share_of(zero_shot_predictions(image_feats, class_feats), target_index)


def generation_accuracy(image_feats: torch.Tensor, label_feats: torch.Tensor, target_index: int | torch.Tensor
                        ) -> torch.Tensor:
    """Share of generated images the evaluator classifies as the target: ``image_feats [K, M, D]`` (M images of
    each of K trials) or ``[M, D]``, ``label_feats [C, D]`` ("a photo of {name}" for the C concepts).
    Returns ``[K]`` (or a scalar tensor)."""
    return share_of(zero_shot_predictions(image_feats, label_feats), target_index)


# ---------------------------------------------------------------------------------------------------------------
# Detection


@dataclass(frozen=True)
class GroundTruthImage:
    """One held-out image for detection scoring: its pixel size, the target concept's boxes (xywh px) and its crowd
    regions (COCO `iscrowd`: detections on them are ignored, as COCOeval does)."""

    image_id: int
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]
    crowd: tuple[tuple[float, float, float, float], ...] = ()


def owl_scores(class_embeds: torch.Tensor, logit_shift: torch.Tensor, logit_scale: torch.Tensor,
               queries: torch.Tensor) -> torch.Tensor:
    """OWL's class head for given queries: ``sigmoid((cos(class_embed, query) + shift) * scale)``.

    ``class_embeds [N, P, D]`` (L2-normalised), ``logit_shift``/``logit_scale`` ``[N, P]``, ``queries [K, D]``
    → ``[K, N, P]``. The query is normalised here as OWL's class head does.
    """
    q = torch.nn.functional.normalize(queries.to(torch.float32), dim=-1)
    cos = torch.einsum("npd,kd->knp", class_embeds.to(torch.float32), q)
    return torch.sigmoid((cos + logit_shift.to(torch.float32)) * logit_scale.to(torch.float32))


def cxcywh_to_pixel_xywh(boxes: torch.Tensor, width: int, height: int, padded_square: bool = True) -> torch.Tensor:
    """Normalised ``[cx, cy, w, h]`` boxes → pixel ``[x, y, w, h]`` clipped to the image.

    OWLv2 pads an image to a square at the bottom/right before resizing, so its box coordinates are fractions of
    ``max(width, height)`` on both axes (``padded_square``); OWL-ViT v1 stretches the image, so fractions of
    ``width``/``height``.
    """
    sx, sy = (max(width, height),) * 2 if padded_square else (width, height)
    cx, cy, w, h = boxes.to(torch.float64).unbind(-1)
    x0 = ((cx - w / 2) * sx).clamp(0, width)
    y0 = ((cy - h / 2) * sy).clamp(0, height)
    x1 = ((cx + w / 2) * sx).clamp(0, width)
    y1 = ((cy + h / 2) * sy).clamp(0, height)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], -1)


def detections_for_query(scores: torch.Tensor, boxes_px: Sequence[torch.Tensor], image_ids: Sequence[int],
                         max_dets: int = 100, score_threshold: float = 0.0, category_id: int = 1,
                         nms_iou: float = 1.0) -> list[dict]:
    """COCO result dicts from one query's per-patch ``scores [N, P]`` and pixel boxes (a ``[P, 4]`` per image):
    each image's ``max_dets`` best patches above ``score_threshold`` (COCOeval keeps at most 100 per image anyway).
    With ``nms_iou`` < 1, a box overlapping a better-scoring one of the same image by IoU > ``nms_iou`` is dropped
    first (greedy NMS, torchvision); 1.0 keeps every patch, as OWLv2's text-query post-processing does."""
    from torchvision.ops import box_convert, nms

    out = []
    for n, img_id in enumerate(image_ids):
        s = scores[n]
        if nms_iou < 1.0:
            keep = nms(box_convert(boxes_px[n].to(torch.float32), "xywh", "xyxy"), s.to(torch.float32), nms_iou)
        else:
            keep = torch.arange(s.numel())
        k = min(max_dets, keep.numel())
        top = torch.topk(s[keep], k)
        for score, p in zip(top.values.tolist(), keep[top.indices].tolist()):
            if score < score_threshold:
                break
            out.append({"image_id": int(img_id), "category_id": category_id,
                        "bbox": [float(v) for v in boxes_px[n][p].tolist()], "score": float(score)})
    return out


def ground_truth_for(images: Sequence[GroundTruthImage], category_id: int = 1, name: str = "target") -> dict:
    """A COCO ground-truth dict with one category (the target) and its boxes on every image (images without it
    are negatives: their detections are false positives); crowd regions go in with ``iscrowd: 1``, which COCOeval
    matches last and ignores (a detection inside one is neither a hit nor a false positive)."""
    anns = []
    for img in images:
        for boxes, crowd in ((img.boxes, 0), (img.crowd, 1)):
            for b in boxes:
                anns.append({"id": len(anns) + 1, "image_id": img.image_id, "category_id": category_id,
                             "bbox": [float(v) for v in b], "area": float(b[2] * b[3]), "iscrowd": crowd})
    return {"images": [{"id": i.image_id, "width": i.width, "height": i.height} for i in images],
            "annotations": anns, "categories": [{"id": category_id, "name": name}]}


def detection_ap(ground_truth: dict, detections: list[dict], category_id: int = 1) -> dict[str, float]:
    """The target class's COCO AP@[.50:.95] (``map``) and AP50 by pycocotools; NaN when the ground truth holds no
    box of the class (pycocotools' -1: AP is undefined there)."""
    s = coco_summary(ground_truth, detections, cat_ids=[category_id])
    undefined = lambda v: float("nan") if v == -1.0 else v  # noqa: E731
    return {"map": undefined(s["AP"]), "ap50": undefined(s["AP50"])}
