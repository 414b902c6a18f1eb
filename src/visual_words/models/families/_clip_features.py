"""What the two CLIP families (open-clip, hf-clip) share: the normalised image features of the classification task."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from visual_words.models.families import Family

CLIP_KIND = "clip_image_embeds"


class ClipFamily(Family):
    task = "classification"
    feature_kinds = (CLIP_KIND,)
    prepared_features = {CLIP_KIND: ("train", "eval")}

    def _pixels(self, loaded, images: Sequence) -> torch.Tensor:
        from visual_words.preprocess import clip_transform

        tf = clip_transform(loaded.entry.image_size)
        return torch.stack([tf(im.convert("RGB")) for im in images])

    def _encode_image(self, loaded, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def image_features(self, kind: str, loaded, images: Sequence) -> torch.Tensor:
        """L2-normalised image features [N, D]."""
        if kind != CLIP_KIND:
            return super().image_features(kind, loaded, images)
        x = self._pixels(loaded, images).to(loaded.device, loaded.dtype)
        return F.normalize(self._encode_image(loaded, x).float(), dim=-1).cpu()

    def preprocess_settings(self, kind: str, loaded) -> Any:
        return {"image_size": loaded.entry.image_size}
