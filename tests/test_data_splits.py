"""Per-concept splits (D7): seeded, deterministic, labelled by the largest box, clear errors when too few."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from visual_words import registry
from visual_words.data.index import DatasetIndex
from visual_words.registry import Concept


def _coco128_halves(shared_assets) -> DatasetIndex:
    """coco128 has no val split: its first 64 images (by file) are our train split, the other 64 our val split."""
    from visual_words.data.coco import load_coco

    index = load_coco(shared_assets / "coco128", {"train": "train2017"})
    images = sorted(index.images("train"), key=lambda im: im.file)
    return DatasetIndex("coco", index.root, {"train": images[:64], "val": images[64:]})


COCO_TEST = [Concept("coco", "dog", "dog", "dog", "dog", 0), Concept("coco", "person", "person", "person", "person", 1)]


def test_coco128_manifest_labels_boxes_and_splits(shared_assets):
    from visual_words.data.splits import build_manifest

    index = _coco128_halves(shared_assets)
    m = build_manifest(index, COCO_TEST, train_per_concept=2, eval_per_concept=2, seed=0, source="real")
    train_files = {im.file for im in index.images("train")}
    val_files = {im.file for im in index.images("val")}
    by_file = {im.file: im for im in index.images("train") + index.images("val")}
    assert m.counts() == {"dog": {"train": 2, "eval": 2}, "person": {"train": 2, "eval": 2}}
    for name, split in m.concepts.items():
        assert {r.file for r in split.train} <= train_files and {r.file for r in split.eval} <= val_files
        for r in split.train + split.eval:
            raw = by_file[r.file]
            assert r.label == name == raw.label  # the largest box's class
            assert (r.width, r.height) == (raw.width, raw.height)
            # boxes: every box of a selected concept in the image, nothing else
            assert sorted(b.bbox for b in r.boxes) == sorted(b.bbox for b in raw.boxes if b.cls in ("dog", "person"))
            assert r.boxes_of(name)
    assert m.seed == 0 and m.source == "real"
    assert m.meta["classes"] == {"dog": "dog", "person": "person"}


def test_split_is_deterministic_per_seed_and_per_concept(shared_assets):
    from visual_words.data.splits import build_manifest

    index = _coco128_halves(shared_assets)
    kw = dict(train_per_concept=2, eval_per_concept=2, source="real")
    a = build_manifest(index, COCO_TEST, seed=0, **kw)
    b = build_manifest(index, COCO_TEST, seed=0, **kw)
    assert a.to_dict() == b.to_dict()
    others = [build_manifest(index, COCO_TEST, seed=s, **kw).concepts["person"].train for s in (1, 2, 3)]
    assert any([r.file for r in o] != [r.file for r in a.concepts["person"].train] for o in others)
    # a concept's images do not depend on which other concepts are selected, nor on the annotation order
    alone = build_manifest(index, COCO_TEST[1:], seed=0, **kw)
    assert [r.file for r in alone.concepts["person"].train] == [r.file for r in a.concepts["person"].train]
    shuffled = DatasetIndex("coco", index.root, {k: v[::-1] for k, v in index.splits.items()})
    assert build_manifest(shuffled, COCO_TEST, seed=0, **kw).to_dict()["concepts"] == a.to_dict()["concepts"]


def test_concept_with_too_few_images_names_concept_and_counts(shared_assets):
    from visual_words.data.splits import build_manifest

    index = _coco128_halves(shared_assets)
    cup = [Concept("coco", "cup", "cup", "cup", "cup", 0)]  # 1 cup-labelled image in all of coco128
    with pytest.raises(ValueError, match=r"coco: concept `cup` \(class `cup`\) has [01] image\(s\) labelled with it in "
                                         r"split `(train|val)` .*fewer than the 8 asked \(prepare.train_per_concept\)"):
        build_manifest(index, cup, train_per_concept=8, eval_per_concept=0, seed=0, source="real")
    dogs = index.by_label("val").get("dog", [])
    with pytest.raises(ValueError, match=rf"concept `dog` .* has {len(dogs)} image\(s\) .* split `val` .*fewer than "
                                         r"the 50 asked \(prepare.eval_per_concept\)"):
        build_manifest(index, COCO_TEST[:1], train_per_concept=1, eval_per_concept=50, seed=0, source="real")


def test_two_concepts_on_one_class_is_an_error():
    from visual_words.data.splits import class_map

    a, b = Concept("x", "a", "a", "k", "a"), Concept("x", "b", "b", "k", "b")
    with pytest.raises(ValueError, match="concepts `a` and `b` of x share the class `k`"):
        class_map([a, b])


@pytest.fixture(scope="module")
def synthetic_sets(tmp_path_factory):
    """The smoke image set of every dataset, in its real layout (drawn once for this module)."""
    from visual_words.data import synthetic

    out = tmp_path_factory.mktemp("synthetic")
    spec = {"version": synthetic.VERSION, "size": 48, "train": 5, "val": 3, "dreambooth": 5, "seed": 0}
    for ds in ("coco", "pascal", "imagenet", "dreambooth"):
        (out / ds).mkdir()
        synthetic.build(out / ds, spec | {"dataset": ds})
    return out


def test_synthetic_sets_read_back_through_the_real_loaders(synthetic_sets):
    from visual_words.data import synthetic
    from visual_words.data.coco import load_coco
    from visual_words.data.dreambooth import load_dreambooth
    from visual_words.data.imagenet import load_imagenet
    from visual_words.data.voc import load_voc

    root = synthetic_sets
    indexes = {"coco": load_coco(root / "coco"), "pascal": load_voc(synthetic.dataset_root(root / "pascal", "pascal")),
               "imagenet": load_imagenet(root / "imagenet", {c.cls for c in registry.concepts("imagenet")}),
               "dreambooth": load_dreambooth(root / "dreambooth", root / "dreambooth" / "dreambooth_boxes.json")}
    for ds, index in indexes.items():
        concepts = registry.concepts(ds)
        for split, images in index.splits.items():
            by = index.by_label(split)
            want = 5 if split in ("train", "all") else 3
            assert all(len(by[c.cls]) == want for c in concepts), (ds, split)
            for im in images:
                assert (index.root / im.file).is_file()
                for b in im.boxes:  # boxes lie inside the image
                    x, y, w, h = b.bbox
                    assert 0 <= x and 0 <= y and x + w <= im.width and y + h <= im.height and w > 0 and h > 0
    # decoys: labelled with a class outside the concepts (largest box), while holding a small concept box
    decoys = indexes["coco"].by_label("train")["person"]
    assert len(decoys) == synthetic.DECOYS_PER_SPLIT
    assert all(any(b.cls == "laptop" or b.cls in {c.cls for c in registry.concepts("coco")} for b in im.boxes)
               for im in decoys)


def test_synthetic_drawing_is_deterministic(tmp_path):
    from visual_words.data import synthetic

    spec = {"version": synthetic.VERSION, "dataset": "pascal", "size": 32, "train": 2, "val": 1, "dreambooth": 3,
            "seed": 0}
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    synthetic.build(a, spec), synthetic.build(b, spec)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_dreambooth_holdout_split(synthetic_sets):
    from visual_words.data.dreambooth import load_dreambooth
    from visual_words.data.splits import build_holdout_manifest

    root = synthetic_sets / "dreambooth"
    index = load_dreambooth(root, root / "dreambooth_boxes.json")
    concepts = registry.concepts("dreambooth")
    m = build_holdout_manifest(index, concepts, holdout=2, train_per_concept=8, seed=0, source="synthetic")
    for c in concepts:
        s = m.concepts[c.name]
        assert len(s.eval) == 2 and len(s.train) == 3  # 5 photos: 2 held out, the other 3 train (fewer than 8)
        assert not {r.file for r in s.train} & {r.file for r in s.eval}
        assert all(r.label == c.name and r.file.startswith(f"{c.cls}/") for r in s.train + s.eval)
    assert "deviation" in m.meta
    capped = build_holdout_manifest(index, concepts[:1], holdout=1, train_per_concept=2, seed=0, source="synthetic")
    assert capped.counts() == {"cat2": {"train": 2, "eval": 1}}
    with pytest.raises(ValueError, match=r"subject `cat2` has 5 photo\(s\) .* too few to hold out 5"):
        build_holdout_manifest(index, concepts[:1], holdout=5, train_per_concept=8, seed=0, source="synthetic")


def test_manifest_round_trip_resolves_a_relative_image_root(synthetic_sets, tmp_path):
    from visual_words.data.coco import load_coco
    from visual_words.data.manifest import read_manifest, write_manifest
    from visual_words.data.splits import build_manifest

    index = load_coco(synthetic_sets / "coco")
    repo = synthetic_sets.parent  # manifests and images in one tree: the root is stored relative
    mdir = repo / "manifests-test"
    m = build_manifest(index, registry.concepts("coco")[:2], train_per_concept=3, eval_per_concept=2, seed=4,
                       source="synthetic", manifest_dir=mdir, repo=repo)
    assert not Path(m.image_root).is_absolute() and m.image_root.startswith("..")
    path = write_manifest(mdir / "coco.json", m)
    back = read_manifest(path)
    assert Path(back.image_root).is_absolute()
    assert back.counts() == m.counts() and back.meta == m.meta and back.seed == 4
    assert all(back.path_of(r).is_file() for s in back.concepts.values() for r in s.train + s.eval)
    assert dataclasses.asdict(back.concepts["laptop"].train[0]) == dataclasses.asdict(m.concepts["laptop"].train[0])
    outside = build_manifest(index, registry.concepts("coco")[:1], train_per_concept=1, eval_per_concept=1, seed=0,
                             source="synthetic", manifest_dir=tmp_path, repo=tmp_path)
    assert Path(outside.image_root).is_absolute()  # images outside the checkout: absolute
