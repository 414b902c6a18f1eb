"""Full-size random-weight stand-ins for the paper's checkpoints, in each library's layout and in the hub cache.

The paper path (768 px SD-2.1 with v-prediction, 960 px OWLv2, 77/16-token contexts, fp16 on a GPU) has shapes,
memory and code paths that tiny models never reach. These builders make the same architectures from their public
configs (`registry/public_configs.yaml`) with seeded random weights, so that path runs anywhere without downloads:

* `build_model(key, device, dtype)`: a `LoadedModel` in memory (the full-size benchmarks);
* `save_checkpoint(key, folder)`: the checkpoint saved as its library saves it (what `from_pretrained` reads);
* `build_hub_cache(keys, cache)`: those folders written into a Hugging Face hub cache at the registry's repo ids
  and revisions (blobs + snapshot symlinks + refs, as a download leaves them) plus a model lock of what was written
  — exactly the layout `vw bake-models` leaves in the image, so the unchanged loaders, the lock check and every
  paper code path run on them (the `rehearsal` profile).

Timing does not depend on the weights; results obviously do, so nothing built here is ever a result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from visual_words import registry
from visual_words.registry import ModelEntry

BUILD_MARKER = "rehearsal-build.json"  # per repo in the cache, written last: its absence means an incomplete build
SEED = 0


@functools.cache
def public_configs() -> dict[str, Any]:
    return yaml.safe_load(resources.files("visual_words.registry").joinpath("public_configs.yaml").read_text())


def _config(key: str) -> dict[str, Any]:
    configs = public_configs()
    if key not in configs:
        raise KeyError(f"no public config for model `{key}` in registry/public_configs.yaml "
                       f"(known: {', '.join(configs)})")
    return configs[key]


# ---------------------------------------------------------------------------------------------------------------
# the library objects, with random weights


def _sd_parts(key: str) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from visual_words.tokenizer import build_tokenizer

    c = _config(key)
    return dict(vae=AutoencoderKL(**c["vae"]), text_encoder=CLIPTextModel(CLIPTextConfig(**c["text_encoder"])),
                unet=UNet2DConditionModel(**c["unet"]), scheduler=DDIMScheduler(**c["scheduler"]),
                tokenizer=build_tokenizer(c["text_encoder"]["max_position_embeddings"]))


def _owl(key: str):
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    c = _config(key)
    return Owlv2ForObjectDetection(Owlv2Config(text_config=dict(c["text_config"]),
                                               vision_config=dict(c["vision_config"])))


def _open_clip(key: str):
    import open_clip

    return open_clip.create_model(_config(key)["open_clip_model"], pretrained=None)


def _hf_clip(key: str):
    from transformers import CLIPConfig, CLIPModel

    c = _config(key)
    return CLIPModel(CLIPConfig(text_config=dict(c["text_config"]), vision_config=dict(c["vision_config"]),
                                projection_dim=c["projection_dim"]))


def build_model(key: str, device: torch.device, dtype: torch.dtype):
    """A full-size random-weight model as a frozen `LoadedModel` (its table identity taken before the cast)."""
    from visual_words.embeddings import table_hash
    from visual_words.models.loading import LoadedModel
    from visual_words.tokenizer import build_tokenizer

    entry = registry.model(key)
    torch.manual_seed(SEED)

    def frozen(module):
        return module.to(device=device, dtype=dtype).eval().requires_grad_(False)

    if entry.family == "stable-diffusion":
        from diffusers import StableDiffusionPipeline

        parts = _sd_parts(key)
        identity = table_hash(parts["text_encoder"].get_input_embeddings().weight)
        pipe = StableDiffusionPipeline(vae=frozen(parts["vae"]), text_encoder=frozen(parts["text_encoder"]),
                                       tokenizer=parts["tokenizer"], unet=frozen(parts["unet"]),
                                       scheduler=parts["scheduler"], safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return LoadedModel(entry=entry, device=device, dtype=dtype, pipeline=pipe, tokenizer=parts["tokenizer"],
                           table_identity=identity)
    if entry.family == "owl-vit":
        m = _owl(key)
        identity = table_hash(m.owlv2.text_model.embeddings.token_embedding.weight)
        return LoadedModel(entry=entry, device=device, dtype=dtype, model=frozen(m),
                           tokenizer=build_tokenizer(entry.context_length), table_identity=identity)
    if entry.family == "open-clip":
        import open_clip

        m = _open_clip(key)
        identity = table_hash(m.token_embedding.weight)
        return LoadedModel(entry=entry, device=device, dtype=dtype, model=frozen(m),
                           tokenizer=open_clip.get_tokenizer(_config(key)["open_clip_model"]), table_identity=identity)
    raise ValueError(f"no in-memory full-size builder for family `{entry.family}` (model `{key}`)")


# ---------------------------------------------------------------------------------------------------------------
# saved as the libraries save them


def save_checkpoint(key: str, out: Path) -> None:
    """Build `key` at full size with seeded random weights and save it in its library's layout into `out`."""
    from visual_words.models.pins import pin
    from visual_words.preprocess import CLIP_MEAN, CLIP_STD
    from visual_words.tokenizer import build_tokenizer

    entry = registry.model(key)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    if entry.family == "stable-diffusion":
        from diffusers import StableDiffusionPipeline

        parts = _sd_parts(key)
        StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False).save_pretrained(out)
    elif entry.family == "owl-vit":
        from transformers import Owlv2ImageProcessor, Owlv2Processor

        _owl(key).save_pretrained(out)
        size = _config(key)["image_size"]
        image_processor = Owlv2ImageProcessor(size={"height": size, "width": size}, image_mean=list(CLIP_MEAN),
                                              image_std=list(CLIP_STD))
        Owlv2Processor(image_processor=image_processor,
                       tokenizer=build_tokenizer(entry.context_length)).save_pretrained(out)
    elif entry.family == "open-clip":
        import open_clip
        from safetensors.torch import save_file

        name = _config(key)["open_clip_model"]
        model = _open_clip(key)
        size = entry.image_size
        preprocess_cfg = {"size": size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bicubic",
                          "resize_mode": "shortest"}
        (out / "open_clip_config.json").write_text(json.dumps(
            {"model_cfg": open_clip.get_model_config(name), "preprocess_cfg": preprocess_cfg}, indent=2))
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        # The weight file the published snapshot holds (DFN2B's is a pickle; its repo has no safetensors).
        if "open_clip_pytorch_model.bin" in ((pin(key) or {}).get("files") or {}):
            torch.save(weights, out / "open_clip_pytorch_model.bin")
        else:
            save_file(weights, str(out / "open_clip_model.safetensors"))
    elif entry.family == "hf-clip":
        from transformers import CLIPImageProcessor, CLIPProcessor

        _hf_clip(key).save_pretrained(out)
        size = entry.image_size
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                             image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
        CLIPProcessor(image_processor=image_processor,
                      tokenizer=build_tokenizer(entry.context_length)).save_pretrained(out)
    else:
        raise ValueError(f"no full-size builder for family `{entry.family}` (model `{key}`)")
    _as_published(key, out)


