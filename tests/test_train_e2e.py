"""Training end to end on the smoke profile's real pipeline: manifests and feature caches made by the data stage
(synthetic COCO-format images), trial data built from them (D3-D5), and `vw train` writing the embedding files."""

import json
import math

import pytest
import torch

from visual_words.cli import main
from visual_words.data.manifest import manifest_path, read_manifest
from visual_words.embeddings import read_embedding
from visual_words.models.adapters import adapter_for
from visual_words.train.targets import build_trial_data, draw_batch
from visual_words.trials import Trial, embedding_path


@pytest.fixture(scope="module")
def prepared(repo_root, tmp_path_factory):
    """The smoke profile's COCO manifest and feature caches, made by the data stage into a temp folder."""
    from visual_words.config import load_config
    from visual_words.data.prepare import prepare

    tmp = tmp_path_factory.mktemp("prepared")
    cfg = load_config("smoke", repo_root / "params.yaml", {
        "prepare.manifests_dir": str(tmp / "manifests"), "prepare.cache_dir": str(tmp / "cache"),
        "train.out_dir": str(tmp / "embeddings"), "study.datasets": ["coco"]})
    prepare(cfg, progress=False)
    return cfg


@pytest.mark.slow
def test_trial_data_from_the_manifest_and_feature_cache(prepared, tiny_sd, tiny_owl, tiny_clip):
    from visual_words.data.features import FeatureCache

    cfg = prepared
    m = read_manifest(manifest_path(cfg, "coco"))
    concept = next(iter(m.concepts))
    train = m.concepts[concept].train
    others = [r for c, s in m.concepts.items() if c != concept for r in s.train]
    cache = FeatureCache(cfg)

    # classification (D5): positives = the concept's training images, negatives = the other concepts'
    t = Trial("classification", "tiny-clip", "coco", concept, "cup", 0.5)
    (d,) = build_trial_data(cfg, adapter_for(tiny_clip), [t], m)
    pos = cache.get("clip_image_embeds", tiny_clip, m, train)
    neg = cache.get("clip_image_embeds", tiny_clip, m, others)
    torch.testing.assert_close(d.direction, neg.mean(0) - pos.mean(0))
    assert d.stats == {"positives": len(train), "negatives": len(others)}
    assert cache.misses == 0  # prepare filled the cache; training only reads it

    # detection (D4): every image holds a box of its concept, so at least one positive per image
    t = Trial("detection", "tiny-owlv2", "coco", concept, "cup", math.inf)
    (d,) = build_trial_data(cfg, adapter_for(tiny_owl), [t], m)
    feats = cache.get("owl_image_embeds", tiny_owl, m, train)
    n, p = feats["boxes"].shape[:2]
    assert d.stats["positives"] >= len(train) and d.stats["positives"] + d.stats["negatives"] == n * p
    assert d.direction.shape == (feats["class_embeds"].shape[-1],)

    # generation (D3): the VAE latents of the training images; batches draw from them
    a = adapter_for(tiny_sd)
    t = Trial("generation", "tiny-sd", "coco", concept, "cup", math.inf)
    (d,) = build_trial_data(cfg, a, [t], m)
    torch.testing.assert_close(d.latents, cache.get("sd_latents", tiny_sd, m, train))
    batch = draw_batch(a, [d], [torch.Generator().manual_seed(0)], 3)
    assert batch["latents"].shape == (1, 3, *d.latents.shape[1:]) and len(batch["prompts"][0]) == 3
    assert all("{}" in p for p in batch["prompts"][0])
    assert int(batch["timesteps"].max()) < a.num_train_timesteps

    with pytest.raises(ValueError, match="not in the coco manifest"):
        build_trial_data(cfg, a, [Trial("generation", "tiny-sd", "coco", "zebra", "cup", 0.5)], m)


def _cli_args(cfg):
    return ["--profile", "smoke", "--params", cfg.source, "--set", f"prepare.manifests_dir={cfg.prepare.manifests_dir}",
            "--set", f"prepare.cache_dir={cfg.prepare.cache_dir}", "--set", f"train.out_dir={cfg.train.out_dir}",
            "--set", "study.datasets=[coco]", "--set", "train.steps=4", "--set", "train.batch_size=2"]


