"""`vw data fetch`: checked archives (downloaded or local), unpacked copies, the offline message, ImageNet's path."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from visual_words.cli import main

REPO = Path(__file__).resolve().parents[1]


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def coco_archives(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny COCO 2017 drawn by the synthetic builder, packed like the official zips (train2017.zip holds
    train2017/…, annotations_trainval2017.zip holds annotations/…), and a source spec pointing at them."""
    from visual_words.data import synthetic

    tmp = tmp_path_factory.mktemp("coco-src")
    unpacked = tmp / "unpacked"
    unpacked.mkdir()
    synthetic.build(unpacked, {"version": synthetic.VERSION, "dataset": "coco", "size": 32, "train": 1, "val": 1,
                               "dreambooth": 3, "seed": 0})
    arch = tmp / "archives"
    arch.mkdir()
    for name, folders in (("train2017.zip", ["train2017"]), ("val2017.zip", ["val2017"]),
                          ("annotations_trainval2017.zip", ["annotations"])):
        with zipfile.ZipFile(arch / name, "w") as z:
            for f in folders:
                for p in sorted((unpacked / f).rglob("*")):
                    z.write(p, p.relative_to(unpacked).as_posix())
    spec = {"name": "COCO 2017 (test)", "folder": "coco",
            "archives": [{"url": f"http://127.0.0.1:9/x/{n}", "md5": _md5(arch / n)} for n in
                         ("train2017.zip", "val2017.zip", "annotations_trainval2017.zip")],
            "layout": ["annotations/instances_train2017.json", "annotations/instances_val2017.json", "train2017",
                       "val2017"]}
    return arch, spec


def test_registry_lists_the_public_sources_with_checksums():
    from visual_words.data.fetch import archive_file, archive_name, archive_sources, sources

    s = sources()
    coco = s["coco"]["archives"][0]
    assert (archive_file(coco), coco["md5"]) == ("train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2")
    assert archive_sources(coco) == ["http://images.cocodataset.org/zips/train2017.zip",
                                     "https://s3.amazonaws.com/images.cocodataset.org/zips/train2017.zip"]
    # VOC 2012: the md5 torchvision has always checked; the dead Oxford host first, then the mirrors in use.
    voc = s["pascal"]["archives"][0]
    assert (archive_file(voc), voc["md5"]) == ("VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd")
    urls = archive_sources(voc)
    assert urls[0] == "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
    assert "http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar" in urls and len(urls) >= 3
    assert all(archive_name(u) == "VOCtrainval_11-May-2012.tar" for u in urls)
    for ds in ("coco", "pascal", "dreambooth"):
        for a in s[ds]["archives"]:
            # the original and at least one other source, each with what was last reported about it
            assert len(a["sources"]) >= 2 and all(src["last_report"] for src in a["sources"]), (ds, a)
            assert a["md5"] or s[ds].get("files_sha256")  # every archive is checked, by md5 or file by file
    assert "4f887af7970a06fc0cd3adaa1d0b368547d6a1d0" in archive_sources(s["dreambooth"]["archives"][0])[0]
    assert len(s["dreambooth"]["files_sha256"]) == 54  # the paper's 10 subjects' 53 photos + prompts_and_classes.txt
    assert s["imagenet"]["user_supplied"] is True


def test_offline_download_says_so_and_names_the_way_out(coco_archives, tmp_path):
    from visual_words.data.fetch import fetch

    _, spec = coco_archives  # its URLs point at a closed local port: a download that cannot connect
    with pytest.raises(ConnectionError, match=r"cannot download train2017.zip from any of its 1 source\(s\) — "
                                              r"http://127.0.0.1:9/x/train2017.zip .*no internet "
                                              r"access.*vw data fetch coco --from FOLDER"):
        fetch("coco", tmp_path / "raw", spec=spec, downloads=tmp_path / "dl", timeout=5)
    assert not (tmp_path / "raw" / "coco").exists()


