"""Tiny random-weight checkpoints: built in each library's layout, loaded through the production loader."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from visual_words import registry
from visual_words.models.loading import load_model
from visual_words.models.tiny import build_tiny


def _entry_at(key, path):
    e = registry.model(key)
    ident = ("local-dir:" + str(path)) if e.library == "open_clip" else str(path)
    return dataclasses.replace(e, id=ident)


@pytest.mark.parametrize("key", ["tiny-sd", "tiny-owlv2", "tiny-clip", "tiny-clip-eval", "tiny-clip-w48"])
def test_round_trip_through_production_loader(key, tmp_path):
    entry = _entry_at(key, tmp_path / key)
    build_tiny(entry, tmp_path / key)
    m = load_model(entry, root=tmp_path)
    table = m.text_embedding.weight
    assert table.shape == (49408, entry.text_width)
    assert not table.requires_grad
    # the weights read back are the ones written to disk, bit for bit
    files = list((tmp_path / key).rglob("*.safetensors"))
    assert files
    saved = {}
    for f in files:
        saved.update(load_file(str(f)))
    match = [v for k, v in saved.items() if v.shape == table.shape]
    assert any(torch.equal(v, table) for v in match)


def test_builds_are_deterministic(tmp_path):
    e = _entry_at("tiny-clip", tmp_path / "a")
    build_tiny(e, tmp_path / "a")
    build_tiny(e, tmp_path / "b")
    a = load_file(str(tmp_path / "a" / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "open_clip_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sd_scheduler_is_v_prediction(tiny_sd):
    assert tiny_sd.pipeline.scheduler.config.prediction_type == "v_prediction"
    assert tiny_sd.pipeline.tokenizer.model_max_length == 77


def test_owl_context_is_16(tiny_owl):
    assert tiny_owl.processor.tokenizer.model_max_length == 16
    ids = tiny_owl.processor(text=["a cat"], return_tensors="pt", padding="max_length")["input_ids"]
    assert ids.shape == (1, 16)


def test_missing_local_checkpoint_is_a_clear_error(tmp_path):
    e = dataclasses.replace(registry.model("sd21"), id=str(tmp_path / "nowhere"), tiny=None)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(e)


def test_not_tiny_cannot_be_built(tmp_path):
    with pytest.raises(ValueError, match="not a tiny model"):
        build_tiny(registry.model("sd21"), tmp_path / "x")
