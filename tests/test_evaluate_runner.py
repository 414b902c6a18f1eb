"""Evaluation on the tiny models: a token equal to its anchor behaves like the anchor word on every task (the
chance-floor property, docs/paper.md §2.3), and the evaluate stage writes the contract's table, reusing finished
work."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from visual_words import registry
from visual_words.config import load_config
from visual_words.data.features import FeatureCache
from visual_words.data.manifest import Box, ConceptSplit, ImageRecord, Manifest, manifest_path, write_manifest
from visual_words.embeddings import table_hash, write_embedding
from visual_words.evaluate import tasks as T
from visual_words.evaluate.metrics import (
    GroundTruthImage,
    classification_accuracy,
    cxcywh_to_pixel_xywh,
    detection_ap,
    detections_for_query,
    ground_truth_for,
    owl_scores,
)
from visual_words.evaluate.runner import COLUMNS, read_table, run_evaluation
from visual_words.models.adapters import adapter_for
from visual_words.models.token_table import TokenTable
from visual_words.registry import study_concepts
from visual_words.trials import Trial

DATASET = "coco"
COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200)]


def _draw_manifest(root, concepts, per_split=2, seed=0):
    """A tiny dataset: each image shows its concept as a coloured rectangle (a known box) on a noisy background."""
    rng = np.random.default_rng(seed)
    splits = {}
    for ci, c in enumerate(concepts):
        recs = {"train": [], "eval": []}
        for split in recs:
            for j in range(per_split):
                w, h = 64 + 16 * j, 48
                px = rng.integers(90, 160, size=(h, w, 3), dtype=np.uint8)
                x, y, bw, bh = 8 + 4 * j, 6, 30, 24
                px[y : y + bh, x : x + bw] = COLOURS[ci % len(COLOURS)]
                name = f"{split}/{c}_{j}.png"
                (root / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(px).save(root / name)
                recs[split].append(ImageRecord(name, w, h, c, (Box(c, (float(x), float(y), float(bw), float(bh))),)))
        splits[c] = ConceptSplit(recs["train"], recs["eval"])
    return Manifest(DATASET, "synthetic", seed, str(root), splits)


@pytest.fixture(scope="module")
def study(tmp_path_factory, repo_root):
    """A smoke config whose every output goes to a temp folder, with a drawn manifest for the smoke concepts."""
    tmp = tmp_path_factory.mktemp("eval")
    cfg = load_config("smoke", repo_root / "params.yaml", {
        "prepare.manifests_dir": str(tmp / "manifests"), "prepare.cache_dir": str(tmp / "cache"),
        "train.out_dir": str(tmp / "embeddings"), "maps.out_dir": str(tmp / "maps"),
        "evaluate.out_dir": str(tmp / "evaluation"), "maps.holdout_fraction": 0.0,
        "evaluate.inference_steps": 2, "study.datasets": [DATASET]})
    concepts = [c.name for c in study_concepts(cfg, DATASET)]
    manifest = _draw_manifest(tmp / "images", concepts)
    write_manifest(manifest_path(cfg, DATASET), manifest)
    return cfg, manifest


def _anchor_vectors(adapter, anchors, n=1):
    table = TokenTable.of(adapter).weights
    return torch.stack([table[adapter.anchor_id(a)][None].repeat(n, 1) for a in anchors])


# ---------------------------------------------------------------------------------------------------------------
# The chance-floor property, per task, on the tiny models: token = anchor row ⇒ the metric of the anchor word.


def test_classification_token_at_its_anchor_scores_like_the_anchor_word(study, tiny_clip):
    cfg, manifest = study
    adapter = adapter_for(tiny_clip)
    concepts = study_concepts(cfg, DATASET)
    anchors = [c.anchor for c in concepts]  # the 10×10 design: every concept's anchor list is the dataset's names
    features = FeatureCache(cfg)
    for ti, target in enumerate(concepts):
        got = T.classification(cfg, adapter, features, manifest, target.name, _anchor_vectors(adapter, anchors))
        images = features.get("clip_image_embeds", tiny_clip, manifest, manifest.concepts[target.name].eval)
        for anchor, res in zip(anchors, got):
            # Reference: plain prompts (no splicing), the target's prompt naming the anchor word.
            prompts = [f"a photo of a {anchor if i == ti else c.prompt_name}" for i, c in enumerate(concepts)]
            ref = classification_accuracy(images, adapter.text_outputs(prompts, None)[0], ti).item()
            assert res["value"] == pytest.approx(ref, abs=1e-12), (target.name, anchor)
        # The trial whose anchor is the concept's own word is exactly the plain zero-shot classifier.
        plain = [f"a photo of a {c.prompt_name}" for c in concepts]
        assert got[ti]["value"] == classification_accuracy(images, adapter.text_outputs(plain, None)[0], ti).item()


def test_detection_token_at_its_anchor_scores_like_the_anchor_word(study, tiny_owl):
    cfg, manifest = study
    adapter = adapter_for(tiny_owl)
    concepts = study_concepts(cfg, DATASET)
    anchors = [c.anchor for c in concepts]
    features = FeatureCache(cfg)
    target = concepts[0].name
    got = T.detection(cfg, adapter, features, manifest, target, _anchor_vectors(adapter, anchors))
    records = [r for c in concepts for r in manifest.concepts[c.name].eval]
    feats = features.get("owl_image_embeds", tiny_owl, manifest, records)
    boxes = [cxcywh_to_pixel_xywh(feats["boxes"][i], r.width, r.height) for i, r in enumerate(records)]
    gt = ground_truth_for([GroundTruthImage(i + 1, r.width, r.height, tuple(b.bbox for b in r.boxes_of(target)))
                           for i, r in enumerate(records)])
    assert len(gt["annotations"]) == 2  # the target's two held-out boxes, among 6 images
    for anchor, res in zip(anchors, got):
        query = adapter.text_outputs([anchor], None)[0]  # the bare word, as OWL is queried
        scores = owl_scores(feats["class_embeds"], feats["logit_shift"], feats["logit_scale"], query)[0]
        ref = detection_ap(gt, detections_for_query(scores, boxes, list(range(1, len(records) + 1))))
        assert 0.0 <= res["value"] <= 1.0
        assert (res["value"], res["ap50"]) == pytest.approx((ref["map"], ref["ap50"]), abs=1e-12), anchor


@pytest.mark.slow
def test_generation_token_at_its_anchor_generates_what_the_anchor_word_generates(study, tiny_sd, tiny_clip_eval,
                                                                                 tmp_path):
    cfg, _ = study
    sd = adapter_for(tiny_sd)
    anchors = [c.anchor for c in study_concepts(cfg, DATASET)][:2]
    seeds = [11, 12]
    vectors = _anchor_vectors(sd, anchors)
    # The conditioning is diffusers' own encoding of the anchor word (and of the empty negative prompt); a random
    # UNet barely reads its text, so this is the check with teeth, the images below the end-to-end one.
    cond = sd.text_outputs([T.GENERATION_PROMPT], vectors)[:, 0]
    uncond = sd.text_outputs([T.NEGATIVE_PROMPT], None)[0, 0]
    for k, anchor in enumerate(anchors):
        pos, neg = tiny_sd.pipeline.encode_prompt(f"a photo of a {anchor}", "cpu", 1, True, T.NEGATIVE_PROMPT)
        torch.testing.assert_close(cond[k], pos[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(uncond, neg[0], rtol=0, atol=1e-6)
    assert not torch.allclose(cond[0], cond[1])
    images = T.generate(cfg, sd, vectors, seeds)
    for anchor, seed, ims in zip(anchors, seeds, images):
        # Reference: diffusers' own prompt path with the anchor word, the same seed.
        ref = tiny_sd.pipeline(prompt=f"a photo of a {anchor}", negative_prompt="",
                               num_inference_steps=cfg.evaluate.inference_steps,
                               guidance_scale=cfg.evaluate.guidance_scale,
                               generator=torch.Generator("cpu").manual_seed(T.generation_seed(seed, 0))).images[0]
        diff = np.abs(np.asarray(ims[0], dtype=np.int16) - np.asarray(ref, dtype=np.int16)).max()
        assert diff <= 1, (anchor, diff)
    # The whole metric: kept PNGs, one accuracy per trial in {0, 1} (one image each).
    keep = [tmp_path / "a", None]
    res = T.generation(cfg, sd, adapter_for(tiny_clip_eval), DATASET, study_concepts(cfg, DATASET)[0].name,
                       _anchor_vectors(sd, anchors), seeds, keep)
    assert [r["value"] in (0.0, 1.0) for r in res] == [True, True]
    assert (tmp_path / "a__0.png").is_file() and not list(tmp_path.glob("None*"))


# ---------------------------------------------------------------------------------------------------------------
# The stage


def _write_trials(cfg, loaded_by_task):
    """Embedding files of trained tokens (vectors = the anchor row, n = 2) for 2 trials per trained task."""
    concepts = study_concepts(cfg, DATASET)
    out = []
    for task, loaded in loaded_by_task.items():
        adapter = adapter_for(loaded)
        for c, anchor, delta in ((concepts[0], concepts[0].anchor, 0.5), (concepts[1], concepts[0].anchor, math.inf)):
            t = Trial(task, loaded.entry.key, DATASET, c.name, anchor, delta, cfg.study.seed)
            path = cfg.path(cfg.train.out_dir) / task / f"{t.slug}.safetensors"
            write_embedding(path, t.token, _anchor_vectors(adapter, [anchor], n=2)[0],
                            {"trial": t.to_dict(), "model_key": loaded.entry.key,
                             "token_table_hash": table_hash(TokenTable.of(adapter).weights), "anchor": anchor})
            out.append(t)
    return out


@pytest.mark.slow
def test_evaluate_stage_writes_the_table_and_reuses_finished_work(study, tiny_sd, tiny_owl, tiny_clip, capsys):
    from visual_words.cli import main
    from visual_words.transfer.stage import run as build_maps

    cfg, _ = study
    trials = _write_trials(cfg, {"generation": tiny_sd, "detection": tiny_owl, "classification": tiny_clip})
    build_maps(cfg, progress=False)
    res = run_evaluation(cfg, progress=False)
    assert res.n_rows == len(trials) * 3 and res.n_evaluated == res.n_rows and res.n_reused == 0
    with open(res.table) as f:
        assert next(csv.reader(f)) == COLUMNS
    df = read_table(res.table)
    assert len(df) == 18 and set(df.metric) == {"gen_acc", "map", "cls_acc"}
    assert (df.transferred == (df.trained_task != df.eval_task)).all()
    assert df.loc[df.eval_task != "detection", "ap50"].isna().all()
    assert df.loc[df.eval_task == "detection", "ap50"].notna().all()
    assert np.isinf(df.delta).sum() == 9 and set(df.delta[~np.isinf(df.delta)]) == {0.5}
    assert df.value.between(0, 1).all()
    # In-domain classification of a token at its anchor = the plain classifier with the anchor word.
    row = df[(df.trained_task == "classification") & (df.eval_task == "classification") & (df.delta == 0.5)].iloc[0]
    direct = T.classification(cfg, adapter_for(tiny_clip), FeatureCache(cfg), read_manifest_for(cfg), row.concept,
                              _anchor_vectors(adapter_for(tiny_clip), [row.anchor], n=2))[0]["value"]
    assert row.value == pytest.approx(direct)
    images = sorted(p.name for p in (cfg.path(cfg.evaluate.out_dir) / "images").glob("*__0.png"))
    assert images == sorted(f"{t.slug}__0.png" for t in trials)  # keep_images_per_trial = 1, one per trial
    drawn = sorted((cfg.path(cfg.evaluate.out_dir) / "images").glob("*__det.png"))
    assert [p.name for p in drawn] == sorted(f"{t.slug}__det.png" for t in trials)  # every trial's detections
    from PIL import Image

    with Image.open(drawn[0]) as im:
        assert min(im.size) == 256 and (230, 20, 20) in set(im.getdata())  # boxes drawn in red
    summary = pd.read_csv(res.summary)
    assert len(summary) == 3 * 3 * 2 and (summary.n == 1).all()  # (trained, evaluated) × 2 δ, one trial each
    assert (cfg.path(cfg.evaluate.out_dir) / "provenance.json").is_file()

    # A rerun reuses every row (nothing changed) and writes the same table.
    before = res.table.read_text()
    again = run_evaluation(cfg, progress=False)
    assert again.n_reused == 18 and again.n_evaluated == 0 and again.table.read_text() == before
    # A changed map invalidates exactly the rows evaluated through it.
    from visual_words.transfer.files import load_map, map_path, save_map

    p = map_path(cfg, "tiny-clip", "tiny-owlv2")
    m = load_map(p)
    m.weight = m.weight * 0.5
    save_map(p, m)
    third = run_evaluation(cfg, tasks=["detection"], progress=False)
    assert third.n_evaluated == 2 and third.n_reused == 4
    # The CLI: the stage (everything reused now) and summarize.
    sets = [a for k in ("prepare.manifests_dir", "prepare.cache_dir", "train.out_dir", "maps.out_dir",
                        "evaluate.out_dir") for a in ("--set", f"{k}={cfg.path(_get(cfg, k))}")]
    args = ["--params", str(cfg.source), "--profile", "smoke", "--set", "maps.holdout_fraction=0.0",
            "--set", "evaluate.inference_steps=2", *sets]
    assert main(["evaluate", "run", "--quiet", *args]) == 0
    assert "18 rows (0 newly evaluated, 18 reused)" in capsys.readouterr().out
    assert main(["evaluate", "summarize", *args, "--set", "evaluate.bootstrap_resamples=50"]) == 0
    assert "summary.csv" in capsys.readouterr().out


def _get(cfg, dotted):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def read_manifest_for(cfg):
    from visual_words.data.manifest import read_manifest

    return read_manifest(manifest_path(cfg, DATASET))


def test_missing_maps_and_embeddings_are_clear_errors(study, repo_root, tmp_path):
    cfg, _ = study
    empty = load_config("smoke", repo_root / "params.yaml", {"train.out_dir": str(tmp_path / "none")})
    with pytest.raises(FileNotFoundError, match="no trained embedding files"):
        run_evaluation(empty, progress=False)
    from visual_words.embeddings import EmbeddingFileError
    from visual_words.trials import embedding_path, trial_grid

    cfg_bad = load_config("smoke", repo_root / "params.yaml", {"train.out_dir": str(tmp_path)})
    first, second = trial_grid(cfg_bad)[:2]
    write_embedding(embedding_path(cfg_bad, first), "<x>", torch.zeros(1, 32), {"anchor": "cat"})
    with pytest.raises(EmbeddingFileError, match="the sidecar lacks trial, token_table_hash"):
        run_evaluation(cfg_bad, progress=False)
    # a file in one trial's place whose sidecar names another trial is refused, never scored as this one
    write_embedding(embedding_path(cfg_bad, first), "<x>", torch.zeros(1, 32),
                    {"trial": second.to_dict(), "token_table_hash": "0" * 16})
    with pytest.raises(EmbeddingFileError, match=f"its sidecar names trial {second.id}, but this is the file of "
                                                  f"trial {first.id}"):
        run_evaluation(cfg_bad, progress=False)
    assert registry.model(cfg.study.models["evaluator"]).family == "hf-clip"


@pytest.mark.slow
def test_a_word_of_a_model_outside_the_study_needs_vw_maps_first_and_evaluation_writes_no_map(study, repo_root,
                                                                                              tmp_path, capsys):
    from visual_words.cli import main
    from visual_words.models.loading import load_model
    from visual_words.transfer.files import MapFileError, load_map, map_path

    base, _ = study
    overrides = {**{k: str(base.path(_get(base, k))) for k in ("prepare.manifests_dir", "prepare.cache_dir")},
                 "train.out_dir": str(tmp_path / "emb"), "maps.out_dir": str(tmp_path / "maps"),
                 "evaluate.out_dir": str(tmp_path / "ev"), "maps.holdout_fraction": 0.0, "study.datasets": [DATASET]}
    cfg = load_config("smoke", repo_root / "params.yaml", overrides)
    args = ["--params", str(cfg.source), "--profile", "smoke",
            *[a for k, v in overrides.items() for a in ("--set", f"{k}={v if isinstance(v, str) else v!r}")]]
    w48 = load_model("tiny-clip-w48")  # an open_clip checkpoint of another width, not one of the study's models
    _write_trials(cfg, {"classification": w48})
    maps_dir = tmp_path / "maps"

    # Without its maps: one line naming the command to run, and evaluation fits and writes nothing.
    with pytest.raises(MapFileError, match="run `vw maps --models tiny-clip-w48 tiny-clip` first"):
        run_evaluation(cfg, tasks=["classification", "detection"], progress=False)
    assert main(["evaluate", "run", "--quiet", "--no-tracking", "--tasks", "classification", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a model outside this study" in err and "vw maps --models tiny-clip-w48" in err
    assert not maps_dir.exists() or not list(maps_dir.glob("*.safetensors"))

    # `vw maps --models SRC DST` adds its pairs to the folder and to quality.csv, keeping the rows already there.
    for dst in ("tiny-clip", "tiny-owlv2"):
        assert main(["maps", "--quiet", "--models", "tiny-clip-w48", dst, *args]) == 0
    rows = list(csv.DictReader(open(maps_dir / "quality.csv")))
    assert [(r["src_key"], r["dst_key"]) for r in rows] == [
        ("tiny-clip", "tiny-clip-w48"), ("tiny-clip-w48", "tiny-clip"), ("tiny-clip-w48", "tiny-owlv2"),
        ("tiny-owlv2", "tiny-clip-w48")]
    before = {p.name: p.stat().st_mtime_ns for p in maps_dir.iterdir()}
    res = run_evaluation(cfg, tasks=["classification", "detection"], progress=False)
    df = read_table(res.table)
    assert len(df) == 4 and df.transferred.all() and set(df.source_model) == {"tiny-clip-w48"}
    assert set(df.eval_model) == {"tiny-clip", "tiny-owlv2"}
    assert {p.name: p.stat().st_mtime_ns for p in maps_dir.iterdir()} == before  # evaluation only read the maps
    for dst in ("tiny-clip", "tiny-owlv2"):
        m = load_map(map_path(cfg, "tiny-clip-w48", dst))
        assert m.d_src == 48 and m.meta["src_table_hash"] == table_hash(TokenTable.of(adapter_for(w48)).weights)
