"""transformers CLIPModel checkpoints: a classification model, and the study's generation evaluator (OpenAI CLIP)."""

from __future__ import annotations

from pathlib import Path

from visual_words.models.families import register
from visual_words.models.families._clip_features import CLIP_KIND, ClipFamily

HF_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
HF_BAKE_FILES = {  # a transformers model + its processor
    "files": ["config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
              "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json"],
    "weights": {"model": [["model.safetensors"], ["model.safetensors.index.json", "model-*-of-*.safetensors"],
                          ["pytorch_model.bin"]]},
}


def transformers_folder_fields(path: Path, model_types: tuple[str, ...]):
    """Registry fields of a transformers checkpoint folder whose config.json has one of `model_types`."""
    from visual_words.models.families import read_json

    if not (path / "config.json").is_file() or read_json(path / "config.json").get("model_type") not in model_types:
        return None
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(path))
    text, vision = cfg.text_config, cfg.vision_config
    return dict(id=str(path), text_width=text.hidden_size, text_layers=text.num_hidden_layers,
                context_length=text.max_position_embeddings, image_size=vision.image_size)


class HFClip(ClipFamily):
    name = "hf-clip"
    library = "transformers"
    table_files = HF_FILES
    bake_files = HF_BAKE_FILES
    adapter_class = "visual_words.models.adapters:HFClipAdapter"

    def load(self, out, ident: str, revision: dict[str, str]):
        from transformers import CLIPModel, CLIPProcessor

        out.model = CLIPModel.from_pretrained(ident, dtype=out.dtype, **revision).to(out.device)
        out.processor = CLIPProcessor.from_pretrained(ident, **revision)
        out.tokenizer = out.processor.tokenizer
        return [out.model]

    def text_embedding(self, loaded):
        return loaded.model.text_model.embeddings.token_embedding

    def _encode_image(self, loaded, x):
        out = loaded.model.get_image_features(pixel_values=x)
        return out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 returns an output object

    def feature_modules(self, kind: str, loaded):
        if kind != CLIP_KIND:
            return super().feature_modules(kind, loaded)
        return [("vision_model", loaded.model.vision_model), ("visual_projection", loaded.model.visual_projection)]

    folder_marker = "config.json with model_type clip (transformers)"

    def folder_fields(self, path: Path):
        return transformers_folder_fields(path, ("clip",))

    def build_tiny(self, entry, out: Path) -> None:
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

        from visual_words.models.families._tiny_configs import text_config, vision_config
        from visual_words.preprocess import CLIP_MEAN, CLIP_STD
        from visual_words.tokenizer import build_tokenizer

        model = CLIPModel(CLIPConfig(text_config=text_config(entry), vision_config=vision_config(entry),
                                     projection_dim=entry.tiny["embed_dim"]))
        model.save_pretrained(out)
        size = entry.image_size
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                             image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
        CLIPProcessor(image_processor=image_processor,
                      tokenizer=build_tokenizer(entry.context_length)).save_pretrained(out)


register(HFClip())
