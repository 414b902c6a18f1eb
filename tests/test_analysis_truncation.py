"""Fig. 7's truncated text encoder on the tiny SD pipeline: the cut equals the encoder's own hidden state after N
layers through its final LayerNorm, the full list comes back, and the stage part writes one image per depth."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from visual_words.analysis.spaces import Trained
from visual_words.analysis.truncation import depths, encoder_layers, pick_word, run_truncation, truncated
from visual_words.config import load_config
from visual_words.trials import Trial


def test_depths_are_evenly_spaced_and_unique():
    assert depths(23, 6) == [1, 5, 10, 14, 19, 23]
    assert depths(4, 6) == [1, 2, 3, 4]
    assert depths(12, 1) == [1]


def test_truncated_encoder_is_the_hidden_state_after_n_layers(tiny_sd):
    from visual_words.models.adapters import adapter_for

    ad = adapter_for(tiny_sd)
    enc = ad.text_model
    full = encoder_layers(enc).layers
    ids = tiny_sd.tokenizer(["a photo of a cat"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = enc(input_ids=ids, output_hidden_states=True).hidden_states
        for depth in (1, 2, len(full)):
            with truncated(enc, depth):
                assert len(encoder_layers(enc).layers) == depth
                cut = enc(input_ids=ids).last_hidden_state
            want = getattr(enc, "text_model", enc).final_layer_norm(hidden[depth])
            torch.testing.assert_close(cut, want, rtol=1e-5, atol=1e-5)
    assert encoder_layers(enc).layers is full  # restored
    with pytest.raises(ValueError, match="outside 1.."):
        with truncated(enc, len(full) + 1):
            pass


def _word(task="generation", concept="cup", anchor="dog", delta=0.5, d=32):
    t = Trial(task, "tiny-sd", "coco", concept, anchor, delta)
    return Trained(t, None, np.random.default_rng(0).standard_normal((2, d)).astype(np.float32) * 0.01, 1)


def test_pick_word_prefers_the_configured_word_then_an_unrelated_anchor(repo_root):
    cfg = load_config("smoke", repo_root / "params.yaml", {"analyze.truncation_word": "coco/cup/laptop"})
    words = [_word(concept="cup", anchor="cup"), _word(concept="cup", anchor="laptop"),
             _word(concept="cup", anchor="scissors", delta=math.inf)]
    assert pick_word(cfg, words).trial.anchor == "laptop"
    cfg = load_config("smoke", repo_root / "params.yaml", {"analyze.truncation_word": ""})
    assert pick_word(cfg, words[:1] + words[1:]).trial.anchor == "laptop"  # cup's own anchor is cup: skipped
    assert pick_word(cfg, [_word(task="detection")]) is None


@pytest.mark.slow
def test_run_truncation_writes_an_image_per_depth(repo_root, tmp_path, tiny_sd):
    cfg = load_config("smoke", repo_root / "params.yaml", {"analyze.out_dir": str(tmp_path / "an"),
                                                             "analyze.truncation_depths": 3})
    spaces = {"generation": SimpleNamespace(key="tiny-sd")}
    path = run_truncation(cfg, spaces, [_word(d=tiny_sd.text_embedding.weight.shape[1])], progress=False)
    df = pd.read_csv(path)
    n_layers = len(encoder_layers(tiny_sd.pipeline.text_encoder).layers)
    assert list(df["depth"]) == depths(n_layers, 3) and (df["num_layers"] == n_layers).all()
    images = [(tmp_path / "an" / p) for p in df["path"]]
    assert all(p.is_file() and p.stat().st_size > 100 for p in images)
    from PIL import Image

    arrays = [np.asarray(Image.open(p)) for p in images]
    assert not np.array_equal(arrays[0], arrays[-1])  # the cut changes the conditioning, so the image
