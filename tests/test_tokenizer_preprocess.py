"""The shared CLIP BPE tokenizer (real vocabulary) and the CLIP image preprocessing, against real references."""

import numpy as np
import pytest

from visual_words import registry
from visual_words.tokenizer import EOS_ID, VOCAB_SIZE, clip_tokenizer, single_token_id, word_ids


def test_vocabulary_matches_open_clip():
    import open_clip

    tok = clip_tokenizer()
    assert len(tok) == VOCAB_SIZE
    text = "a photo of a strawberry next to a scuba diver"
    ours = tok(text).input_ids
    ref = open_clip.get_tokenizer("ViT-L-14")([text])[0].tolist()
    assert ours == ref[: len(ours)] and ours[-1] == EOS_ID
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_every_anchor_is_a_single_token():
    for c in registry.all_concepts():
        assert len(word_ids(c.anchor)) == 1, c


@pytest.mark.parametrize("name,anchor", [("sombrero", "hat"), ("scuba diver", "scuba")])
def test_reanchored_concepts_are_not_single_tokens(name, anchor):
    assert len(word_ids(name)) > 1
    with pytest.raises(ValueError, match="not a single CLIP-BPE token"):
        single_token_id(name)
    assert single_token_id(anchor) == word_ids(anchor)[0]
    assert any(c.name == name and c.anchor == anchor for c in registry.all_concepts())


def test_registry_has_40_concepts_10_per_dataset():
    ds = registry.datasets()
    assert sorted(ds) == ["coco", "dreambooth", "imagenet", "pascal"]
    assert all(len(v) == 10 for v in ds.values())
    assert registry.anchors("dreambooth")[:3] == ["cat", "vase", "duck"]


def test_clip_preprocessing_reproduces_openai_reference(shared_assets):
    from visual_words.preprocess import clip_transform, load_rgb

    d = shared_assets / "clip-preprocess-oracle"
    ours = clip_transform(224)(load_rgb(d / "franz-kafka.jpg")).numpy()
    ref = np.load(d / "expected_preprocessed_image.npy")
    assert ref.shape == (1, 3, 224, 224)
    assert np.array_equal(ours, ref[0])


def test_unreadable_image_names_file(tmp_path):
    from visual_words.preprocess import load_rgb

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: unreadable"):
        load_rgb(bad)
