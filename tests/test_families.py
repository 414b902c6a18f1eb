"""A model family is one module (models/families/) plus registry entries: nothing else names a family.

The test registers a family of its own — a transformers CLIP under another name, as a new CLIP-like family would
arrive — and drives it through every place that needs family knowledge: the loader, the adapter, the token-table
identity, the vocabulary, image features, the feature-cache fingerprint, the loss kind, the prepare stage's feature
jobs and the bake's file list. No other module is edited for it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from visual_words import registry
from visual_words.models.families import families, family, register, unregister
from visual_words.models.families.hf_clip import HFClip
from visual_words.models.token_table import TokenTable


class ToyClip(HFClip):
    name = "toy-clip"


@pytest.fixture
def toy_entry(repo_root, tiny_clip_eval):
    register(ToyClip())
    base = registry.model("tiny-clip-eval")
    folder = base.local_dir if base.local_dir.is_absolute() else repo_root / base.local_dir
    yield replace(base, key="toy", family="toy-clip", id=str(folder), tiny=None)
    unregister("toy-clip")


def test_a_family_registered_in_a_test_runs_everywhere_a_family_is_needed(toy_entry, tiny_clip_eval):
    from PIL import Image

    from visual_words.data.features import _modules, _preprocess_settings, clip_image_embeds, weights_digest
    from visual_words.models.adapters import adapter_for
    from visual_words.models.loading import load_model
    from visual_words.models.lock import select_files
    from visual_words.models.token_table import vocabulary
    from visual_words.train.targets import loss_kind

    assert "toy-clip" in families() and family("toy-clip").task == "classification"
    toy = load_model(toy_entry)
    adapter = adapter_for(toy)
    assert type(adapter).__name__ == "HFClipAdapter"
    assert toy.table_identity == tiny_clip_eval.table_identity  # the same weights file, so the same identity
    torch.testing.assert_close(TokenTable.of(adapter).weights, TokenTable.of(adapter_for(tiny_clip_eval)).weights)
    assert vocabulary(toy) == vocabulary(tiny_clip_eval)
    assert loss_kind(toy_entry) == "classification"
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (20, 50), (10, 90, 240))]
    torch.testing.assert_close(clip_image_embeds(toy, images), clip_image_embeds(tiny_clip_eval, images))
    assert weights_digest(_modules("clip_image_embeds", toy)) == weights_digest(
        _modules("clip_image_embeds", tiny_clip_eval))
    assert _preprocess_settings("clip_image_embeds", toy) == {"image_size": 32}
    listing = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "vocab.json"]
    assert select_files("toy-clip", listing) == ["config.json", "model.safetensors", "vocab.json"]
    with pytest.raises(ValueError, match="does not compute `owl_image_embeds`"):
        _modules("owl_image_embeds", toy)


def test_prepare_asks_the_family_which_features_to_cache(smoke_config):
    from visual_words.data.prepare import feature_jobs

    manifest = _manifest_of_two_records()
    jobs = feature_jobs(smoke_config, manifest)
    kinds = {key: (kind, len(records), precision) for key, kind, records, precision in jobs}
    assert kinds == {"tiny-sd": ("sd_latents", 1, "auto"), "tiny-owlv2": ("owl_image_embeds", 2, "auto"),
                     "tiny-clip": ("clip_image_embeds", 2, "auto")}


def test_each_split_is_prepared_at_the_precision_of_the_stage_that_reads_it(smoke_config):
    """Train images at train.precision, held-out images at evaluate.precision (the cache key holds the dtype)."""
    import dataclasses

    from visual_words.data.prepare import feature_jobs

    cfg = dataclasses.replace(smoke_config, train=dataclasses.replace(smoke_config.train, precision="bf16"))
    jobs = {(key, precision): sorted(r.file for r in records) for key, _, records, precision in
            feature_jobs(cfg, _manifest_of_two_records())}
    assert set(jobs) == {("tiny-sd", "bf16"), ("tiny-owlv2", "bf16"), ("tiny-owlv2", "auto"),
                         ("tiny-clip", "bf16"), ("tiny-clip", "auto")}
    assert jobs[("tiny-clip", "bf16")] == jobs[("tiny-sd", "bf16")] and len(jobs[("tiny-clip", "auto")]) == 1
    assert not set(jobs[("tiny-clip", "bf16")]) & set(jobs[("tiny-clip", "auto")])


def test_sd_latents_are_cached_only_for_the_concepts_sd_trains():
    """Textual inversion reads only its concept's photos; the other models read every concept (negatives, pool)."""
    from visual_words.config import load_config
    from visual_words.data.manifest import ConceptSplit, ImageRecord, Manifest
    from visual_words.data.prepare import feature_jobs

    first, second = (c.name for c in registry.concepts("coco")[:2])
    split = {name: ConceptSplit(train=[ImageRecord(file=f"{name}.jpg", width=8, height=8, label=name)],
                                eval=[ImageRecord(file=f"{name}-eval.jpg", width=8, height=8, label=name)])
             for name in (first, second)}
    manifest = Manifest(dataset="coco", source="synthetic", seed=0, image_root=".", concepts=split)
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    narrow = load_config("smoke", params, {"study.grid_by_task": {"generation": {"concepts_per_dataset": 1}}})
    files = {key: sorted(r.file for r in records) for key, _, records, _ in feature_jobs(narrow, manifest)}
    assert files["tiny-sd"] == [f"{first}.jpg"]
    assert files["tiny-clip"] == sorted([f"{first}.jpg", f"{second}.jpg", f"{first}-eval.jpg", f"{second}-eval.jpg"])
    elsewhere = load_config("smoke", params, {"study.grid_by_task": {"generation": {"datasets": ["pascal"]}}})
    assert "tiny-sd" not in {key for key, *_ in feature_jobs(elsewhere, manifest)}


def _manifest_of_two_records():
    from visual_words.data.manifest import ConceptSplit, ImageRecord, Manifest

    concept = registry.concepts("coco")[0].name  # one the smoke grid trains with every model
    rec = ImageRecord(file="a.jpg", width=8, height=8, label=concept)
    return Manifest(dataset="coco", source="synthetic", seed=0, image_root=".",
                    concepts={concept: ConceptSplit(train=[rec], eval=[replace(rec, file="b.jpg")])})


def test_no_module_outside_the_families_names_a_family(repo_root):
    """Stages ask the family object; a family's name appears only in its own module (and the registry's data).
    The full-size stand-ins are per checkpoint (public configs of the paper's four models) and are exempt."""
    pattern = re.compile(r"""["'](stable-diffusion|owl-vit|open-clip|hf-clip)["']""")
    src = repo_root / "src" / "visual_words"
    exempt = {src / "models" / "full_size.py"}
    offenders = [f"{p.relative_to(repo_root)}:{i}" for p in src.rglob("*.py")
                 if "families" not in p.parts and p not in exempt
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
    assert Path(src / "models" / "families" / "stable_diffusion.py").is_file()


def test_every_family_the_registry_names_is_registered():
    """The registry sits below the models, so it cannot check its entries' families itself: this does, and an entry
    naming an unknown family fails where it is first used, naming the known ones."""
    from visual_words.models.families import family_of

    named = {entry.family for entry in registry.models().values()}
    assert {"stable-diffusion", "owl-vit", "open-clip", "hf-clip"} <= named
    assert named - set(families()) == set()
    with pytest.raises(ValueError, match=r"unknown model family `lstm` \(known: .*hf-clip"):
        family_of(replace(registry.model("tiny-clip-eval"), family="lstm"))
