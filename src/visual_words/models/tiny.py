"""Tiny random-weight checkpoints of the real architectures, saved in each library's own on-disk layout.

They use the real 49,408-token CLIP vocabulary, so tokenization, anchors and token tables behave like the real
models; only widths, depths and image sizes shrink (sizes come from the `tiny:` block in registry/models.yaml).
`loading.load_model` reads them back through the same `from_pretrained` / `create_model` path as a hub id.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from visual_words.registry import ModelEntry
from visual_words.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, build_tokenizer

MARKER = "tiny-model.json"  # written last: a folder without it is an interrupted build and is rebuilt
# OpenAI CLIP's image normalisation (open_clip's OPENAI_DATASET_MEAN/STD), used by all CLIP-family preprocessors.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _text_config(entry: ModelEntry) -> dict:
    w = entry.text_width
    return dict(vocab_size=VOCAB_SIZE, hidden_size=w, intermediate_size=4 * w, num_hidden_layers=entry.text_layers,
                num_attention_heads=entry.tiny.get("heads", 4), max_position_embeddings=entry.context_length,
                bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=0)


def _vision_config(entry: ModelEntry) -> dict:
    t = entry.tiny
    w = t["vision_width"]
    return dict(hidden_size=w, intermediate_size=4 * w, num_hidden_layers=t["vision_layers"],
                num_attention_heads=t.get("heads", 4), image_size=entry.image_size, patch_size=t["patch_size"])


def build_sd(entry: ModelEntry, out: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    t = entry.tiny
    tok = build_tokenizer(entry.context_length, out / "tokenizer")
    cfg = _text_config(entry)
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
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000,
                              prediction_type=entry.prediction_type)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out)


def build_owl(entry: ModelEntry, out: Path) -> None:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    text = _text_config(entry)
    # OWLv2's class head needs projection_dim == text hidden size (TOOLCHAIN.md §2).
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=_vision_config(entry),
                                                projection_dim=entry.text_width))
    model.save_pretrained(out)
    tok = build_tokenizer(entry.context_length)
    image_processor = Owlv2ImageProcessor(size={"height": entry.image_size, "width": entry.image_size},
                                          image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    Owlv2Processor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)


def build_open_clip(entry: ModelEntry, out: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

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
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg},
                                                          indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))


def build_hf_clip(entry: ModelEntry, out: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    t = entry.tiny
    model = CLIPModel(CLIPConfig(text_config=_text_config(entry), vision_config=_vision_config(entry),
                                 projection_dim=t["embed_dim"]))
    model.save_pretrained(out)
    size = entry.image_size
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                         image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    CLIPProcessor(image_processor=image_processor, tokenizer=build_tokenizer(entry.context_length)).save_pretrained(out)


BUILDERS = {"stable-diffusion": build_sd, "owl-vit": build_owl, "open-clip": build_open_clip, "hf-clip": build_hf_clip}


def build_tiny(entry: ModelEntry, out_dir: str | os.PathLike) -> Path:
    """Build a tiny random-weight checkpoint (seeded, so every machine builds the same weights) and save it."""
    if entry.tiny is None:
        raise ValueError(f"model `{entry.key}` has no `tiny:` block in registry/models.yaml; it is not a tiny model")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temp folder and rename, so a killed build never leaves a half checkpoint behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.manual_seed(int(entry.tiny.get("seed", 0)))
        BUILDERS[entry.family](entry, tmp)
        (tmp / MARKER).write_text(json.dumps({"registry_key": entry.key, "family": entry.family,
                                              "tiny": entry.tiny, "text_width": entry.text_width}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_tiny(entry: ModelEntry, root: str | os.PathLike | None = None) -> Path:
    """Build the tiny checkpoint unless a complete one (with its marker, same sizes) is already there."""
    from visual_words.models.loading import local_path

    from filelock import FileLock

    path = local_path(entry, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # parallel workers: one builds, the others wait and reuse
        marker = path / MARKER
        if marker.exists():
            info = json.loads(marker.read_text())
            if info.get("tiny") == entry.tiny and info.get("text_width") == entry.text_width:
                return path
        return build_tiny(entry, path)
