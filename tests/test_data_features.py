"""Image-side features against the libraries' own forward passes, and the feature cache's invalidation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

COCO_FILES = ("000000000009.jpg", "000000000025.jpg", "000000000030.jpg")  # 640x480, 640x426, 640x428


@pytest.fixture(scope="module")
def photos(shared_assets) -> list[Path]:
    return [shared_assets / "coco128" / "train2017" / f for f in COCO_FILES]


def _open(paths):
    return [Image.open(p).convert("RGB") for p in paths]


def test_owl_features_reproduce_the_detectors_own_logits_and_boxes(tiny_owl, photos):
    from visual_words.data.features import owl_image_embeds

    images = _open(photos)
    feats = owl_image_embeds(tiny_owl, images)
    n, p = 3, (64 // 16) ** 2
    assert feats["class_embeds"].shape == (n, p, 32) and feats["boxes"].shape == (n, p, 4)
    assert feats["logit_shift"].shape == feats["logit_scale"].shape == (n, p)
    assert torch.allclose(feats["class_embeds"].norm(dim=-1), torch.ones(n, p), atol=1e-4)
    assert feats["image_size"].tolist() == [[im.height, im.width] for im in images]
    # Owlv2ForObjectDetection.forward with two text queries: its logits must come out of the cached parts exactly
    inputs = tiny_owl.processor(text=[["a cat", "a bowl of soup"]] * n, images=images, return_tensors="pt")
    with torch.no_grad():
        out = tiny_owl.model(**inputs)
    q = out.text_embeds / (out.text_embeds.norm(dim=-1, keepdim=True) + 1e-6)  # [N, Q, D]
    logits = (torch.einsum("npd,nqd->npq", feats["class_embeds"], q) + feats["logit_shift"][..., None]) \
        * feats["logit_scale"][..., None]
    torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats["boxes"], out.pred_boxes)


def test_clip_features_match_the_models_own_normalised_embeddings(tiny_clip, tiny_clip_eval, photos):
    from visual_words.data.features import clip_image_embeds
    from visual_words.preprocess import clip_transform

    images = _open(photos)
    e = clip_image_embeds(tiny_clip, images)
    assert e.shape == (3, 32) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    with torch.no_grad():
        ref = tiny_clip.model.encode_image(torch.stack([tiny_clip.preprocess(im) for im in images]), normalize=True)
    torch.testing.assert_close(e, ref)
    # transformers CLIP: its forward's image_embeds are the normalised projected features
    h = clip_image_embeds(tiny_clip_eval, images)
    pixels = torch.stack([clip_transform(32)(im) for im in images])
    ids = tiny_clip_eval.processor.tokenizer(["a photo"], return_tensors="pt").input_ids
    with torch.no_grad():
        out = tiny_clip_eval.model(input_ids=ids, pixel_values=pixels)
    torch.testing.assert_close(h, out.image_embeds)


def test_feature_of_the_wrong_family_is_an_error(tiny_owl, tiny_clip, photos):
    from visual_words.data.features import clip_image_embeds, owl_image_embeds, sd_latents

    images = _open(photos[:1])
    with pytest.raises(ValueError, match="tiny-owlv2.*does not compute `clip_image_embeds`"):
        clip_image_embeds(tiny_owl, images)
    with pytest.raises(ValueError, match="tiny-clip.*does not compute `owl_image_embeds`"):
        owl_image_embeds(tiny_clip, images)
    with pytest.raises(ValueError, match="tiny-clip.*does not compute `sd_latents`"):
        sd_latents(tiny_clip, images)


def test_sd_latents_are_the_vae_mean_times_scaling_factor(tiny_sd, photos):
    from visual_words.data.features import sd_latents
    from visual_words.preprocess import sd_transform

    images = [im.resize((96, 96)) for im in _open(photos[:2])]  # square: the centre crop is then symmetric
    lat = sd_latents(tiny_sd, images)
    flipped = sd_latents(tiny_sd, images, flip=True)
    vae = tiny_sd.pipeline.vae
    assert lat.shape == (2, 4, 32, 32)  # 64 px / 2 (the tiny VAE downsamples once)
    x = torch.stack([sd_transform(64)(im) for im in images])
    with torch.no_grad():
        ref = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        ref_flip = vae.encode(torch.flip(x, dims=[-1])).latent_dist.mean * vae.config.scaling_factor
    torch.testing.assert_close(lat, ref)
    # flip=True encodes the mirror image
    torch.testing.assert_close(flipped, ref_flip, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(lat, flipped)


class _Rec:
    def __init__(self, file):
        self.file = file


class _Manifest:
    def __init__(self, root):
        self.root = Path(root)

    def path_of(self, rec):
        return self.root / rec.file


def _copy_photos(photos, folder: Path) -> list[_Rec]:
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy(p, folder / p.name)
    return [_Rec(p.name) for p in photos]


def test_cache_serves_hits_and_recomputes_when_an_image_changes(tiny_clip, photos, tmp_path):
    from visual_words.data.features import FeatureCache, clip_image_embeds

    recs = _copy_photos(photos, tmp_path / "img")
    m = _Manifest(tmp_path / "img")
    cache = FeatureCache(tmp_path / "cache", batch_size=2)
    first = cache.get("clip_image_embeds", tiny_clip, m, recs)
    assert (cache.hits, cache.misses) == (0, 3)
    torch.testing.assert_close(first, clip_image_embeds(tiny_clip, _open(photos)))
    again = FeatureCache(tmp_path / "cache").get("clip_image_embeds", tiny_clip, m, recs)
    torch.testing.assert_close(again, first)
    entries = sorted((tmp_path / "cache" / "clip_image_embeds").rglob("*.safetensors"))
    assert len(entries) == 3 and (entries[0].parent.parent / "model.json").is_file()
    # a changed image file (new content at the same path) misses and gets its own entry
    Image.open(photos[0]).rotate(90).save(tmp_path / "img" / photos[0].name)
    cache = FeatureCache(tmp_path / "cache")
    changed = cache.get("clip_image_embeds", tiny_clip, m, recs)
    assert (cache.hits, cache.misses) == (2, 1)
    assert not torch.allclose(changed[0], first[0]) and torch.equal(changed[1:], first[1:])
    # duplicates of one image are computed once; a damaged entry is recomputed, not read
    cache = FeatureCache(tmp_path / "cache")
    cache.get("clip_image_embeds", tiny_clip, m, [recs[1], recs[1]])
    assert (cache.hits, cache.misses) == (2, 0)
    entries[0].write_bytes(b"garbage")
    cache = FeatureCache(tmp_path / "cache")
    cache.get("clip_image_embeds", tiny_clip, m, recs)
    assert cache.misses == 1


def test_cache_recomputes_when_the_model_changes(tiny_owl, photos, tmp_path):
    from visual_words.data.features import FeatureCache, fingerprint

    recs = _copy_photos(photos[:2], tmp_path / "img")
    m = _Manifest(tmp_path / "img")
    before_fp = fingerprint("owl_image_embeds", tiny_owl)
    base = FeatureCache(tmp_path / "cache").get("owl_image_embeds", tiny_owl, m, recs)
    head = tiny_owl.model.class_head.dense0
    saved = head.bias.detach().clone()
    try:
        with torch.no_grad():
            head.bias += 0.5  # an in-place change of the weights
        assert fingerprint("owl_image_embeds", tiny_owl) != before_fp
        cache = FeatureCache(tmp_path / "cache")
        changed = cache.get("owl_image_embeds", tiny_owl, m, recs)
        assert (cache.hits, cache.misses) == (0, 2)
        assert not torch.allclose(changed["class_embeds"], base["class_embeds"])
        torch.testing.assert_close(changed["boxes"], base["boxes"])  # the box head did not change
    finally:
        with torch.no_grad():
            head.bias.copy_(saved)
    assert fingerprint("owl_image_embeds", tiny_owl) == before_fp
    cache = FeatureCache(tmp_path / "cache")
    again = cache.get("owl_image_embeds", tiny_owl, m, recs)
    assert (cache.hits, cache.misses) == (2, 0)
    assert set(again) == {"class_embeds", "logit_shift", "logit_scale", "boxes", "image_size"}
    # text-tower weights are not part of the image-side fingerprint
    emb = tiny_owl.text_embedding.weight
    row = emb[5].detach().clone()  # restored bit for bit (x + 1 - 1 is not x in floating point)
    with torch.no_grad():
        emb[5] += 1.0
    try:
        assert fingerprint("owl_image_embeds", tiny_owl) == before_fp
    finally:
        with torch.no_grad():
            emb[5].copy_(row)


@pytest.mark.slow
def test_cache_keys_differ_by_kind_and_model(tiny_sd, tiny_clip, tiny_clip_eval, photos, tmp_path):
    from visual_words.data.features import FeatureCache

    recs = _copy_photos(photos[:1], tmp_path / "img")
    m = _Manifest(tmp_path / "img")
    cache = FeatureCache(tmp_path / "cache")
    plain = cache.get("sd_latents", tiny_sd, m, recs)
    flip = cache.get("sd_latents_flip", tiny_sd, m, recs)
    assert plain.shape == flip.shape == (1, 4, 32, 32) and not torch.allclose(plain, flip)
    a = cache.get("clip_image_embeds", tiny_clip, m, recs)
    b = cache.get("clip_image_embeds", tiny_clip_eval, m, recs)
    assert cache.misses == 4 and a.shape == b.shape == (1, 32)
    assert cache.folder("clip_image_embeds", tiny_clip) != cache.folder("clip_image_embeds", tiny_clip_eval)
    with pytest.raises(ValueError, match="unknown feature kind `nope`"):
        cache.get("nope", tiny_clip, m, recs)
    with pytest.raises(ValueError, match="tiny-clip.*does not compute `sd_latents`"):
        cache.get("sd_latents", tiny_clip, m, recs)


def test_unreadable_image_is_named(tiny_clip, tmp_path, photos):
    from visual_words.data.features import FeatureCache

    recs = _copy_photos(photos[:1], tmp_path / "img")
    path = tmp_path / "img" / recs[0].file
    path.write_bytes(path.read_bytes()[:2000])  # truncated JPEG
    with pytest.raises(ValueError, match=f"{path}: unreadable or truncated image"):
        FeatureCache(tmp_path / "cache").get("clip_image_embeds", tiny_clip, _Manifest(tmp_path / "img"), recs)
    with pytest.raises(FileNotFoundError, match="missing.jpg: file not found"):
        FeatureCache(tmp_path / "cache").get("clip_image_embeds", tiny_clip, _Manifest(tmp_path / "img"),
                                             [_Rec("missing.jpg")])


def test_half_precision_models_get_their_own_cache_entries(tiny_owl, photos, tmp_path, repo_root):
    """A model loaded in half precision (as on a GPU) is another fingerprint; OWL class embeddings keep its dtype."""
    from visual_words.data.features import FeatureCache, fingerprint
    from visual_words.models.loading import load_model

    half = load_model("tiny-owlv2", precision="bf16", root=repo_root)
    assert fingerprint("owl_image_embeds", half) != fingerprint("owl_image_embeds", tiny_owl)
    recs = _copy_photos(photos[:1], tmp_path / "img")
    cache = FeatureCache(tmp_path / "cache")
    out = cache.get("owl_image_embeds", half, _Manifest(tmp_path / "img"), recs)
    assert out["class_embeds"].dtype == torch.bfloat16 and out["boxes"].dtype == torch.float32
    back = FeatureCache(tmp_path / "cache").get("owl_image_embeds", half, _Manifest(tmp_path / "img"), recs)
    assert back["class_embeds"].dtype == torch.bfloat16 and torch.equal(back["class_embeds"], out["class_embeds"])
    full = cache.get("owl_image_embeds", tiny_owl, _Manifest(tmp_path / "img"), recs)
    assert cache.misses == 2 and full["class_embeds"].dtype == torch.float32
    torch.testing.assert_close(full["class_embeds"], out["class_embeds"].float(), atol=0.05, rtol=0.05)
