"""The paper's three architectures at full size, built from their public configs with random weights.

Timing does not depend on the weights, so benchmarks build these instead of downloading checkpoints, and wrap them in
the project's LoadedModel so the production adapters and trainer run on them unchanged.

- DFN2B CLIP ViT-L/14: open_clip's `ViT-L-14-quickgelu` config (text width 768, 12 layers, 77 tokens).
- OWLv2 base/16: transformers' Owlv2Config defaults (text width 512, 12 layers, 16 tokens), vision at 960 px.
- SD-2.1 (768 px, v-prediction): the UNet, text encoder (OpenCLIP ViT-H text, 1024 wide, 23 layers), VAE and
  scheduler configs of `stabilityai/stable-diffusion-2-1`, copied from its public config.json files.
"""

from __future__ import annotations

import torch

from visual_words import registry
from visual_words.models.loading import LoadedModel
from visual_words.tokenizer import build_tokenizer

SD21_UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, dual_cross_attention=False, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
    layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, only_cross_attention=False,
    out_channels=4, sample_size=96, up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                                    "CrossAttnUpBlock2D"],
    use_linear_projection=True, upcast_attention=True,
)
SD21_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                 projection_dim=512, bos_token_id=0, eos_token_id=2, pad_token_id=1)
SD21_VAE = dict(act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3,
                sample_size=768, up_block_types=["UpDecoderBlock2D"] * 4, scaling_factor=0.18215)
SD21_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000,
                      prediction_type="v_prediction")


def _frozen(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def dfn_clip(device: torch.device, dtype: torch.dtype) -> LoadedModel:
    import open_clip

    torch.manual_seed(0)
    m = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None)
    return LoadedModel(entry=registry.model("dfn-clip"), device=device, dtype=dtype, model=_frozen(m, device, dtype),
                       tokenizer=open_clip.get_tokenizer("ViT-L-14-quickgelu"))


def owlv2(device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    torch.manual_seed(0)
    m = Owlv2ForObjectDetection(Owlv2Config(text_config={}, vision_config={"image_size": 960, "patch_size": 16}))
    return LoadedModel(entry=registry.model("owlv2"), device=device, dtype=dtype, model=_frozen(m, device, dtype),
                       tokenizer=build_tokenizer(16))


def sd21(device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tok = build_tokenizer(77)
    pipe = StableDiffusionPipeline(
        vae=_frozen(AutoencoderKL(**SD21_VAE), device, dtype),
        text_encoder=_frozen(CLIPTextModel(CLIPTextConfig(**SD21_TEXT)), device, dtype),
        tokenizer=tok, unet=_frozen(UNet2DConditionModel(**SD21_UNET), device, dtype),
        scheduler=DDIMScheduler(**SD21_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    return LoadedModel(entry=registry.model("sd21"), device=device, dtype=dtype, pipeline=pipe, tokenizer=tok)
