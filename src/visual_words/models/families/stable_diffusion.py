"""Stable Diffusion 1.x/2.x through diffusers' StableDiffusionPipeline (one CLIP text encoder): the generation task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from visual_words.models.families import Family, register


class StableDiffusion(Family):
    name = "stable-diffusion"
    library = "diffusers"
    task = "generation"
    precisions = ("auto", "fp32", "fp16", "bf16", "fp8")  # fp8: the UNet's linear layers (models/speed.py)
    table_folder = "text_encoder"
    table_files = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    bake_files = {  # diffusers StableDiffusionPipeline (safety checker disabled)
        "files": ["model_index.json", "scheduler/*.json", "tokenizer/*", "feature_extractor/*.json",
                  "text_encoder/config.json", "unet/config.json", "vae/config.json"],
        "weights": {
            "text_encoder": [["text_encoder/model.safetensors"],
                             ["text_encoder/model.safetensors.index.json", "text_encoder/model-*-of-*.safetensors"],
                             ["text_encoder/pytorch_model.bin"]],
            "unet": [["unet/diffusion_pytorch_model.safetensors"],
                     ["unet/diffusion_pytorch_model.safetensors.index.json",
                      "unet/diffusion_pytorch_model-*-of-*.safetensors"],
                     ["unet/diffusion_pytorch_model.bin"]],
            "vae": [["vae/diffusion_pytorch_model.safetensors"], ["vae/diffusion_pytorch_model.bin"]],
        },
    }
    feature_kinds = ("sd_latents", "sd_latents_flip")
    loads_single_file = True
    prepared_features = {"sd_latents": ("train",)}  # training images only: evaluation generates, it reads none
    trains_on_own_concept_only = True  # textual inversion: the concept's photos, nothing else
    adapter_class = "visual_words.models.adapters:StableDiffusionAdapter"

    def load(self, out, ident: str, revision: dict[str, str]):
        from diffusers import StableDiffusionPipeline

        entry = out.entry
        if entry.single_file:  # the original all-in-one checkpoint (an override): diffusers' own single-file loader
            from visual_words.models.hub_cache import single_file_config

            pipe = StableDiffusionPipeline.from_single_file(
                entry.single_file, config=str(single_file_config(entry)), dtype=out.dtype, safety_checker=None,
                requires_safety_checker=False, local_files_only=True)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(ident, dtype=out.dtype, safety_checker=None,
                                                           requires_safety_checker=False, **revision)
        pipe.set_progress_bar_config(disable=True)
        out.pipeline = pipe.to(out.device)
        out.tokenizer = pipe.tokenizer
        return [pipe.unet, pipe.vae, pipe.text_encoder]

    def text_embedding(self, loaded):
        return loaded.pipeline.text_encoder.get_input_embeddings()

    @torch.no_grad()
    def image_features(self, kind: str, loaded, images: Sequence) -> torch.Tensor:
        """VAE latent means × scaling_factor [N, 4, h, w] at the model's resolution (of the mirror images for
        `sd_latents_flip`)."""
        from PIL import ImageOps

        from visual_words.preprocess import sd_transform

        if kind not in self.feature_kinds:
            return super().image_features(kind, loaded, images)
        flip = kind == "sd_latents_flip"
        vae = loaded.pipeline.vae
        tf = sd_transform(loaded.entry.image_size)
        x = torch.stack([tf(ImageOps.mirror(im.convert("RGB")) if flip else im.convert("RGB")) for im in images])
        latents = vae.encode(x.to(loaded.device, vae.dtype)).latent_dist.mean * vae.config.scaling_factor
        return latents.float().cpu()

    def feature_modules(self, kind: str, loaded):
        if kind not in self.feature_kinds:
            return super().feature_modules(kind, loaded)
        return [("vae", loaded.pipeline.vae)]

    def preprocess_settings(self, kind: str, loaded) -> Any:
        return {"image_size": loaded.entry.image_size, "scaling_factor": loaded.pipeline.vae.config.scaling_factor}

    folder_marker = "model_index.json (diffusers pipeline)"

    def folder_fields(self, path: Path):
        from visual_words.models.families import read_json

        if not (path / "model_index.json").is_file():
            return None
        index = read_json(path / "model_index.json")
        if "text_encoder_2" in index or "XL" in str(index.get("_class_name", "")):
            raise ValueError(f"{path}: a {index.get('_class_name', 'two-text-encoder')} pipeline; the loader drives "
                             "Stable Diffusion 1.x/2.x pipelines (one CLIP text encoder). Inspect SDXL files against "
                             "a clip_l / clip_g model instead")
        if not (path / "text_encoder" / "config.json").is_file():
            raise ValueError(f"{path}: diffusers pipeline without text_encoder/config.json")
        from transformers import CLIPTextConfig

        text = CLIPTextConfig.from_pretrained(str(path / "text_encoder"))
        unet = read_json(path / "unet" / "config.json") if (path / "unet" / "config.json").is_file() else {}
        vae = read_json(path / "vae" / "config.json") if (path / "vae" / "config.json").is_file() else {}
        sched_file = path / "scheduler" / "scheduler_config.json"
        sched = read_json(sched_file) if sched_file.is_file() else {}
        image_size = int(unet.get("sample_size") or 64) * 2 ** (len(vae.get("block_out_channels") or [0] * 4) - 1)
        return dict(id=str(path), text_width=text.hidden_size, text_layers=text.num_hidden_layers,
                    context_length=text.max_position_embeddings, image_size=image_size,
                    prediction_type=sched.get("prediction_type", "epsilon"))

    def build_tiny(self, entry, out: Path) -> None:
        from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from visual_words.models.families._tiny_configs import text_config
        from visual_words.tokenizer import build_tokenizer

        t = entry.tiny
        tok = build_tokenizer(entry.context_length, out / "tokenizer")
        cfg = text_config(entry)
        text_encoder = CLIPTextModel(CLIPTextConfig(**cfg, projection_dim=entry.text_width, hidden_act="gelu"))
        vae_ch = list(t["vae_channels"])
        vae = AutoencoderKL(block_out_channels=vae_ch, in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * len(vae_ch),
                            up_block_types=["UpDecoderBlock2D"] * len(vae_ch), sample_size=entry.image_size,
                            norm_num_groups=min(32, vae_ch[0]))
        latent = entry.image_size // 2 ** (len(vae_ch) - 1)
        unet_ch = list(t["unet_channels"])
        # SD-2.x's UNet: cross-attention on the text tower's last hidden state, linear projections in the transformer.
        unet = UNet2DConditionModel(block_out_channels=unet_ch, layers_per_block=1, sample_size=latent, in_channels=4,
                                    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                    cross_attention_dim=entry.text_width, attention_head_dim=(2, 4),
                                    use_linear_projection=True, norm_num_groups=min(32, unet_ch[0]))
        # SD-2.1's scheduler config: DDIM, scaled-linear betas, v-prediction.
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  clip_sample=False, set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000,
                                  prediction_type=entry.prediction_type)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(out)


register(StableDiffusion())