def _as_published(key: str, out: Path) -> None:
    """Store the weights in the format whose hash the publisher's pins record (OWLv2: the pickle, as the bake
    downloads it), so the stand-in's snapshot has the files a baked one has."""
    from safetensors.torch import load_file

    from visual_words.models.pins import pin

    pinned = ((pin(key) or {}).get("files") or {})
    if "pytorch_model.bin" in pinned and (out / "model.safetensors").is_file():
        torch.save(load_file(out / "model.safetensors"), out / "pytorch_model.bin")
        (out / "model.safetensors").unlink()


# ---------------------------------------------------------------------------------------------------------------
# written into a hub cache at the registry's ids and revisions


def rehearsal_commit(entry: ModelEntry) -> str:
    """The snapshot commit a build is filed under: the registry's pinned commit, or (for a branch name such as
    `main`) a fixed stand-in derived from the repo id, so that every machine files it the same way."""
    from visual_words.models.hub_cache import COMMIT_RE

    if COMMIT_RE.fullmatch(entry.revision):
        return entry.revision
    return hashlib.sha1(f"visual-words rehearsal {entry.id} {entry.revision}".encode()).hexdigest()


def _build_spec(entry: ModelEntry) -> dict[str, Any]:
    return {"key": entry.key, "id": entry.id, "revision": entry.revision, "seed": SEED,
            "config": _config(entry.key), "format": 1}


