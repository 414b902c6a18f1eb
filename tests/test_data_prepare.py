"""The prepare stage and `vw data`: manifests from the smoke set and from real-layout folders, bad input, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visual_words.cli import main

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path, **over):
    from visual_words.config import load_config

    base = {"prepare.manifests_dir": str(tmp_path / "manifests"), "prepare.cache_dir": str(tmp_path / "cache"),
            "prepare.synthetic_root": str(tmp_path / "synthetic"), "prepare.precompute_features": False}
    return load_config("smoke", REPO / "params.yaml", base | over)


def _args(tmp_path, **over) -> list[str]:
    base = {"prepare.manifests_dir": tmp_path / "manifests", "prepare.cache_dir": tmp_path / "cache",
            "prepare.synthetic_root": tmp_path / "synthetic", "prepare.precompute_features": False}
    return ["--profile", "smoke", "--params", str(REPO / "params.yaml")] + \
        [x for k, v in (base | over).items() for x in ("--set", f"{k}={v}")]


def test_smoke_prepare_writes_manifests_from_the_synthetic_set(tmp_path):
    from visual_words.data.manifest import manifest_path, read_manifest
    from visual_words.data.prepare import prepare

    cfg = _cfg(tmp_path)
    paths = prepare(cfg, progress=False)
    assert set(paths) == {"coco", "pascal"}
    for ds, concepts in (("coco", ["laptop", "scissors", "donut"]), ("pascal", ["airplane", "bicycle", "bird"])):
        m = read_manifest(manifest_path(cfg, ds))
        assert list(m.concepts) == concepts
        assert m.counts() == {c: {"train": 4, "eval": 2} for c in concepts}
        assert m.source == "synthetic" and m.seed == cfg.prepare.split_seed
        for name, split in m.concepts.items():
            for r in split.train + split.eval:
                assert r.label == name and r.boxes_of(name) and m.path_of(r).is_file()
        raw = json.loads(paths[ds].read_text())
        assert not Path(raw["image_root"]).is_absolute() or not str(tmp_path).startswith(str(REPO))
    assert (tmp_path / "synthetic" / "pascal" / "VOCdevkit" / "VOC2012" / "Annotations").is_dir()
    assert (tmp_path / "synthetic" / "coco" / "annotations" / "instances_val2017.json").is_file()
    prov = json.loads((tmp_path / "manifests" / "provenance.json").read_text())
    assert prov["stage"] == "prepare" and prov["config"]["prepare"]["source"] == "synthetic"
    # a second run reads the same synthetic set and writes the same manifests
    before = {ds: p.read_text() for ds, p in paths.items()}
    prepare(cfg, progress=False)
    assert {ds: p.read_text() for ds, p in paths.items()} == before


def test_failed_prepare_names_the_image_and_keeps_the_previous_manifests(tmp_path):
    from visual_words.data.manifest import manifest_path, read_manifest
    from visual_words.data.prepare import prepare

    cfg = _cfg(tmp_path)
    paths = prepare(cfg, progress=False)
    before = {ds: p.read_bytes() for ds, p in paths.items()}
    m = read_manifest(manifest_path(cfg, "pascal"))
    victim = m.path_of(m.concepts["bird"].eval[0])
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])  # truncated JPEG
    with pytest.raises(ValueError, match=f"{victim}: unreadable or truncated image"):
        prepare(cfg, progress=False)
    assert {ds: p.read_bytes() for ds, p in paths.items()} == before  # coco succeeded first, but nothing was written
    victim.write_bytes(b"")
    assert main(["data", "prepare", *_args(tmp_path)]) == 2
    assert {ds: p.read_bytes() for ds, p in paths.items()} == before


@pytest.fixture()
def coco_real(shared_assets, tmp_path) -> Path:
    """data_root with coco/ in the COCO 2017 layout, from coco128: its last 64 images are train2017, the first 64
    val2017 (this way round, the one laptop-labelled image is a training image)."""
    src = shared_assets / "coco128"
    raw = json.loads((src / "annotations" / "instances_train2017.json").read_text())
    images = sorted(raw["images"], key=lambda im: im["file_name"])
    root = tmp_path / "raw" / "coco"
    (root / "annotations").mkdir(parents=True)
    for release, part in (("train2017", images[64:]), ("val2017", images[:64])):
        ids = {im["id"] for im in part}
        (root / release).mkdir()
        for im in part:
            (root / release / im["file_name"]).symlink_to(src / "train2017" / im["file_name"])
        doc = raw | {"images": part, "annotations": [a for a in raw["annotations"] if a["image_id"] in ids]}
        (root / "annotations" / f"instances_{release}.json").write_text(json.dumps(doc))
    return tmp_path / "raw"


def test_real_layout_prepare_and_its_errors(coco_real, tmp_path):
    from visual_words.data.manifest import manifest_path, read_manifest
    from visual_words.data.prepare import prepare

    # the smoke concepts (laptop, scissors, donut): coco128 has no scissors-labelled image
    cfg = _cfg(tmp_path, **{"prepare.source": "real", "prepare.data_root": str(coco_real), "study.datasets": ["coco"],
                            "prepare.train_per_concept": 1, "prepare.eval_per_concept": 0})
    with pytest.raises(ValueError, match=r"coco: concept `scissors` \(class `scissors`\) has 0 image\(s\) labelled "
                                         r"with it in split `train` .*fewer than the 1 asked"):
        prepare(cfg, progress=False)
    assert not manifest_path(cfg, "coco").exists()
    # 1 concept (laptop): 1 labelled image in the train part
    cfg = _cfg(tmp_path, **{"prepare.source": "real", "prepare.data_root": str(coco_real), "study.datasets": ["coco"],
                            "study.concepts_per_dataset": 1, "prepare.train_per_concept": 1,
                            "prepare.eval_per_concept": 0})
    prepare(cfg, progress=False)
    m = read_manifest(manifest_path(cfg, "coco"))
    (rec,) = m.concepts["laptop"].train
    assert rec.file.startswith("train2017/") and m.path_of(rec).is_file() and rec.label == "laptop"
    (coco_real / "coco" / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(FileNotFoundError, match="instances_val2017.json: COCO annotation file"):
        prepare(cfg, progress=False)
    assert read_manifest(manifest_path(cfg, "coco")).to_dict() == m.to_dict()


def test_missing_imagenet_path_is_a_clear_error(tmp_path, capsys):
    common = {"prepare.source": "real", "study.datasets": "[imagenet]"}
    assert main(["data", "prepare", *_args(tmp_path, **common, **{"prepare.imagenet_root": "''"})]) == 2
    assert "set prepare.imagenet_root" in capsys.readouterr().err
    assert main(["data", "prepare", *_args(tmp_path, **common, **{"prepare.imagenet_root": tmp_path / "nope"})]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope'}: ImageNet root (prepare.imagenet_root) does not exist" in err
    assert not (tmp_path / "manifests").exists()


def test_vw_data_check_counts_and_finds_unreadable_files(tmp_path, capsys):
    from visual_words.data.prepare import prepare

    cfg = _cfg(tmp_path)
    prepare(cfg, datasets=["pascal"], progress=False)
    capsys.readouterr()
    assert main(["data", "check", "pascal", "--json", *_args(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["concept"], r["split"]): r for r in report["rows"]}
    assert rows[("airplane", "train")]["labelled"] == 6 and rows[("airplane", "train")]["asked"] == 4
    assert rows[("bird", "val")]["labelled"] == 3 and rows[("bird", "val")]["asked"] == 2
    assert report["ok"] and not report["bad_files"] and report["decoded"] == 27
    bad = tmp_path / "synthetic" / "pascal" / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2012_000002.jpg"
    bad.write_bytes(b"not an image")
    assert main(["data", "check", "pascal", *_args(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"BAD {bad}: unreadable or truncated image" in out and "PROBLEMS FOUND" in out


def test_vw_data_check_flags_concepts_with_too_few_images(coco_real, tmp_path, capsys):
    real = {"prepare.source": "real", "prepare.data_root": coco_real}
    assert main(["data", "check", "coco", *_args(tmp_path, **real)]) == 1
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("  scissors")]
    assert rows == [["scissors", "scissors", "train", "0", "0", "4", "<-", "too", "few"],
                    ["scissors", "scissors", "val", "0", "1", "2", "<-", "too", "few"]]
    assert "decoded" in out and "PROBLEMS FOUND" in out


def test_vw_data_show(tmp_path, capsys):
    assert main(["data", "prepare", "--dataset", "coco", *_args(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["data", "show", "coco", "--files", *_args(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "coco: source=synthetic seed=0" in out
    assert "laptop" in out and "train2017/" in out and "label=laptop" in out
    assert main(["data", "show", "pascal", *_args(tmp_path)]) == 2  # not prepared: one clear line
    assert "manifest not found" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_fills_the_feature_cache_for_the_study_models(tmp_path):
    """With precompute_features, prepare caches SD latents (train), OWL and CLIP embeddings (train + eval)."""
    from visual_words.data.prepare import prepare

    cfg = _cfg(tmp_path, **{"prepare.precompute_features": True, "study.datasets": ["pascal"]})
    prepare(cfg, progress=False)
    counts = {kind: len(list((tmp_path / "cache" / kind).rglob("*.safetensors")))
              for kind in ("sd_latents", "owl_image_embeds", "clip_image_embeds")}
    assert counts == {"sd_latents": 12, "owl_image_embeds": 18, "clip_image_embeds": 18}
    from visual_words.data.manifest import manifest_path, read_manifest
    from visual_words.data.prepare import precompute_features

    again = precompute_features(cfg, {"pascal": read_manifest(manifest_path(cfg, "pascal"))}, progress=False)
    assert again == {"tiny-sd": 0, "tiny-owlv2": 0, "tiny-clip": 0}  # everything already cached


def test_training_and_evaluation_at_their_own_precision_read_what_prepare_cached(tmp_path):
    """train.precision bf16, evaluate.precision fp32: prepare loads each model at the precision of the stage that
    reads a split, so neither stage computes a feature again (the cache key holds the weights' dtype)."""
    from visual_words.data.features import FeatureCache
    from visual_words.data.manifest import manifest_path, read_manifest
    from visual_words.data.prepare import prepare
    from visual_words.models.loading import load_model

    cfg = _cfg(tmp_path, **{"prepare.precompute_features": True, "study.datasets": ["pascal"],
                            "train.precision": "bf16", "evaluate.precision": "fp32"})
    prepare(cfg, progress=False)
    manifest = read_manifest(manifest_path(cfg, "pascal"))
    train = [r for s in manifest.concepts.values() for r in s.train]
    held_out = [r for s in manifest.concepts.values() for r in s.eval]
    for precision, records in (("bf16", train), ("fp32", held_out)):
        loaded = load_model("tiny-clip", device="cpu", precision=precision, root=cfg.root)
        cache = FeatureCache(cfg)
        feats = cache.get("clip_image_embeds", loaded, manifest, records)
        assert (cache.hits, cache.misses, feats.shape[0]) == (len(records), 0, len(records))
    sd = load_model("tiny-sd", device="cpu", precision="bf16", root=cfg.root)
    cache = FeatureCache(cfg)
    cache.get("sd_latents", sd, manifest, train[:2])
    assert cache.misses == 0


def test_smoke_set_covers_imagenet_and_dreambooth_too(tmp_path):
    """The synthetic set exists for all four datasets, so a smoke run can add ImageNet and DreamBooth."""
    from visual_words.data.manifest import manifest_path, read_manifest
    from visual_words.data.prepare import prepare

    cfg = _cfg(tmp_path, **{"study.datasets": ["imagenet", "dreambooth"]})
    prepare(cfg, progress=False)
    inet = read_manifest(manifest_path(cfg, "imagenet"))
    assert list(inet.concepts) == ["strawberry", "harp", "sturgeon"]
    assert inet.counts()["harp"] == {"train": 4, "eval": 2}
    assert inet.concepts["harp"].train[0].file.startswith("ILSVRC/Data/CLS-LOC/train/n03495258/")
    db = read_manifest(manifest_path(cfg, "dreambooth"))
    assert db.counts() == {c: {"train": 4, "eval": 2} for c in ("cat2", "vase", "duck_toy")}  # 6 photos, 2 held out
    assert "deviation" in db.meta and db.concepts["vase"].eval[0].file.startswith("vase/")
