"""The `maps` stage on tiny models: `vw maps` writes maps + sidecars + quality + provenance; `map_between` serves
maps for checkpoints outside the study (fitted on demand, cached, refused or refitted when stale)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from visual_words.cli import main
from visual_words.config import load_config
from visual_words.embeddings import table_hash
from visual_words.models.token_table import TokenTable
from visual_words.transfer import load_map, map_between, map_path, save_map


@pytest.fixture(scope="module")
def tiny_clip_w48():
    from visual_words.models.loading import load_model

    return load_model("tiny-clip-w48")


def _cfg(repo_root, tmp_path, **extra):
    return load_config("smoke", repo_root / "params.yaml", {"maps.out_dir": str(tmp_path / "maps"), **extra})


@pytest.mark.slow
def test_vw_maps_writes_every_ordered_pair_with_provenance(repo_root, tmp_path, capsys, tiny_clip, tiny_clip_w48):
    out = tmp_path / "maps"
    rc = main(["maps", "--profile", "smoke", "--params", str(repo_root / "params.yaml"), "--quiet",
               "--models", "tiny-clip", "tiny-clip-w48", "--set", f"maps.out_dir={out}"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "tiny-clip-w48" in printed and "wrote 2 maps" in printed
    cfg = _cfg(repo_root, tmp_path)
    fwd = load_map(map_path(cfg, "tiny-clip", "tiny-clip-w48"))
    back = load_map(map_path(cfg, "tiny-clip-w48", "tiny-clip"))
    assert (fwd.d_src, fwd.d_dst) == (32, 48) and (back.d_src, back.d_dst) == (48, 32)
    assert fwd.meta["n_fit_tokens"] == 49406  # 49,408 minus <|startoftext|> and <|endoftext|>
    src = TokenTable.of(tiny_clip)
    assert fwd.meta["src_table_hash"] == table_hash(src.weights) == src.identity
    assert fwd.meta["dst_table_hash"] == table_hash(TokenTable.of(tiny_clip_w48).weights)
    assert fwd.meta["quality"]["n_heldout"] == 4941
    # Random, unrelated tables: nothing to transfer, and the quality says so.
    assert abs(fwd.meta["quality"]["r2"]) < 0.02 and fwd.meta["quality"]["retrieval_at_1"] < 0.01
    rows = list(csv.DictReader(open(out / "quality.csv")))
    assert [(r["src_key"], r["dst_key"]) for r in rows] == [
        ("tiny-clip", "tiny-clip-w48"), ("tiny-clip-w48", "tiny-clip")]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stage"] == "maps" and prov["config"]["maps"]["estimator"] == "ols"
    # Same estimator, a map is identical when refitted (deterministic), and a bad estimator is a clear error.
    assert main(["maps", "--profile", "smoke", "--params", str(repo_root / "params.yaml"), "--quiet",
                 "--models", "tiny-clip", "tiny-clip-w48", "--set", f"maps.out_dir={out}",
                 "--set", "maps.estimator=lasso"]) == 2
    assert "`maps.estimator` must be one of ols, ridge, procrustes, affine, got 'lasso'" in capsys.readouterr().err


def test_map_between_fits_on_demand_caches_and_handles_stale_files(repo_root, tmp_path, tiny_clip, tiny_clip_w48):
    cfg = _cfg(repo_root, tmp_path, **{"maps.holdout_fraction": 0.0})
    path = map_path(cfg, "tiny-clip", "tiny-clip-w48")
    assert not path.exists()
    lm = map_between(cfg, tiny_clip, tiny_clip_w48)
    assert path.is_file() and lm.weight.shape == (32, 48)
    # Applying it maps a token row of one model into the other model's width.
    assert lm.apply(TokenTable.of(tiny_clip).weights[320:321]).shape == (1, 48)
    again = map_between(cfg, tiny_clip, tiny_clip_w48, fit_missing=False)
    np.testing.assert_array_equal(again.weight, lm.weight)
    # A map whose recorded table hash no longer matches (changed checkpoint) is refused, or refitted on request.
    stale = load_map(path)
    stale.meta["src_table_hash"] = "0000000000000000"
    stale.weight = np.zeros_like(stale.weight)
    save_map(path, stale)
    with pytest.raises(ValueError, match="checkpoint changed"):
        map_between(cfg, tiny_clip, tiny_clip_w48, fit_missing=False)
    refit = map_between(cfg, tiny_clip, tiny_clip_w48)
    np.testing.assert_allclose(refit.weight, lm.weight, atol=1e-12)
    with pytest.raises(FileNotFoundError, match="vw maps"):
        map_between(cfg, tiny_clip_w48, tiny_clip, fit_missing=False)
    # Other `maps` settings (declared to affect maps) make the cached map stale too: refused, or refitted.
    other = _cfg(repo_root, tmp_path, **{"maps.holdout_fraction": 0.0, "maps.seed": 1})
    with pytest.raises(ValueError, match="reuse key differs"):
        map_between(other, tiny_clip, tiny_clip_w48, fit_missing=False)
    assert map_between(other, tiny_clip, tiny_clip_w48).meta["holdout_seed"] == 1
    assert load_map(path).meta["reuse_key"] != refit.meta["reuse_key"]
