"""Write a diffusers Stable Diffusion 2 folder as an original single-file checkpoint (the LDM key layout).

Stability AI published SD-2.1 twice: the diffusers folders (unet/, vae/, text_encoder/) and one all-in-one file,
`v2-1_768-ema-pruned.safetensors`, in the layout of their own code (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.model.*` = an OpenCLIP text tower). An evaluator who kept only that file loads it through diffusers'
own `StableDiffusionPipeline.from_single_file` (loading.py). To test that path offline we need such a file for the
tiny model; this module writes one, naming every tensor as the original layout does, so diffusers' converter reads
it back. It is the inverse of the key renaming only: values are copied unchanged (attention projections of the VAE
get the 1×1 convolution shape the original stores).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.model."

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_FIXED = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise ValueError(f"unexpected resnet tensor {rest}")


def unet_to_original(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel tensors -> `model.diffusion_model.*` (input/middle/output_blocks)."""
    step = config["layers_per_block"] + 1  # resnets per down block, plus its downsampler (or per up block)
    with_attention = {int(m.group(1)) for k in sd if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out = {}
    for k, v in sd.items():
        head, _, leaf = k.rpartition(".")
        if head in _UNET_FIXED:
            out[f"{_UNET_FIXED[head]}.{leaf}"] = v
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            out[f"input_blocks.{step * int(m[1]) + int(m[2]) + 1}.0.{_resnet(m[3])}"] = v
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", k):
            out[f"input_blocks.{step * int(m[1]) + int(m[2]) + 1}.1.{m[3]}"] = v
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k):
            out[f"input_blocks.{step * (int(m[1]) + 1)}.0.op.{m[2]}"] = v
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", k):
            out[f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"] = v
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", k):
            out[f"middle_block.1.{m[1]}"] = v
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            out[f"output_blocks.{step * int(m[1]) + int(m[2])}.0.{_resnet(m[3])}"] = v
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", k):
            out[f"output_blocks.{step * int(m[1]) + int(m[2])}.1.{m[3]}"] = v
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k):
            slot = 2 if int(m[1]) in with_attention else 1  # the upsampler follows the attention, if any
            out[f"output_blocks.{step * int(m[1]) + step - 1}.{slot}.conv.{m[2]}"] = v
        else:
            raise ValueError(f"unet tensor {k} has no place in the original layout")
    return out


def vae_to_original(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL tensors -> `first_stage_model.*` (encoder.down.N.block, decoder.up reversed)."""
    n_up = len(config["up_block_types"])
    out = {}
    for k, v in sd.items():
        head, _, leaf = k.rpartition(".")
        if head in _VAE_FIXED:
            out[f"{_VAE_FIXED[head]}.{leaf}"] = v
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            out[f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"] = v
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k):
            out[f"encoder.down.{m[1]}.downsample.conv.{m[2]}"] = v
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            out[f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"] = v
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k):
            out[f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"] = v
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", k):
            out[f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"] = v
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", k):
            name = dict(_VAE_ATTN)[m[2]]
            # the original's attention projections are 1×1 convolutions
            out[f"{m[1]}.mid.attn_1.{name}.{m[3]}"] = v[:, :, None, None] if v.ndim == 2 else v
        elif k.split(".")[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
            out[k] = v  # conv_in, conv_out, quant convs: same names
        else:
            raise ValueError(f"vae tensor {k} has no place in the original layout")
    return out


def text_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel tensors -> the OpenCLIP text tower SD-2 stores (`cond_stage_model.model.*`)."""
    out, qkv = {}, {}
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    parts = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for k, v in sd.items():
        k = k.removeprefix("text_model.")  # transformers 5 saves the text model's tensors without the prefix
        if k in fixed:
            out[fixed[k]] = v
        elif k.endswith("position_ids"):
            continue  # a buffer, not a weight
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", k):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = v
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", k):
            out[f"transformer.resblocks.{m[1]}.{parts[m[2]]}.{m[3]}"] = v
        else:
            raise ValueError(f"text encoder tensor {k} has no place in the original layout")
    for (layer, leaf), p in qkv.items():  # OpenCLIP keeps q, k, v as one in_proj matrix
        out[f"transformer.resblocks.{layer}.attn.in_proj_{leaf}"] = torch.cat([p["q"], p["k"], p["v"]])
    width = out["token_embedding.weight"].shape[1]
    out["text_projection"] = torch.eye(width)  # SD-2 ignores it; diffusers reads the text width from its shape
    return out


def write_single_file(folder: str | Path, out: str | Path) -> Path:
    """Write the SD pipeline in diffusers folder `folder` as one original-layout safetensors file at `out`."""
    folder, out = Path(folder), Path(out)
    cfg = {c: json.loads((folder / c / "config.json").read_text()) for c in ("unet", "vae")}
    state = {}
    state |= {UNET + k: v for k, v in unet_to_original(
        load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"), cfg["unet"]).items()}
    state |= {VAE + k: v for k, v in vae_to_original(
        load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"), cfg["vae"]).items()}
    state |= {TEXT + k: v for k, v in text_to_original(
        load_file(folder / "text_encoder" / "model.safetensors")).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out