@pytest.mark.slow
def test_vw_train_writes_one_file_per_trial_and_skips_them_next_time(prepared, capsys):
    from visual_words.commands.train import select_trials

    cfg = prepared
    concept = next(iter(read_manifest(manifest_path(cfg, "coco")).concepts))
    assert main(["train", *_cli_args(cfg), "--concept", concept, "--no-progress"]) == 0
    out = capsys.readouterr().out
    trials = select_trials(cfg, concept=concept)
    assert len(trials) == 12 and f"[train] {len(trials)} trained, 0 already done" in out  # 3 tasks × 2 anchors × 2 δ
    for t in trials:
        emb = read_embedding(embedding_path(cfg, t))
        assert emb.meta["trial"]["id"] == t.id and emb.meta["steps"] == 4
        curve = emb.meta["curves"]["loss"]
        assert len(curve) == len(emb.meta["curves"]["step"]) and all(math.isfinite(x) for x in curve)
        if t.constrained:
            assert emb.meta["final_rel_dist"] <= t.delta * (1 + 1e-6)
    for task in ("generation", "detection", "classification"):
        prov = json.loads((cfg.path(cfg.train.out_dir) / task / "provenance.json").read_text())
        assert prov["stage"] == "train" and prov["profile"] == "smoke"
    mtimes = {t.id: embedding_path(cfg, t).stat().st_mtime_ns for t in trials}

    assert main(["train", *_cli_args(cfg), "--concept", concept, "--no-progress"]) == 0
    assert f"0 trained, {len(trials)} already done" in capsys.readouterr().out
    assert {t.id: embedding_path(cfg, t).stat().st_mtime_ns for t in trials} == mtimes

    # a changed setting that determines the result (reuse.trial_key) trains again
    assert main(["train", *_cli_args(cfg), "--concept", concept, "--task", "classification", "--anchor",
                 trials[0].anchor, "--delta", "inf", "--set", "train.steps=3", "--no-progress"]) == 0
    assert "1 trained, 0 already done" in capsys.readouterr().out


def test_vw_train_clear_errors(repo_root, tmp_path, capsys):
    args = ["train", "--profile", "smoke", "--set", f"prepare.manifests_dir={tmp_path / 'none'}",
            "--set", f"train.out_dir={tmp_path / 'emb'}", "--no-progress"]
    assert main([*args, "--task", "classification", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "manifest not found" in err and str(tmp_path / "none") in err
    assert main([*args, "--concept", "unicorn"]) == 2
    assert "no trial of profile `smoke` matches concept=unicorn" in capsys.readouterr().err
    assert main([*args, "--delta", "big"]) == 2
    assert "--delta must be a number or inf" in capsys.readouterr().err
    assert not (tmp_path / "emb").exists()  # nothing written


def test_a_done_trial_on_another_token_table_is_trained_again(prepared, tiny_clip):
    """The sidecar's token_table_hash is part of "done": when the model is loaded for pending trials, a finished
    trial recorded on another table (the checkpoint changed under the same id and revision) is retrained."""
    from visual_words.config import load_config
    from visual_words.train.loop import is_done, train_trials
    from visual_words.trials import trial_grid

    cfg = load_config("smoke", prepared.source, {
        "prepare.manifests_dir": prepared.prepare.manifests_dir, "prepare.cache_dir": prepared.prepare.cache_dir,
        "train.out_dir": str(prepared.path(prepared.train.out_dir).parent / "table-check"),
        "study.datasets": ["coco"], "train.steps": 2})
    first, second, third = [t for t in trial_grid(cfg) if t.task == "classification"][:3]
    done = train_trials(cfg, [first, second], loaded=tiny_clip, progress=False)
    assert not any(r.skipped for r in done) and is_done(cfg, first) and is_done(cfg, second)
    side = embedding_path(cfg, second).with_name(embedding_path(cfg, second).name + ".json")
    meta = json.loads(side.read_text())
    meta["token_table_hash"] = "0" * 16  # recorded on a table the model no longer has
    side.write_text(json.dumps(meta))
    assert is_done(cfg, second) and not is_done(cfg, second, table=done[0].meta["token_table_hash"])
    again = {r.trial.id: r.skipped for r in train_trials(cfg, [first, second, third], loaded=tiny_clip,
                                                         progress=False)}
    assert again == {first.id: True, second.id: False, third.id: False}
