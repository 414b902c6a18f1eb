"""Load any registered checkpoint through its library's own loader.

A hub id (paper) and a local folder (tiny models, a user's own checkpoint) go through the very same
`from_pretrained` / `create_model_and_transforms` call; only the id string differs. There is no second code path
for tests: tiny models are saved in the library's layout and read back here.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from visual_words.errors import UserError
from visual_words.models.families import family_of
from visual_words.models.location import local_path, resolve_id
from visual_words.models.table_identity import identity_of_stored_table
from visual_words.registry import ModelEntry, model


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
    # The precision-independent identity of the token table (models/table_identity.py): set from the checkpoint file
    # by load_model; a model built in memory sets it from its table before any cast.
    table_identity: str | None = None

    @property
    def text_embedding(self) -> torch.nn.Embedding:
        """The input token-embedding table (V × d) of the text tower."""
        return family_of(self.entry).text_embedding(self)


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
    if entry.single_file and not family_of(entry).loads_single_file:
        raise ValueError(f"model `{entry.key}`: a single-file checkpoint is supported for Stable Diffusion only")
    if path is None and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        check_weights_local(entry)  # before the libraries' own (long) error for a missing download
    # Hub loads pin the registry revision; local folders have none.
    rev = {} if path is not None or entry.revision in ("", "local") else {"revision": entry.revision}
    _quiet_libraries()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch, on any foreign pickle
            out = _load(entry, ident, device, dtype, rev)
    except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError, json.JSONDecodeError) as e:
        # A broken, foreign or malicious checkpoint: the library's reason in one line (VW_DEBUG=1: the trace).
        if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
            raise UserError(f"model `{entry.key}`: refused {path or ident}: a weights file holds objects other than "
                            "tensors, and loading it would run code (only weights_only pickles are read)") from e
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UserError(f"model `{entry.key}`: cannot load {path or ident}: {first[:300]}") from e
    return out


def check_weights_local(entry: ModelEntry) -> None:
    """Offline, a hub model must already be in the Hugging Face cache at its registry revision: otherwise one line
    saying where we looked and how to get it."""
    from visual_words.models.hub_cache import hub_cache_dir, hub_repo_id, repo_dir

    repo_id = hub_repo_id(entry)
    if repo_id is None:
        return
    folder = repo_dir(hub_cache_dir(), repo_id)
    ref = folder / "refs" / (entry.revision or "main")
    snapshots = folder / "snapshots"
    found = ref.is_file() or (snapshots / entry.revision).is_dir() if entry.revision else snapshots.is_dir()
    if not found:
        raise UserError(f"model `{entry.key}`: weights not found locally: looked in {folder} for {repo_id} @ "
                        f"{entry.revision or 'main'} (the Hugging Face cache: HF_HUB_CACHE or HF_HOME/hub); get "
                        f"them with `HF_HUB_OFFLINE=0 vw bake-models {entry.key}`, or pass a local model folder")


def _load(entry: ModelEntry, ident: str, device: torch.device, dtype: torch.dtype, rev: dict) -> LoadedModel:
    """The family's library call (the same for a hub id and a local folder), frozen, with its table identity."""
    fam = family_of(entry)
    out = LoadedModel(entry=entry, device=device, dtype=dtype)
    for mod in fam.load(out, ident, rev):
        mod.eval()
        mod.requires_grad_(False)
    # A loader that takes no revision reads refs/main (open_clip); the others read the registry revision.
    out.table_identity = identity_of_stored_table(entry.family, ident,
                                                  None if fam.loads_main else rev.get("revision"),
                                                  single_file=entry.single_file or None)
    return out


def _quiet_libraries() -> None:
    """Silence the libraries' per-load progress bars; our own stages show the progress that matters."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
