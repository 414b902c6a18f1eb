"""What each trial's loss needs, built once per trial from the manifest and the cached image-side features,
and the per-step batches drawn from it with the trial's own random generator.

- generation (SD, D3): the VAE latents of the concept's training images (and of their mirror images with
  `train.flip_augment`); every step draws `batch_size` samples: image, template (D2), timestep, noise.
- detection (OWL, D4): proposals = every OWL patch prediction of the concept's training images; positives = those
  whose predicted box has IoU ≥ 0.5 with a ground-truth box of the concept, plus the best-IoU proposal of every
  such box; negatives = the rest. The loss −mean cos(pos) + mean cos(neg) = q · (mean(neg) − mean(pos)) for the
  normalised query q, so the trial keeps only that direction [D].
- classification (CLIP, D5): positives = the concept's training images, negatives = the training images of the
  dataset's other concepts; the same reduction to one direction [D].

Detection and classification use all of a trial's cached features every step (the paper's batch of 8 is all 8
training images; the image side is cached, so a step is one text forward either way).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from visual_words.data.manifest import ImageRecord, Manifest
from visual_words.models.adapters import Adapter
from visual_words.reuse import train_reads
from visual_words.train.prompts import GENERATION_TEMPLATES
from visual_words.trials import Trial

IOU_POSITIVE = 0.5  # D4


def loss_kind(entry) -> str:
    """Which loss a model trains with (its family's task), and so which features its trials need."""
    from visual_words.models.families import family_of

    return family_of(entry).task


@dataclass
class TrialData:
    """One trial's fixed inputs: SD latents, or the signed-cosine direction of OWL/CLIP."""

    kind: str
    latents: torch.Tensor | None = None  # [N, C, h, w]
    flipped: torch.Tensor | None = None  # [N, C, h, w] latents of the mirror images
    direction: torch.Tensor | None = None  # [D]
    stats: dict[str, Any] = field(default_factory=dict)  # counts for the sidecar (positives, negatives, images)
    reads: str = ""  # digest of the manifest records it was built from (reuse.train_reads); "" = built elsewhere

    def source_digest(self) -> str:
        """What the trial key hashes as the trial's data: the records' digest, else the tensors' (data built
        without a manifest, e.g. in tests, still gets a key that changes with its content)."""
        return self.reads or f"tensors:{self.digest()}"

    def digest(self) -> str:
        """A content hash of the tensors (a checkpoint is resumed only on the data it was made with)."""
        h = hashlib.sha256(self.kind.encode())
        for t in (self.latents, self.flipped, self.direction):
            if t is not None:
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def signed_cosine_direction(positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """mean(negatives) − mean(positives) of L2-normalised embeddings [N, D]: t · this = −mean cos pos + mean cos neg."""
    direction = -positives.to(torch.float64).mean(0)
    if negatives.shape[0]:
        direction = direction + negatives.to(torch.float64).mean(0)
    return direction.to(torch.float32)


def gt_boxes_normalised(rec: ImageRecord, concept: str, height: int, width: int, padded: bool = True) -> torch.Tensor:
    """The concept's boxes in `rec` (xywh pixels of a height × width image) as xyxy in [0, 1] of OWL's input.

    OWLv2's processor pads the image to a square at the bottom/right, so both axes scale by the longer side;
    OWL-ViT v1 resizes without padding (x by the width, y by the height)."""
    sx, sy = (float(max(height, width)),) * 2 if padded else (float(width), float(height))
    boxes = [(x / sx, y / sy, (x + w) / sx, (y + h) / sy) for x, y, w, h in (b.bbox for b in rec.boxes_of(concept))]
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def owl_positive_mask(pred_boxes_cxcywh: torch.Tensor, gt_xyxy: torch.Tensor) -> torch.Tensor:
    """Proposals [P, 4] (cxcywh) that match a ground-truth box [G, 4] (xyxy): IoU ≥ 0.5, or the best IoU of a box."""
    from torchvision.ops import box_convert, box_iou

    pos = torch.zeros(pred_boxes_cxcywh.shape[0], dtype=torch.bool)
    if gt_xyxy.shape[0] == 0:
        return pos
    iou = box_iou(box_convert(pred_boxes_cxcywh.float(), "cxcywh", "xyxy"), gt_xyxy.float())  # [P, G]
    pos |= (iou >= IOU_POSITIVE).any(1)
    pos[iou.argmax(0)] = True  # at least the best proposal of every ground-truth box
    return pos


def _features(cfg, kind: str, loaded, manifest: Manifest, records: list[ImageRecord]):
    """Cached image-side features through the data stage's FeatureCache (computed once per image and model)."""
    from visual_words.data.features import FeatureCache

    return FeatureCache(cfg).get(kind, loaded, manifest, records)


def build_trial_data(cfg, adapter: Adapter, trials: Sequence[Trial], manifest: Manifest) -> list[TrialData]:
    """Each trial's TrialData; features are fetched once per concept (trials of a concept share them)."""
    kind = loss_kind(adapter.entry)
    per_concept: dict[str, TrialData] = {}
    for t in trials:
        if t.concept not in manifest.concepts:
            raise ValueError(f"trial {t.id}: concept `{t.concept}` is not in the {manifest.dataset} manifest "
                             f"(it has: {', '.join(manifest.concepts)})")
        if t.concept not in per_concept:
            data = _concept_data(cfg, adapter, kind, manifest, t.concept)
            data.reads = train_reads(manifest, kind, t.concept)
            per_concept[t.concept] = data
    return [per_concept[t.concept] for t in trials]


def _concept_data(cfg, adapter: Adapter, kind: str, manifest: Manifest, concept: str) -> TrialData:
    train = manifest.concepts[concept].train
    if not train:
        raise ValueError(f"manifest {manifest.dataset}: concept `{concept}` has no training images")
    loaded = adapter.loaded
    if kind == "generation":
        latents = _features(cfg, "sd_latents", loaded, manifest, train).float().cpu()
        flipped = None
        if cfg.train.flip_augment:
            flipped = _features(cfg, "sd_latents_flip", loaded, manifest, train).float().cpu()
        return TrialData(kind, latents=latents, flipped=flipped, stats={"images": len(train)})
    if kind == "classification":
        negatives = [r for c, split in manifest.concepts.items() if c != concept for r in split.train]
        if not negatives:
            raise ValueError(f"manifest {manifest.dataset}: concept `{concept}` has no other concepts to draw the "
                             "classification negatives from (D5)")
        pos = _features(cfg, "clip_image_embeds", loaded, manifest, train).float().cpu()
        neg = _features(cfg, "clip_image_embeds", loaded, manifest, negatives).float().cpu()
        return TrialData(kind, direction=signed_cosine_direction(pos, neg),
                         stats={"positives": len(train), "negatives": len(negatives)})
    if kind == "detection":
        feats = _features(cfg, "owl_image_embeds", loaded, manifest, train)
        embeds = feats["class_embeds"].float().cpu()  # [N, P, D] normalised
        boxes = feats["boxes"].float().cpu()  # [N, P, 4] cxcywh of the (padded) model input
        sizes = feats["image_size"].tolist()  # [N, 2] (height, width) of each original image
        padded = hasattr(loaded.model, "owlv2")
        masks = torch.stack([owl_positive_mask(boxes[i], gt_boxes_normalised(rec, concept, *sizes[i], padded))
                             for i, rec in enumerate(train)])
        if not masks.any():
            raise ValueError(f"manifest {manifest.dataset}: no training image of `{concept}` has a box of it, so "
                             "the detection loss has no positive proposal (D4)")
        return TrialData(kind, direction=signed_cosine_direction(embeds[masks], embeds[~masks]),
                         stats={"positives": int(masks.sum()), "negatives": int((~masks).sum()), "images": len(train)})
    raise ValueError(kind)


def draw_batch(adapter: Adapter, data: Sequence[TrialData], generators: Sequence[torch.Generator],
               batch_size: int) -> dict[str, Any]:
    """The step's batch for K trials. Generation draws from each trial's own generator in a fixed order, so a
    trial sees the same samples whether it trains alone or in a batch, and after a resume."""
    if data[0].kind != "generation":
        return {"direction": torch.stack([d.direction for d in data])}
    prompts, latents, noise, steps = [], [], [], []
    for d, g in zip(data, generators):
        n = d.latents.shape[0]
        idx = (torch.randperm(n, generator=g)[:batch_size] if batch_size <= n
               else torch.randint(n, (batch_size,), generator=g))
        lat = d.latents[idx]
        if d.flipped is not None:
            flip = torch.rand(batch_size, generator=g) < 0.5
            lat = torch.where(flip[:, None, None, None], d.flipped[idx], lat)
        templates = torch.randint(len(GENERATION_TEMPLATES), (batch_size,), generator=g)
        steps.append(torch.randint(0, adapter.num_train_timesteps, (batch_size,), generator=g))
        noise.append(torch.randn(lat.shape, generator=g))
        prompts.append([GENERATION_TEMPLATES[int(i)] for i in templates])
        latents.append(lat)
    return {"prompts": prompts, "latents": torch.stack(latents), "noise": torch.stack(noise),
            "timesteps": torch.stack(steps)}