def test_fetch_from_local_archives_checks_md5_and_unpacks(coco_archives, tmp_path):
    from visual_words.data.coco import load_coco
    from visual_words.data.fetch import fetch

    arch, spec = coco_archives
    target = fetch("coco", tmp_path / "raw", src=arch, spec=spec)
    assert target == tmp_path / "raw" / "coco"
    index = load_coco(target)
    assert len(index.images("train")) == 12 and len(index.images("val")) == 12  # 10 concepts + 2 decoys
    record = json.loads((tmp_path / "fetched.json").read_text())
    assert record["coco"]["kind"] == "local archives" and len(record["coco"]["archives"]) == 3
    assert fetch("coco", tmp_path / "raw", src=arch, spec=spec) == target  # already there: kept
    bad = spec | {"archives": [dict(spec["archives"][0], md5="0" * 32)] + spec["archives"][1:]}
    with pytest.raises(ValueError, match=r"train2017.zip: md5 \w+ does not match the published 0{32}"):
        fetch("coco", tmp_path / "raw2", src=arch, spec=bad)
    assert not (tmp_path / "raw2" / "coco").exists()
    assert [p.name for p in (tmp_path / "raw2").iterdir()] == []  # no half-unpacked folder left behind


def test_fetch_downloads_checks_and_unpacks(coco_archives, tmp_path):
    from visual_words.data.fetch import fetch

    arch, spec = coco_archives
    local = spec | {"archives": [dict(a, url=(arch / a["url"].rsplit("/", 1)[-1]).as_uri()) for a in spec["archives"]]}
    target = fetch("coco", tmp_path / "raw", spec=local, downloads=tmp_path / "dl")
    assert (target / "annotations" / "instances_val2017.json").is_file()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(
        ["train2017.zip", "val2017.zip", "annotations_trainval2017.zip"])


def test_a_failing_first_source_falls_through_to_the_next(coco_archives, tmp_path, capsys):
    from visual_words.data.fetch import fetch

    arch, spec = coco_archives
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "val2017.zip").write_bytes(b"not the archive")
    archives = []
    for a in spec["archives"]:
        name = a["url"].rsplit("/", 1)[-1]
        # 1st: a closed port (the dead original); 2nd, for one archive: a mirror serving other bytes; last: the copy.
        sources = [{"url": f"http://127.0.0.1:9/dead/{name}"}]
        if name == "val2017.zip":
            sources.append({"url": (wrong / name).as_uri()})
        sources.append({"url": (arch / name).as_uri()})
        archives.append({"file": name, "md5": a["md5"], "sources": sources})
    target = fetch("coco", tmp_path / "raw", spec=spec | {"archives": archives}, downloads=tmp_path / "dl", timeout=5)
    assert (target / "annotations" / "instances_val2017.json").is_file()
    out = capsys.readouterr().out
    assert "[fetch] train2017.zip: http://127.0.0.1:9/dead/train2017.zip failed" in out
    assert f"[fetch] val2017.zip: {(wrong / 'val2017.zip').as_uri()} served other bytes (md5 " in out
    assert f"[fetch] val2017.zip: served by {(arch / 'val2017.zip').as_uri()} (after 2 failed)" in out
    record = json.loads((tmp_path / "fetched.json").read_text())["coco"]["archives"]
    assert record["val2017.zip"] == {"md5": archives[1]["md5"], "served_by": (arch / "val2017.zip").as_uri()}
    # Every source failing: one error naming each source and why, and the way out; nothing unpacked.
    dead = spec | {"archives": [{"file": "train2017.zip", "md5": archives[0]["md5"],
                                 "sources": [{"url": "http://127.0.0.1:9/a/train2017.zip"},
                                             {"url": (wrong / "val2017.zip").as_uri()}]}]}
    with pytest.raises(ConnectionError, match=r"cannot download train2017.zip from any of its 2 source\(s\) — "
                                              r"http://127.0.0.1:9/a/train2017.zip .*; file:.* served other bytes "
                                              r".*vw data fetch coco --from FOLDER"):
        fetch("coco", tmp_path / "raw2", spec=dead, downloads=tmp_path / "dl2", timeout=5)
    assert not (tmp_path / "raw2" / "coco").exists() and not (tmp_path / "dl2" / "train2017.zip").exists()


