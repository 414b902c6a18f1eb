"""open_clip CLIP checkpoints (`hf-hub:ORG/NAME` or `local-dir:DIR`): the classification task (DFN2B CLIP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from visual_words.models.families import register
from visual_words.models.families._clip_features import CLIP_KIND, ClipFamily


def _precision(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


class OpenClip(ClipFamily):
    name = "open-clip"
    library = "open_clip"
    table_files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    bake_files = {  # open_clip create_model_and_transforms("hf-hub:…") + get_tokenizer
        "files": ["open_clip_config.json"],
        "weights": {"model": [["open_clip_model.safetensors"], ["open_clip_pytorch_model.bin"]]},
    }
    loads_main = True  # open_clip's hub loader takes no revision: it reads whatever refs/main names
    adapter_class = "visual_words.models.adapters:OpenClipAdapter"

    def load(self, out, ident: str, revision: dict[str, str]):
        import open_clip

        # "hf-hub:ORG/NAME" and "local-dir:DIR" both read open_clip_config.json + the weights file beside it.
        m, _, preprocess = open_clip.create_model_and_transforms(ident, device=out.device,
                                                                 precision=_precision(out.dtype))
        out.model, out.preprocess = m, preprocess
        out.tokenizer = open_clip.get_tokenizer(ident)
        return [m]

    def text_embedding(self, loaded):
        return loaded.model.token_embedding

    def vocabulary(self, loaded):
        tok = loaded.tokenizer
        if hasattr(tok, "encoder"):  # open_clip.SimpleTokenizer
            return dict(tok.encoder), {tok.decoder[i] for i in getattr(tok, "all_special_ids", [])}
        inner = tok.tokenizer  # open_clip.HFTokenizer wraps a transformers tokenizer
        return dict(inner.get_vocab()), {inner.bos_token, inner.eos_token}

    def _pixels(self, loaded, images):
        if loaded.preprocess is None:
            return super()._pixels(loaded, images)
        return torch.stack([loaded.preprocess(im.convert("RGB")) for im in images])

    def _encode_image(self, loaded, x):
        return loaded.model.encode_image(x)

    def feature_modules(self, kind: str, loaded):
        if kind != CLIP_KIND:
            return super().feature_modules(kind, loaded)
        return [("visual", loaded.model.visual)]

    def preprocess_settings(self, kind: str, loaded) -> Any:
        if kind == CLIP_KIND and loaded.preprocess is not None:
            return repr(loaded.preprocess)
        return super().preprocess_settings(kind, loaded)

    folder_marker = "open_clip_config.json (open_clip)"

    def folder_fields(self, path: Path):
        from visual_words.models.families import read_json
        from visual_words.registry import LOCAL_PREFIX

        if not (path / "open_clip_config.json").is_file():
            return None
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg

        cfg = read_json(path / "open_clip_config.json").get("model_cfg", {})
        text_cfg, vision_cfg = cfg.get("text_cfg", {}), cfg.get("vision_cfg", {})
        if text_cfg.get("hf_model_name"):
            raise ValueError(f"{path}: an open_clip model with a Hugging Face text tower "
                             f"({text_cfg['hf_model_name']}); only open_clip's own CLIP text transformer is supported")
        td, vd = CLIPTextCfg(), CLIPVisionCfg()
        size = vision_cfg.get("image_size", vd.image_size)
        return dict(id=LOCAL_PREFIX + str(path), text_width=text_cfg.get("width", td.width),
                    text_layers=text_cfg.get("layers", td.layers),
                    context_length=text_cfg.get("context_length", td.context_length),
                    image_size=size[0] if isinstance(size, (list, tuple)) else size)

    def build_tiny(self, entry, out: Path) -> None:
        import open_clip
        from safetensors.torch import save_file

        from visual_words.preprocess import CLIP_MEAN, CLIP_STD
        from visual_words.tokenizer import VOCAB_SIZE

        t = entry.tiny
        model_cfg = {
            "embed_dim": t["embed_dim"],
            "vision_cfg": {"image_size": entry.image_size, "layers": t["vision_layers"], "width": t["vision_width"],
                           "patch_size": t["patch_size"], "head_width": t["vision_width"] // t.get("heads", 4)},
            "text_cfg": {"context_length": entry.context_length, "vocab_size": VOCAB_SIZE, "width": entry.text_width,
                         "heads": t.get("heads", 4), "layers": entry.text_layers},
        }
        preprocess_cfg = {"size": entry.image_size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
                          "interpolation": "bicubic", "resize_mode": "shortest"}
        model = open_clip.CLIP(**model_cfg)
        (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                              "preprocess_cfg": preprocess_cfg}, indent=2))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))


register(OpenClip())
