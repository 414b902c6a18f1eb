"""OWL-ViT v1 and OWLv2 through transformers: the detection task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from visual_words.models.families import Family, register
from visual_words.models.families.hf_clip import HF_BAKE_FILES, HF_FILES, transformers_folder_fields

OWL_KIND = "owl_image_embeds"


def _core(loaded):
    m = loaded.model
    return m.owlv2 if hasattr(m, "owlv2") else m.owlvit


class OwlVit(Family):
    name = "owl-vit"
    library = "transformers"
    task = "detection"
    table_files = HF_FILES
    bake_files = HF_BAKE_FILES  # transformers Owlv2ForObjectDetection + AutoProcessor read the same file set
    feature_kinds = (OWL_KIND,)
    prepared_features = {OWL_KIND: ("train", "eval")}
    adapter_class = "visual_words.models.adapters:OwlAdapter"

    def load(self, out, ident: str, revision: dict[str, str]):
        from transformers import AutoConfig, AutoProcessor, Owlv2ForObjectDetection, OwlViTForObjectDetection

        cls = Owlv2ForObjectDetection if AutoConfig.from_pretrained(ident, **revision).model_type == "owlv2" \
            else OwlViTForObjectDetection
        out.model = cls.from_pretrained(ident, dtype=out.dtype, **revision).to(out.device)
        out.processor = AutoProcessor.from_pretrained(ident, **revision)
        out.tokenizer = out.processor.tokenizer
        return [out.model]

    def text_embedding(self, loaded):
        return _core(loaded).text_model.embeddings.token_embedding

    @torch.no_grad()
    def image_features(self, kind: str, loaded, images: Sequence) -> dict[str, torch.Tensor]:
        """OWL's per-patch outputs of each image, everything the detector needs besides the text query:

        - `class_embeds` [N, P, D]: the class head's projection of every patch, L2-normalised (as the head
          normalises it before comparing with the query);
        - `logit_shift`, `logit_scale` [N, P]: the head's per-patch shift and the scale it multiplies by
          (elu(·) + 1 applied), so logits = (class_embeds · q + logit_shift) * logit_scale;
        - `boxes` [N, P, 4]: predicted boxes, cxcywh in [0, 1] of the padded square input;
        - `image_size` [N, 2]: (height, width) of each original image. OWLv2 pads at the bottom/right to a square
          of side max(h, w), so a box in pixels of the original image is `boxes * max(h, w)` (OWL-ViT v1 does not
          pad: there x scales by w and y by h)."""
        from visual_words.preprocess import owl_pixels

        if kind != OWL_KIND:
            return super().image_features(kind, loaded, images)
        m = loaded.model
        pixels = owl_pixels(loaded.processor, list(images)).to(loaded.device, loaded.dtype)
        feature_map, _ = m.image_embedder(pixel_values=pixels)  # [N, h, w, d]
        n, gh, gw, d = feature_map.shape
        feats = feature_map.reshape(n, gh * gw, d)
        _, class_embeds = m.class_predictor(feats)  # query_embeds=None: the head's unnormalised projection
        class_embeds = class_embeds / (torch.linalg.norm(class_embeds, dim=-1, keepdim=True) + 1e-6)  # as the head
        head = m.class_head
        shift = head.logit_shift(feats)[..., 0]
        scale = head.elu(head.logit_scale(feats))[..., 0] + 1
        boxes = m.box_predictor(feats, feature_map)
        sizes = torch.tensor([(im.height, im.width) for im in images], dtype=torch.int64)
        return {"class_embeds": class_embeds.cpu(), "logit_shift": shift.float().cpu(),
                "logit_scale": scale.float().cpu(), "boxes": boxes.float().cpu(), "image_size": sizes}

    def feature_modules(self, kind: str, loaded):
        if kind != OWL_KIND:
            return super().feature_modules(kind, loaded)
        m, core = loaded.model, _core(loaded)
        return [("vision_model", core.vision_model), ("layer_norm", m.layer_norm), ("class_head", m.class_head),
                ("box_head", m.box_head)]

    def preprocess_settings(self, kind: str, loaded) -> Any:
        return loaded.processor.image_processor.to_dict()

    folder_marker = "config.json with model_type owlv2 or owlvit (transformers)"

    def folder_fields(self, path: Path):
        return transformers_folder_fields(path, ("owlv2", "owlvit"))

    def build_tiny(self, entry, out: Path) -> None:
        from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

        from visual_words.models.families._tiny_configs import text_config, vision_config
        from visual_words.preprocess import CLIP_MEAN, CLIP_STD
        from visual_words.tokenizer import build_tokenizer

        # OWLv2's class head needs projection_dim == text hidden size (else the head's einsum fails).
        model = Owlv2ForObjectDetection(Owlv2Config(text_config=text_config(entry),
                                                    vision_config=vision_config(entry),
                                                    projection_dim=entry.text_width))
        model.save_pretrained(out)
        image_processor = Owlv2ImageProcessor(size={"height": entry.image_size, "width": entry.image_size},
                                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
        Owlv2Processor(image_processor=image_processor,
                       tokenizer=build_tokenizer(entry.context_length)).save_pretrained(out)


register(OwlVit())
