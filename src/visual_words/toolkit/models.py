"""`--model M` of the toolkit commands: a registry key, or a local checkpoint folder of a known family.

A folder becomes a `ModelEntry` (the registry's own record) whose id is the folder, so it loads through the
production loader (`models.loading.load_model`) exactly as a registered checkpoint does; no second code path.
The family is read from the files each library writes:

  model_index.json        diffusers pipeline          -> stable-diffusion (SD 1.x / 2.x: one CLIP text encoder)
  open_clip_config.json   open_clip checkpoint        -> open-clip
  config.json model_type  transformers owlv2/owlvit   -> owl-vit;  clip -> hf-clip

Widths, depths and context lengths are read from the same files (the library's own config classes fill in the
defaults a file leaves out), so the entry says what the checkpoint is.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from visual_words.registry import LOCAL_PREFIX, ModelEntry, model, models

HF_MODEL_TYPES = {"owlv2": "owl-vit", "owlvit": "owl-vit", "clip": "hf-clip"}


def resolve_model(spec: str, root: str | Path | None = None) -> ModelEntry:
    """A registry key, or a folder holding a diffusers SD pipeline, an open_clip or an HF OWL/CLIP checkpoint.
    A folder that is a registered local checkpoint (e.g. artifacts/tiny/tiny-sd) resolves to its registry entry."""
    if spec in models():
        return model(spec)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ValueError(f"--model `{spec}`: neither a registry key ({', '.join(models())}) nor a model folder")
    path = path.resolve()
    from visual_words.models.loading import local_path

    for entry in models().values():
        registered = local_path(entry, root)
        if registered is not None and registered.resolve() == path:
            return entry
    return entry_for_folder(path)


def folder_key(path: Path) -> str:
    """A filename-safe key for a folder model (it names cached map files): its name + a hash of the full path."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-") or "model"
    return f"dir-{slug}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def entry_for_folder(path: str | Path) -> ModelEntry:
    path = Path(path).resolve()
    if (path / "model_index.json").is_file():
        return _diffusers_entry(path)
    if (path / "open_clip_config.json").is_file():
        return _open_clip_entry(path)
    if (path / "config.json").is_file():
        return _transformers_entry(path)
    raise ValueError(f"{path}: not a model folder the toolkit knows: no model_index.json (diffusers pipeline), "
                     "open_clip_config.json (open_clip) or config.json (transformers OWL-ViT/OWLv2/CLIP)")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None


def _entry(path: Path, family: str, library: str, ident: str, text_width: int, text_layers: int,
           context_length: int, image_size: int, prediction_type: str = "epsilon") -> ModelEntry:
    from visual_words.models.families import family as family_named

    # A folder model's role only labels it (its family's task): loading and the adapters go by the family.
    return ModelEntry(key=folder_key(path), role=family_named(family).task, family=family, library=library, id=ident,
                      revision="local", text_width=int(text_width), text_layers=int(text_layers),
                      context_length=int(context_length), image_size=int(image_size),
                      prediction_type=prediction_type)


def _diffusers_entry(path: Path) -> ModelEntry:
    index = _read_json(path / "model_index.json")
    if "text_encoder_2" in index or "XL" in str(index.get("_class_name", "")):
        raise ValueError(f"{path}: a {index.get('_class_name', 'two-text-encoder')} pipeline; the loader drives "
                         "Stable Diffusion 1.x/2.x pipelines (one CLIP text encoder). Inspect SDXL files against "
                         "a clip_l / clip_g model instead")
    if not (path / "text_encoder" / "config.json").is_file():
        raise ValueError(f"{path}: diffusers pipeline without text_encoder/config.json")
    from transformers import CLIPTextConfig

    text = CLIPTextConfig.from_pretrained(str(path / "text_encoder"))
    unet = _read_json(path / "unet" / "config.json") if (path / "unet" / "config.json").is_file() else {}
    vae = _read_json(path / "vae" / "config.json") if (path / "vae" / "config.json").is_file() else {}
    sched_file = path / "scheduler" / "scheduler_config.json"
    sched = _read_json(sched_file) if sched_file.is_file() else {}
    image_size = int(unet.get("sample_size") or 64) * 2 ** (len(vae.get("block_out_channels") or [0] * 4) - 1)
    return _entry(path, "stable-diffusion", "diffusers", str(path), text.hidden_size, text.num_hidden_layers,
                  text.max_position_embeddings, image_size, sched.get("prediction_type", "epsilon"))


def _open_clip_entry(path: Path) -> ModelEntry:
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    cfg = _read_json(path / "open_clip_config.json").get("model_cfg", {})
    text_cfg, vision_cfg = cfg.get("text_cfg", {}), cfg.get("vision_cfg", {})
    if text_cfg.get("hf_model_name"):
        raise ValueError(f"{path}: an open_clip model with a Hugging Face text tower ({text_cfg['hf_model_name']}); "
                         "only open_clip's own CLIP text transformer is supported")
    td, vd = CLIPTextCfg(), CLIPVisionCfg()
    size = vision_cfg.get("image_size", vd.image_size)
    return _entry(path, "open-clip", "open_clip", LOCAL_PREFIX + str(path), text_cfg.get("width", td.width),
                  text_cfg.get("layers", td.layers), text_cfg.get("context_length", td.context_length),
                  size[0] if isinstance(size, (list, tuple)) else size)


def _transformers_entry(path: Path) -> ModelEntry:
    raw = _read_json(path / "config.json")
    model_type = raw.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"{path}: config.json has model_type {model_type!r}; the toolkit knows "
                         f"{', '.join(HF_MODEL_TYPES)} (transformers), diffusers pipelines and open_clip folders")
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(path))
    text, vision = cfg.text_config, cfg.vision_config
    return _entry(path, HF_MODEL_TYPES[model_type], "transformers", str(path), text.hidden_size,
                  text.num_hidden_layers, text.max_position_embeddings, vision.image_size)
