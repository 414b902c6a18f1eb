"""Load any registered checkpoint through its library's own loader.

A hub id (paper) and a local folder (tiny models, a user's own checkpoint) go through the very same
`from_pretrained` / `create_model_and_transforms` call; only the id string differs. There is no second code path
for tests: tiny models are saved in the library's layout and read back here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visual_words.registry import LOCAL_PREFIX, ModelEntry, model


@dataclass
class LoadedModel:
    """The library objects of one checkpoint. Which fields are set depends on the family."""

    entry: ModelEntry
    device: torch.device
    dtype: torch.dtype
    pipeline: Any = None  # stable-diffusion: a diffusers StableDiffusionPipeline
    model: Any = None  # owl-vit: Owlv2/OwlViTForObjectDetection; open-clip: open_clip.CLIP; hf-clip: CLIPModel
    processor: Any = None  # owl-vit / hf-clip: the HF processor (tokenizer + image processor)
    preprocess: Any = None  # open-clip: its eval image transform
    tokenizer: Any = None  # the tokenizer the library loaded with the model

    @property
    def text_embedding(self) -> torch.nn.Embedding:
        """The input token-embedding table (V × d) of the text tower."""
        fam = self.entry.family
        if fam == "stable-diffusion":
            return self.pipeline.text_encoder.get_input_embeddings()
        if fam == "open-clip":
            return self.model.token_embedding
        if fam == "owl-vit":
            return self.model.owlv2.text_model.embeddings.token_embedding if hasattr(self.model, "owlv2") \
                else self.model.owlvit.text_model.embeddings.token_embedding
        if fam == "hf-clip":
            return self.model.text_model.embeddings.token_embedding
        raise ValueError(fam)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Frozen weights: fp16 on GPU (as the paper ran), fp32 on CPU (CPU fp16 kernels are slow or missing)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    # fp8: the non-linear parts in bf16; models.speed swaps the SD UNet's linear layers for float8 ones
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.bfloat16}[precision]


def repo_root() -> Path:
    """The folder relative checkpoint paths are resolved against (where params.yaml lives)."""
    from visual_words.config import ConfigError, find_params_file

    try:
        return find_params_file().parent
    except ConfigError:
        return Path.cwd()


def resolve_id(entry: ModelEntry, root: str | os.PathLike | None = None) -> str:
    """The string handed to the library loader: the hub id, or the local folder as an absolute path."""
    local = entry.local_dir
    if local is None:
        return entry.id
    path = local if local.is_absolute() else Path(root or repo_root()) / local
    return (LOCAL_PREFIX + str(path)) if entry.library == "open_clip" else str(path)


def local_path(entry: ModelEntry, root: str | os.PathLike | None = None) -> Path | None:
    ident = resolve_id(entry, root)
    if entry.local_dir is None:
        return None
    return Path(ident[len(LOCAL_PREFIX):] if ident.startswith(LOCAL_PREFIX) else ident)


def load_model(
    entry: ModelEntry | str,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    root: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a registered checkpoint, frozen (eval mode, no grads). Tiny checkpoints are built first if missing."""
    entry = model(entry) if isinstance(entry, str) else entry
    device = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(precision, device)
    if entry.tiny is not None:
        from visual_words.models.tiny import ensure_tiny

        ensure_tiny(entry, root)
    ident = resolve_id(entry, root)
    path = local_path(entry, root)
    if path is not None and not path.exists():
        raise FileNotFoundError(f"model `{entry.key}`: local checkpoint folder {path} does not exist")
    # Hub loads pin the registry revision; local folders have none.
    rev = {} if path is not None or entry.revision in ("", "local") else {"revision": entry.revision}
    _quiet_libraries()
    out = LoadedModel(entry=entry, device=device, dtype=dtype)
    if entry.family == "stable-diffusion":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(ident, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False, **rev)
        pipe.set_progress_bar_config(disable=True)
        out.pipeline = pipe.to(device)
        out.tokenizer = pipe.tokenizer
        modules = [pipe.unet, pipe.vae, pipe.text_encoder]
    elif entry.family == "owl-vit":
        from transformers import AutoConfig, AutoProcessor, Owlv2ForObjectDetection, OwlViTForObjectDetection

        cls = Owlv2ForObjectDetection if AutoConfig.from_pretrained(ident, **rev).model_type == "owlv2" \
            else OwlViTForObjectDetection
        out.model = cls.from_pretrained(ident, dtype=dtype, **rev).to(device)
        out.processor = AutoProcessor.from_pretrained(ident, **rev)
        out.tokenizer = out.processor.tokenizer
        modules = [out.model]
    elif entry.family == "open-clip":
        import open_clip

        # "hf-hub:ORG/NAME" and "local-dir:DIR" both read open_clip_config.json + the weights file beside it.
        m, _, preprocess = open_clip.create_model_and_transforms(ident, device=device, precision=_oc_precision(dtype))
        out.model, out.preprocess = m, preprocess
        out.tokenizer = open_clip.get_tokenizer(ident)
        modules = [m]
    elif entry.family == "hf-clip":
        from transformers import CLIPModel, CLIPProcessor

        out.model = CLIPModel.from_pretrained(ident, dtype=dtype, **rev).to(device)
        out.processor = CLIPProcessor.from_pretrained(ident, **rev)
        out.tokenizer = out.processor.tokenizer
        modules = [out.model]
    else:  # the registry validates families; this is a guard for new ones
        raise ValueError(f"no loader for family {entry.family!r}")
    for mod in modules:
        mod.eval()
        mod.requires_grad_(False)
    return out


def _oc_precision(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def _quiet_libraries() -> None:
    """Silence the libraries' per-load progress bars; our own stages show the progress that matters."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
