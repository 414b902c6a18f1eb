"""Image-side features that training and evaluation reuse, computed once per image and model, and their disk cache.

Each function takes a `LoadedModel` and PIL images and goes through the libraries' own code paths:

- `clip_image_embeds`: open_clip `model.encode_image` / transformers `CLIPModel.get_image_features`, L2-normalised.
  open_clip images go through the checkpoint's own eval transform (`loaded.preprocess`, built by open_clip from the
  checkpoint's preprocess config); transformers CLIP through `preprocess.clip_transform` (OpenAI's transform, tested
  to reproduce OpenAI's reference output exactly).
- `owl_image_embeds`: OWLv2's `image_embedder` (vision tower + merged class token + layer norm), `class_predictor`
  (the class head's dense projection), `class_head.logit_shift` / `logit_scale` and `box_predictor`, on pixels from
  the checkpoint's own image processor (`preprocess.owl_pixels`: pad to a square at the bottom/right, resize).
  With a query embedding q (normalised), OWL's logits are `(class_embeds · q + logit_shift) * logit_scale` —
  exactly what `Owlv2ForObjectDetection.forward` computes (tested).
- `sd_latents`: `vae.encode(x).latent_dist.mean * vae.config.scaling_factor` on `preprocess.sd_transform` pixels
  (optionally of the mirror image).

Every output is on the CPU. CLIP embeddings, SD latents and OWL's logit shift/scale/boxes are float32; OWL's
per-patch class embeddings keep the model's dtype (fp16 on a GPU halves a 3,600 × 512 per-image cache).

`FeatureCache` stores one safetensors file per (kind, model fingerprint, image content hash) under
`prepare.cache_dir`:

    <cache_dir>/<kind>/<model key>-<fingerprint[:16]>/<sha256[:2]>/<sha256 of the image file>.safetensors

The fingerprint hashes what the feature depends on: the weights (names, dtypes, shapes, bytes) of the modules the
feature runs through, the preprocessing settings and the feature's code version (`features.<kind>` in
code_versions.yaml, visual_words.reuse). A changed model, preprocessing or
image file therefore misses the cache and is recomputed; nothing is ever overwritten in place (atomic writes).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from tqdm import tqdm

from visual_words.code_versions import feature_version  # a kind's code version (code_versions.yaml, features.<kind>)
from visual_words.io import content_hash, json_digest, save_safetensors, write_json
from visual_words.models.loading import LoadedModel
from visual_words.preprocess import load_rgb

OWL_KEYS = ("class_embeds", "logit_shift", "logit_scale", "boxes", "image_size")
DIGEST_KEY = "tensors_sha256"  # header field of a cache entry: tensor_digest of its tensors (checked on read)


def tensor_digest(item: dict[str, torch.Tensor]) -> str:
    """sha256 over an entry's tensors (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    for k in sorted(item):
        t = item[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# ---- the features ------------------------------------------------------------------------------------------------
# Each family computes its own (models/families/): CLIP image features, OWL's per-patch outputs, SD's VAE latents.

KINDS = ("clip_image_embeds", "owl_image_embeds", "sd_latents", "sd_latents_flip")


def image_features(kind: str, loaded: LoadedModel, images: Sequence[Image.Image]) -> Any:
    """Feature `kind` of `images` through the loaded model's family (an error naming the model otherwise)."""
    from visual_words.models.families import family_of

    if kind not in KINDS:
        raise ValueError(f"unknown feature kind `{kind}` (known: {', '.join(KINDS)})")
    return family_of(loaded).image_features(kind, loaded, images)


def clip_image_embeds(loaded: LoadedModel, images: Sequence[Image.Image]) -> torch.Tensor:
    """L2-normalised image features [N, D] of an open_clip or transformers CLIP model."""
    return image_features("clip_image_embeds", loaded, images)


def owl_image_embeds(loaded: LoadedModel, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
    """OWL's per-patch outputs of each image (see models/families/owl_vit.py for the fields)."""
    return image_features("owl_image_embeds", loaded, images)


def sd_latents(loaded: LoadedModel, images: Sequence[Image.Image], flip: bool = False) -> torch.Tensor:
    """VAE latent means × scaling_factor [N, 4, h, w] at the model's resolution (of the mirror images with flip)."""
    return image_features("sd_latents_flip" if flip else "sd_latents", loaded, images)


# ---- fingerprints --------------------------------------------------------------------------------------------------


def _modules(kind: str, loaded: LoadedModel) -> list[tuple[str, torch.nn.Module]]:
    """The modules a feature runs through: only their weights enter its fingerprint."""
    from visual_words.models.families import family_of

    if kind not in KINDS:
        raise ValueError(f"unknown feature kind `{kind}` (known: {', '.join(KINDS)})")
    return family_of(loaded).feature_modules(kind, loaded)


def _preprocess_settings(kind: str, loaded: LoadedModel) -> Any:
    from visual_words.models.families import family_of

    return family_of(loaded).preprocess_settings(kind, loaded)


def weights_digest(modules: Sequence[tuple[str, torch.nn.Module]]) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes) of the modules."""
    h = hashlib.sha256()
    for prefix, mod in modules:
        for name, t in mod.state_dict(keep_vars=True).items():
            t = t.detach()
            h.update(f"{prefix}.{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# Hashing a real checkpoint's weights takes a fraction of a second; remember it per live module and recompute only
# when a tensor was modified in place (its version counter moved) or replaced (another object).
_DIGESTS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _state_key(modules) -> tuple:
    return tuple((id(t), t._version) for _, mod in modules for t in mod.state_dict(keep_vars=True).values())


def fingerprint(kind: str, loaded: LoadedModel) -> str:
    """The cache key of a model for one feature kind: weights + preprocessing + code version."""
    modules = _modules(kind, loaded)
    anchor = modules[0][1]
    memo = _DIGESTS.setdefault(anchor, {})
    state = _state_key(modules)
    if memo.get("state") != state:
        memo["state"], memo["digest"] = state, weights_digest(modules)
    spec = {"kind": kind, "version": feature_version(kind), "weights": memo["digest"],
            "preprocess": _preprocess_settings(kind, loaded)}
    return json_digest(spec)


# ---- the cache ---------------------------------------------------------------------------------------------------


class FeatureCache:
    """Image-side features on disk, keyed by model fingerprint and image content hash.

    `FeatureCache(cfg)` (reads prepare.cache_dir and prepare.feature_batch_size) or `FeatureCache("some/dir")`.
    `get(kind, loaded, manifest, records)` returns what the feature function returns for those images, in order;
    `hits` / `misses` count images served from disk / computed since the cache object was made."""

    def __init__(self, cfg_or_dir, batch_size: int | None = None, progress: bool = False):
        if isinstance(cfg_or_dir, (str, os.PathLike)):
            self.root, default_batch = Path(cfg_or_dir), 8
        else:
            cfg = cfg_or_dir
            self.root, default_batch = cfg.path(cfg.prepare.cache_dir), cfg.prepare.feature_batch_size
        self.batch_size = batch_size or default_batch
        self.progress = progress
        self.hits = self.misses = 0

    def folder(self, kind: str, loaded: LoadedModel) -> Path:
        return self.root / kind / f"{loaded.entry.key}-{fingerprint(kind, loaded)[:16]}"

    def get(self, kind: str, loaded: LoadedModel, manifest, records) -> Any:
        return self.get_files(kind, loaded, [manifest.path_of(r) for r in records])

    def get_files(self, kind: str, loaded: LoadedModel, paths: Sequence[str | Path]) -> Any:
        """The feature of each image file (computed for the ones not cached yet, in batches)."""
        if kind not in KINDS:
            raise ValueError(f"unknown feature kind `{kind}` (known: {', '.join(KINDS)})")
        if not paths:
            return {k: torch.empty(0) for k in OWL_KEYS} if kind == "owl_image_embeds" else torch.empty(0)
        folder = self.folder(kind, loaded)
        self._describe(folder, kind, loaded)
        hashes = [content_hash(p) for p in paths]
        found: dict[str, dict[str, torch.Tensor]] = {}
        pending: dict[str, Path] = {}  # content hash -> a file with that content (identical files computed once)
        for p, h in zip(paths, hashes):
            if h in found or h in pending:
                continue
            cached = self._read(folder / h[:2] / f"{h}.safetensors")
            if cached is None:
                pending[h] = Path(p)
            else:
                found[h] = cached
        self.hits += len(paths) - len(pending)
        self.misses += len(pending)
        todo = [(p, h) for h, p in pending.items()]
        bar = tqdm(total=len(todo), desc=f"{kind} ({loaded.entry.key})", unit="img",
                   disable=not self.progress or not todo)
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            out = image_features(kind, loaded, [load_rgb(p) for p, _ in chunk])
            for j, (p, h) in enumerate(chunk):
                item = {k: v[j] for k, v in out.items()} if isinstance(out, dict) else {"value": out[j]}
                self._write(folder / h[:2] / f"{h}.safetensors", item, kind, loaded, p)
                found[h] = item
            bar.update(len(chunk))
        bar.close()
        items = [found[h] for h in hashes]
        if kind == "owl_image_embeds":
            return {k: torch.stack([it[k] for it in items]) for k in OWL_KEYS}
        return torch.stack([it["value"] for it in items])

    # -- files --

    @staticmethod
    def _read(path: Path) -> dict[str, torch.Tensor] | None:
        """An entry, or None (a miss: recomputed and replaced) when it is absent, unreadable or damaged: its
        tensors must hash to the digest recorded in its header when it was written."""
        import sys

        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                item = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError):  # a truncated or foreign entry is a miss
            return None
        want = meta.get(DIGEST_KEY)
        if want is not None and tensor_digest(item) != want:
            print(f"[features] {path}: damaged (its tensors do not match the digest recorded when it was written); "
                  "computing it again", file=sys.stderr, flush=True)
            return None
        return item

    @staticmethod
    def _write(path: Path, item: dict[str, torch.Tensor], kind: str, loaded: LoadedModel, source: Path) -> None:
        item = {k: v.contiguous() for k, v in item.items()}
        meta = {"kind": kind, "model_key": loaded.entry.key, "image_file": str(source),
                DIGEST_KEY: tensor_digest(item)}
        save_safetensors(path, item, meta)

    @staticmethod
    def _describe(folder: Path, kind: str, loaded: LoadedModel) -> None:
        """A small JSON beside the entries saying which model and settings they belong to (for people)."""
        info = folder / "model.json"
        if not info.exists():
            write_json(info, {"kind": kind, "version": feature_version(kind), "model_key": loaded.entry.key,
                              "model_id": loaded.entry.id, "revision": loaded.entry.revision,
                              "dtype": str(loaded.dtype), "fingerprint": fingerprint(kind, loaded)})
