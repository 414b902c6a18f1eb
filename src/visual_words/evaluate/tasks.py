"""Evaluating K token vectors (already in the evaluated model's space) on one task, for one dataset and concept.

Text side: the model adapters (models/adapters.py) splice the vectors into prompts (K trials in one forward). Image
side: the cached image features of the held-out images (data/features.py). The numbers come from `metrics`
(pycocotools for AP).

- classification (D6): 10-way zero-shot among the dataset's concepts on the target concept's held-out images;
  class prompts "a photo of a {prompt_name}", the target's "a photo of a {}" carrying the token.
- detection (D6, ARTIFACT.md §2): OWL with the bare token as the query, on the pooled held-out images of all the
  dataset's label concepts (images without the target are where false positives come from); per-patch scores as
  OWL's class head computes them, boxes back to image pixels, optional NMS (`evaluate.detection_nms_iou`, default
  none), the target's crowd regions as COCOeval ignore regions; the target class's AP@[.50:.95] and AP50.
- generation (D6): the SD pipeline conditioned on "a photo of a {}" with the token (negative: the empty prompt),
  `images_per_trial` images per trial, seeds from the trial; the evaluator CLIP classifies each image among
  "a photo of {prompt_name}" of the dataset's concepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from visual_words import registry
from visual_words.data.manifest import ImageRecord, Manifest
from visual_words.evaluate.metrics import (
    GroundTruthImage,
    classification_accuracy,
    cxcywh_to_pixel_xywh,
    detection_ap,
    detections_for_query,
    generation_accuracy,
    ground_truth_for,
    owl_scores,
)
from visual_words.models.adapters import CLASSIFICATION_PROMPT, DETECTION_PROMPT, Adapter
from visual_words.registry import study_concepts
from visual_words.tasks import PROMPTS

GENERATION_PROMPT = PROMPTS["generation"]  # D2: the evaluation prompt of generation (registry/tasks.yaml)
EVALUATOR_PROMPT = "a photo of {}"  # docs/paper.md §6: the evaluator's label prompts ("a photo of {concept name}")
NEGATIVE_PROMPT = ""  # classifier-free guidance against the empty prompt, as diffusers does without a negative prompt


def target_index(concepts: Sequence[registry.Concept], concept: str) -> int:
    names = [c.name for c in concepts]
    if concept not in names:
        raise ValueError(f"concept `{concept}` is not among the evaluated concepts of its dataset ({', '.join(names)})")
    return names.index(concept)


def _eval_records(manifest: Manifest, concept: str) -> list[ImageRecord]:
    if concept not in manifest.concepts:
        raise ValueError(f"manifest {manifest.dataset}: no concept `{concept}` "
                         f"(it has: {', '.join(manifest.concepts)})")
    return list(manifest.concepts[concept].eval)


@torch.no_grad()
def classification(cfg, adapter: Adapter, features, manifest: Manifest, concept: str,
                   vectors: torch.Tensor) -> list[dict]:
    """Per trial ``{"value": accuracy}`` for ``vectors [K, n, d]`` of the classification model."""
    concepts = study_concepts(cfg, manifest.dataset)
    t = target_index(concepts, concept)
    records = _eval_records(manifest, concept)
    if not records:
        raise ValueError(f"manifest {manifest.dataset}: concept `{concept}` has no held-out images to classify")
    images = features.get("clip_image_embeds", adapter.loaded, manifest, records).float()
    plain = adapter.text_outputs([CLASSIFICATION_PROMPT.format(c.prompt_name) for c in concepts], None)[0].float()
    token = adapter.text_outputs([CLASSIFICATION_PROMPT], vectors)[:, 0].float()  # [K, D]
    class_feats = plain.expand(len(token), *plain.shape).clone()
    class_feats[:, t] = token
    acc = classification_accuracy(images.to(class_feats.device), class_feats, t)
    return [{"value": float(a)} for a in acc.reshape(-1).tolist()]


def _unique_records(manifest: Manifest, concepts: Sequence[registry.Concept]) -> list[ImageRecord]:
    seen, out = set(), []
    for c in concepts:
        for r in _eval_records(manifest, c.name):
            if r.file not in seen:
                seen.add(r.file)
                out.append(r)
    return out


@torch.no_grad()
def detection(cfg, adapter: Adapter, features, manifest: Manifest, concept: str, vectors: torch.Tensor,
              keep: Sequence[Path | None] = ()) -> list[dict]:
    """Per trial ``{"value": AP@[.50:.95], "ap50": AP50}`` of the target class for ``vectors [K, n, d]`` of OWL.
    With ``keep[k]`` (a path stem), trial k's best boxes on the target's first held-out image are drawn to
    ``<stem>__det.png`` (the paper's Fig. 5 rows 4-6 and Figs. 8-9: the same test image for every anchor)."""
    ec = cfg.evaluate
    concepts = study_concepts(cfg, manifest.dataset)
    target_index(concepts, concept)
    records = _unique_records(manifest, concepts)
    if not records:
        raise ValueError(f"manifest {manifest.dataset}: no held-out images to run detection on")
    feats = features.get("owl_image_embeds", adapter.loaded, manifest, records)
    padded = hasattr(adapter.loaded.model, "owlv2")  # OWLv2 pads to a square; OWL-ViT v1 stretches
    boxes_px = [cxcywh_to_pixel_xywh(feats["boxes"][i], r.width, r.height, padded) for i, r in enumerate(records)]
    gt = ground_truth_for([GroundTruthImage(i + 1, r.width, r.height, tuple(b.bbox for b in r.boxes_of(concept)),
                                            tuple(b.bbox for b in r.crowd_boxes_of(concept)))
                           for i, r in enumerate(records)], name=concept)
    ids = list(range(1, len(records) + 1))
    queries = adapter.text_outputs([DETECTION_PROMPT], vectors)[:, 0].float().cpu()  # [K, D]
    # All K queries against every patch in one product ([K, N, P]: 100 trials × 100 images × 3,600 patches = 144 MB).
    scores = owl_scores(feats["class_embeds"], feats["logit_shift"], feats["logit_scale"], queries)
    out = []
    for k in range(len(queries)):
        dets = detections_for_query(scores[k], boxes_px, ids, ec.detection_max_dets, ec.detection_score_threshold,
                                    nms_iou=ec.detection_nms_iou)
        ap = detection_ap(gt, dets)
        out.append({"value": ap["map"], "ap50": ap["ap50"]})
    shown = next((i for i, r in enumerate(records) if r.label == concept), 0)
    for k, stem in enumerate(keep):
        if stem is not None:
            top = torch.topk(scores[k][shown], min(DRAWN_BOXES, scores.shape[-1])).indices
            _save_png(draw_boxes(manifest.path_of(records[shown]), boxes_px[shown][top]), Path(f"{stem}__det.png"))
    return out


DRAWN_BOXES = 3  # boxes drawn per rendering: the query's best-scoring proposals


def draw_boxes(image_path, boxes_xywh: torch.Tensor, size: int = 256):
    """The image (shorter side `size`) with the boxes (pixel xywh) in red, strongest first and thickest."""
    from PIL import ImageDraw

    from visual_words.preprocess import load_rgb

    im = load_rgb(image_path)
    scale = size / min(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    draw = ImageDraw.Draw(im)
    for rank, (x, y, w, h) in enumerate(boxes_xywh.tolist()):
        draw.rectangle([x * scale, y * scale, (x + w) * scale, (y + h) * scale], outline=(230, 20, 20),
                       width=max(1, 4 - rank))
    return im


def generation_seed(trial_seed: int, image_index: int) -> int:
    """The seed of a trial's i-th generated image (from the trial id through Trial.seed)."""
    return (int(trial_seed) + 7919 * int(image_index)) % 2**63


@torch.no_grad()
def generate(cfg, sd_adapter: Adapter, vectors: torch.Tensor, seeds: Sequence[int]) -> list[list]:
    """``images_per_trial`` PIL images for each of the K trials (``vectors [K, n, d]`` of the SD text encoder).

    Work per UNet call: images of several trials batched together (``generation_batch_size``), each image's
    conditional and unconditional (CFG) predictions in that one batch (diffusers concatenates them when the guidance
    scale is > 1), under the UNet speed options of ``evaluate`` (models.speed: compile, attention, layout)."""
    from visual_words.models.speed import SpeedOptions, attention

    ec = cfg.evaluate
    pipe = sd_adapter.loaded.pipeline
    sd_adapter.accelerate(SpeedOptions.from_section(ec, "evaluate"))
    cond = sd_adapter.text_outputs([GENERATION_PROMPT], vectors)[:, 0]  # [K, 77, d]
    uncond = sd_adapter.text_outputs([NEGATIVE_PROMPT], None)[0, 0]  # [77, d]
    jobs = [(k, i) for k in range(len(cond)) for i in range(ec.images_per_trial)]
    images: list[list] = [[] for _ in range(len(cond))]
    for start in range(0, len(jobs), max(1, ec.generation_batch_size)):
        chunk = jobs[start : start + max(1, ec.generation_batch_size)]
        ks = torch.tensor([k for k, _ in chunk])
        gens = [torch.Generator("cpu").manual_seed(generation_seed(seeds[k], i)) for k, i in chunk]
        with attention(ec.attention, sd_adapter.device):
            out = pipe(prompt_embeds=cond[ks.to(cond.device)], negative_prompt_embeds=uncond.expand(len(chunk), -1, -1),
                       num_inference_steps=ec.inference_steps, guidance_scale=ec.guidance_scale, generator=gens,
                       output_type="pil")
        for (k, _), im in zip(chunk, out.images):
            images[k].append(im)
    return images


@torch.no_grad()
def generation(cfg, sd_adapter: Adapter, evaluator: Adapter, dataset: str, concept: str, vectors: torch.Tensor,
               seeds: Sequence[int], keep: Sequence[Path | None] = ()) -> list[dict]:
    """Per trial ``{"value": share of its images the evaluator classifies as the target}``; the first
    ``keep_images_per_trial`` images of trial k are written to ``keep[k]`` (a path stem; ``None`` = keep none)."""
    from visual_words.data.features import clip_image_embeds

    concepts = study_concepts(cfg, dataset)
    t = target_index(concepts, concept)
    images = generate(cfg, sd_adapter, vectors, seeds)
    for k, stem in enumerate(keep):
        if stem is not None:
            for i, im in enumerate(images[k][: cfg.evaluate.keep_images_per_trial]):
                _save_png(im, Path(f"{stem}__{i}.png"))
    flat = [im for per_trial in images for im in per_trial]
    feats = clip_image_embeds(evaluator.loaded, flat).float().reshape(len(images), cfg.evaluate.images_per_trial, -1)
    labels = evaluator.text_outputs([EVALUATOR_PROMPT.format(c.prompt_name) for c in concepts], None)[0].float()
    acc = generation_accuracy(feats, labels.cpu(), t)
    return [{"value": float(a)} for a in acc.reshape(-1).tolist()]


def _save_png(image, path: Path) -> None:
    from visual_words.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
