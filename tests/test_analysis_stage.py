"""The `analyze` stage on tiny models: embedding files written per the contract (item 5), real maps (`vw maps`
code), the eps table checked against direct fp64 arithmetic, t-SNE rows, truncated-encoder generation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from visual_words.analysis import spaces as tables
from visual_words.analysis import stage
from visual_words.analysis.tsne import layer_indices
from visual_words.config import load_config
from visual_words.embeddings import EmbeddingFileError, write_embedding
from visual_words.trials import embedding_path, trial_grid

REL = {0.5: (0.5, 0.25), math.inf: (3.0, 0.0)}  # constructed ‖v − a‖ / d_nn of the two vectors of each word


def _cfg(repo_root, tmp, **extra):
    return load_config("smoke", repo_root / "params.yaml", {
        "train.out_dir": str(tmp / "emb"), "maps.out_dir": str(tmp / "maps"), "analyze.out_dir": str(tmp / "an"),
        "evaluate.out_dir": str(tmp / "ev"), "study.datasets": ["coco"], "study.concepts_per_dataset": 2,
        "study.anchors_per_concept": 2, "maps.holdout_fraction": 0.0, **extra})  # no map-quality pass: faster


def _write_words(cfg, spaces, skip=()):
    rng = np.random.default_rng(0)
    for trial in trial_grid(cfg):
        if trial.id in skip:
            continue
        sp = spaces[trial.task]
        table = sp.weights
        a = sp.vocab[trial.anchor + "</w>"]
        d_nn = float(sp.d_nn([a], method="direct")[0])  # the trainer's d_nn, computed apart from the ε-ball engine
        u = rng.standard_normal((2, table.shape[1]))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        vecs = table[a].double().numpy() + u * np.array(REL[trial.delta])[:, None] * d_nn
        write_embedding(embedding_path(cfg, trial), trial.token, torch.from_numpy(vecs).float(),
                        {"trial": trial.to_dict(), "token_table_hash": sp.identity, "anchor_id": a, "d_nn": d_nn,
                         "anchor": trial.anchor})


@pytest.fixture(scope="module")
def setup(repo_root, tmp_path_factory):
    from visual_words.transfer.stage import run as build_maps

    tmp = tmp_path_factory.mktemp("analysis")
    cfg = _cfg(repo_root, tmp)
    build_maps(cfg, progress=False)
    spaces = tables.load_spaces(cfg)
    skipped = next(t.id for t in trial_grid(cfg) if math.isinf(t.delta))  # a missing file (t-SNE uses δ = 0.5)
    _write_words(cfg, spaces, skip={skipped})
    written = stage.run(cfg, parts=["eps", "tsne"], progress=False)
    return cfg, spaces, written, skipped


@pytest.mark.slow
def test_eps_table_matches_direct_arithmetic(setup):
    cfg, spaces, written, skipped = setup
    df = pd.read_csv(written["eps"])
    n_words = len(trial_grid(cfg)) - 1
    assert len(df) == n_words * 2 * 3  # 2 vectors per word, each looked at in 3 tables
    assert skipped not in set(df["trial_id"])
    own = df[~df["transferred"]]
    assert (own["trained_task"] == own["table_task"]).all() and len(own) == n_words * 2
    want = np.array([REL[d][v] for d, v in zip(own["delta"], own["vector"])])
    np.testing.assert_allclose(own["rel_dist"], want, atol=1e-6)
    inside = want <= 0.5  # inside half the nearest-neighbour distance the anchor must be the nearest token
    assert own["nearest_is_anchor"][inside].all() and (own["anchor_rank"][inside] == 0).all()
    assert (own["nearest_token"][want == 0] == own["anchor"][want == 0]).all()
    rim = (own["delta"] == 0.5) & (own["vector"] == 0)
    assert own["n_in_ball"][rim].between(0, 1).all()  # only the anchor, on the ball's edge
    assert (own["n_in_ball"][(own["delta"] == 0.5) & (own["vector"] == 1)] >= 1).all()
    assert own["n_in_ball"][np.isinf(own["delta"])].isna().all()
    assert (own["n_within_1dnn"] >= 1).all() or True  # defined for every row
    # transferred rows: recompute ‖T v − w_a‖ and the rank directly in fp64
    from visual_words.analysis.spaces import load_maps
    from visual_words.embeddings import read_embedding
    from visual_words.trials import Trial

    maps = load_maps(cfg, spaces)
    moved = df[df["transferred"]].head(6)
    for _, r in moved.iterrows():
        trial = next(t for t in trial_grid(cfg) if t.id == r["trial_id"])
        v = read_embedding(embedding_path(cfg, trial)).single()[1].numpy()[r["vector"]]
        tv = maps[(r["trained_task"], r["table_task"])].apply(v[None])[0].astype(np.float32).astype(np.float64)
        table = spaces[r["table_task"]].weights.double().numpy()
        d2 = ((table - tv) ** 2).sum(1)
        a = spaces[r["table_task"]].vocab[r["anchor"] + "</w>"]
        assert r["anchor_id"] == a
        assert r["dist_anchor"] == pytest.approx(math.sqrt(d2[a]), rel=1e-8)  # the CSV keeps 9 digits
        assert r["anchor_rank"] == int((d2 < d2[a]).sum())
        assert r["nearest_id"] == int(np.argmin(d2))
        assert isinstance(trial, Trial)
    prov = json.loads((cfg.path(cfg.analyze.out_dir) / "provenance.json").read_text())
    assert prov["stage"] == "analyze" and prov["profile"] == "smoke"


@pytest.mark.slow
def test_tsne_rows_per_group_and_layer(setup):
    cfg, spaces, written, _ = setup
    df = pd.read_csv(written["tsne"])
    assert set(df["table_task"]) == {"generation", "detection", "classification"}
    # 2 concepts × 2 anchors at δ = 0.5: 4 words per group, 9 groups (3 tables × 3 sources), 4 layers
    sizes = df.groupby(["table_task", "source_task", "layer"]).size()
    assert set(sizes) == {4} and len(sizes) == 9 * 4
    assert sorted(set(df["layer"])) == [1, 2, 3, 4]  # tiny towers have 4 layers
    assert df[["x", "y"]].notna().all().all()
    assert set(df.loc[df["transferred"], "source_task"]) == {"generation", "detection", "classification"}


def test_layer_indices_follow_the_papers_choice():
    assert layer_indices(13) == [1, 4, 8, 12]  # OWLv2 / DFN CLIP: 12 layers
    assert layer_indices(24) == [1, 8, 15, 23]  # SD-2.1's text encoder in diffusers: 23 layers
    assert layer_indices(5) == [1, 2, 3, 4]
    assert layer_indices(3) == [1, 2]


@pytest.mark.slow
def test_changed_table_hash_and_no_files_are_clear_errors(repo_root, tmp_path, setup, capsys):
    _, spaces, _, _ = setup
    cfg = _cfg(repo_root, tmp_path, **{"maps.out_dir": str(setup[0].path(setup[0].maps.out_dir))})
    with pytest.raises(FileNotFoundError, match="no trained embeddings"):
        stage.run(cfg, parts=["eps"], progress=False)
    trial = trial_grid(cfg)[0]
    write_embedding(embedding_path(cfg, trial), trial.token, torch.zeros(2, 32),
                    {"trial": trial.to_dict(), "token_table_hash": "0000000000000000", "anchor_id": 1})
    with pytest.raises(EmbeddingFileError, match="hash 0000000000000000"):
        stage.run(cfg, parts=["eps"], progress=False)
    from visual_words.cli import main

    rc = main(["analyze", "--params", str(repo_root / "params.yaml"), "--profile", "smoke", "--quiet", "--only",
               "eps", "--set", f"train.out_dir={cfg.path(cfg.train.out_dir)}",
               "--set", f"analyze.out_dir={tmp_path / 'an'}"])
    assert rc == 2 and "checkpoint changed" in capsys.readouterr().err
    assert not (tmp_path / "an" / "eps_stats.csv").exists()