def is_built(entry: ModelEntry, cache: Path) -> bool:
    from visual_words.models.hub_cache import hub_repo_id, repo_dir

    marker = repo_dir(cache, hub_repo_id(entry)) / BUILD_MARKER
    try:
        return json.loads(marker.read_text()) == _build_spec(entry)
    except (OSError, ValueError):
        return False


def write_snapshot(entry: ModelEntry, cache: Path, files_from: Path) -> str:
    """Move the files of `files_from` into the hub cache as a download would leave them: each file a blob, the
    snapshot a tree of relative symlinks, the loader's refs pointing at the commit. (The hub names a blob by its
    etag; any unique name serves the loaders, so the bytes are hashed once, by the lock, not twice.)"""
    from visual_words.models.lock import hub_repo_id, pin_refs, repo_dir

    repo = repo_dir(cache, hub_repo_id(entry))
    commit = rehearsal_commit(entry)
    snapshot = repo / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for src in sorted(p for p in files_from.rglob("*") if p.is_file()):
        rel = src.relative_to(files_from)
        blob = repo / "blobs" / hashlib.sha1(f"{commit}/{rel.as_posix()}".encode()).hexdigest()
        os.replace(src, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in {"main", entry.revision} - {commit}:  # a branch revision and main resolve to the snapshot
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    pin_refs(cache, entry, commit)
    return commit


def build_hub_cache(keys: Iterable[str], cache: str | os.PathLike, lock_path: str | os.PathLike | None = None,
                    force: bool = False, log=print) -> dict[str, float]:
    """Build the full-size stand-ins of `keys` into the hub cache `cache` (skipping complete ones unless `force`),
    then write the model lock of the cache (default `<cache>/models.lock.json`). Returns seconds per built model."""
    from visual_words.io import write_json
    from visual_words.models.lock import hub_repo_id, lock_from_cache, repo_dir

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    entries = [registry.model(k) for k in dict.fromkeys(keys)]
    local = [e.key for e in entries if hub_repo_id(e) is None]
    if local:
        raise ValueError(f"models {', '.join(local)} are local checkpoints, not hub models: nothing to rehearse")
    times: dict[str, float] = {}
    for entry in entries:
        if not force and is_built(entry, cache):
            log(f"[rehearsal-models] {entry.key}: {hub_repo_id(entry)} already built in {cache}")
            continue
        t0 = time.perf_counter()
        marker = repo_dir(cache, hub_repo_id(entry)) / BUILD_MARKER
        marker.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".build-{entry.key}-", dir=cache) as tmp:
            save_checkpoint(entry.key, Path(tmp))
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
            commit = write_snapshot(entry, cache, Path(tmp))
        marker.write_text(json.dumps(_build_spec(entry), indent=2))
        times[entry.key] = time.perf_counter() - t0
        log(f"[rehearsal-models] {entry.key}: {hub_repo_id(entry)} @ {commit[:12]}, {size / 2**30:.2f} GiB of random "
            f"weights in {times[entry.key]:.0f} s")
    # origin "rehearsal": only a rehearsal run accepts this lock; the publishers' pins are never applied to it.
    lock = lock_from_cache(entries, cache, origin="rehearsal")
    write_json(Path(lock_path) if lock_path else cache / "models.lock.json", lock)
    return times