def test_fetch_from_an_unpacked_copy_links_or_copies(coco_archives, tmp_path):
    from visual_words.data.fetch import fetch

    arch, spec = coco_archives
    unpacked = arch.parent / "unpacked"
    linked = fetch("coco", tmp_path / "a", src=unpacked, spec=spec)
    assert linked.is_symlink() and linked.resolve() == unpacked.resolve()
    copied = fetch("coco", tmp_path / "b", src=unpacked, copy=True, spec=spec)
    assert not copied.is_symlink() and (copied / "annotations" / "instances_train2017.json").is_file()
    with pytest.raises(FileNotFoundError, match="neither an unpacked COCO 2017 \\(test\\) .* nor the archive "
                                                "train2017.zip"):
        fetch("coco", tmp_path / "c", src=tmp_path, spec=spec)


def test_fetch_tar_with_member_prefix(tmp_path):
    from visual_words.data.fetch import fetch

    src = tmp_path / "src" / "top" / "dataset"
    src.mkdir(parents=True)
    (src / "prompts_and_classes.txt").write_text("subject_name,class\ncat2,cat\n")
    (src / "cat2").mkdir()
    (src / "cat2" / "00.jpg").write_bytes(b"jpeg bytes")
    with tarfile.open(tmp_path / "db.tar", "w") as t:
        t.add(tmp_path / "src" / "top", arcname="top")
    sha = hashlib.sha256(b"jpeg bytes").hexdigest()
    spec = {"name": "DB (test)", "folder": "dreambooth", "layout": ["prompts_and_classes.txt"],
            "archives": [{"url": "http://127.0.0.1:9/db.tar", "md5": None, "member_prefix": "top/dataset/"}],
            "files_sha256": {"cat2/00.jpg": sha}}
    target = fetch("dreambooth", tmp_path / "raw", src=tmp_path / "db.tar", spec=spec)
    assert (target / "cat2" / "00.jpg").read_bytes() == b"jpeg bytes"
    with pytest.raises(ValueError, match="cat2/00.jpg: sha256 differs"):
        fetch("dreambooth", tmp_path / "raw2", src=tmp_path / "db.tar",
              spec=spec | {"files_sha256": {"cat2/00.jpg": "0"}})


def test_dreambooth_from_the_real_folder_checks_every_photo(shared_assets, tmp_path):
    from visual_words.data.fetch import fetch

    target = fetch("dreambooth", tmp_path / "raw", src=shared_assets / "dreambooth")
    assert target.is_symlink() and (target / "cat2" / "00.jpg").is_file()


def test_imagenet_is_checked_never_downloaded(tmp_path, capsys):
    args = ["--profile", "smoke", "--params", str(REPO / "params.yaml"),
            "--set", f"prepare.data_root={tmp_path / 'raw'}"]
    assert main(["data", "fetch", "imagenet", *args]) == 2
    assert "set prepare.imagenet_root" in capsys.readouterr().err
    (tmp_path / "ilsvrc").mkdir()
    (tmp_path / "ilsvrc" / "LOC_synset_mapping.txt").write_text("n01440764 tench\n")
    assert main(["data", "fetch", "imagenet", "--from", str(tmp_path / "ilsvrc"), *args]) == 2
    assert "not a complete ImageNet" in capsys.readouterr().err
    for p in ("LOC_train_solution.csv", "LOC_val_solution.csv"):
        (tmp_path / "ilsvrc" / p).write_text("ImageId,PredictionString\n")
    for p in ("ILSVRC/Data/CLS-LOC/train", "ILSVRC/Data/CLS-LOC/val"):
        (tmp_path / "ilsvrc" / p).mkdir(parents=True)
    assert main(["data", "fetch", "imagenet", "--from", str(tmp_path / "ilsvrc"), *args]) == 0
    assert f"prepare.imagenet_root: {tmp_path / 'ilsvrc'}" in capsys.readouterr().out
    assert json.loads((tmp_path / "fetched.json").read_text())["imagenet"]["kind"] == "user-supplied folder"
