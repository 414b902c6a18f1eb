"""Before any stage: the study's datasets are fetched (sources and checksums of registry/datasets.yaml, or of
`prepare.dataset_sources`) or the run stops with one line naming the command; the DreamBooth boxes drawn at prepare
time by the study's detector, their run file, reuse, and the report's contact sheet."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from visual_words.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path, profile="smoke", **over):
    base = {"prepare.data_root": str(tmp_path / "raw"), "prepare.manifests_dir": str(tmp_path / "manifests"),
            "prepare.cache_dir": str(tmp_path / "cache"), "prepare.synthetic_root": str(tmp_path / "synthetic"),
            "prepare.downloads_dir": str(tmp_path / "downloads"),
            "prepare.precompute_features": False}
    return load_config(profile, REPO / "params.yaml", base | over)


@pytest.fixture(scope="module")
def coco_mirror(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny COCO 2017 (drawn by the synthetic builder) packed like the official zips, and a sources file naming
    them by file:// URL with their md5s (a local mirror, as `prepare.dataset_sources` takes it)."""
    from visual_words.data import synthetic

    tmp = tmp_path_factory.mktemp("coco-mirror")
    unpacked = tmp / "unpacked"
    unpacked.mkdir()
    synthetic.build(unpacked, {"version": synthetic.VERSION, "dataset": "coco", "size": 32, "train": 1, "val": 1,
                               "dreambooth": 3, "seed": 0})
    archives = []
    for name, folder in (("train2017.zip", "train2017"), ("val2017.zip", "val2017"),
                         ("annotations_trainval2017.zip", "annotations")):
        with zipfile.ZipFile(tmp / name, "w") as z:
            for p in sorted((unpacked / folder).rglob("*")):
                z.write(p, p.relative_to(unpacked).as_posix())
        archives.append({"file": name, "md5": hashlib.md5((tmp / name).read_bytes()).hexdigest(),
                         "sources": [{"url": (tmp / name).as_uri(), "last_report": "test mirror"}]})
    sources = tmp / "sources.yaml"
    sources.write_text(yaml.safe_dump({"coco": {"archives": archives}}))
    return tmp, sources


def test_synthetic_images_need_no_data(tmp_path):
    from visual_words.data.preflight import ensure_datasets, missing_datasets

    cfg = _cfg(tmp_path)  # smoke: drawn at run time, offline
    assert missing_datasets(cfg) == [] and ensure_datasets(cfg) == []
    assert not (tmp_path / "raw").exists()


def test_fetch_off_stops_with_one_line_naming_the_command(tmp_path):
    from visual_words.data.preflight import DatasetMissingError, ensure_datasets

    cfg = _cfg(tmp_path, "claims", **{"prepare.fetch": False})
    with pytest.raises(DatasetMissingError) as e:
        ensure_datasets(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"DreamBooth (google/dreambooth dataset/) is not in {tmp_path / 'raw' / 'dreambooth'}: "
                          "run `vw data fetch dreambooth` (downloads 4f887af7970a06fc0cd3adaa1d0b368547d6a1d0.zip, "
                          "checked), then run again (also missing: coco, pascal)")
    assert not (tmp_path / "raw").exists()


def test_missing_dataset_is_fetched_from_the_configured_sources(coco_mirror, tmp_path, capsys):
    from visual_words.data.preflight import ensure_datasets, missing_datasets

    _, sources = coco_mirror
    cfg = _cfg(tmp_path, **{"prepare.source": "real", "study.datasets": ["coco"],
                            "prepare.dataset_sources": str(sources)})
    assert missing_datasets(cfg) == ["coco"]
    assert ensure_datasets(cfg) == ["coco"]
    out = capsys.readouterr().out
    assert f"[fetch] COCO 2017 is not in {tmp_path / 'raw' / 'coco'}: fetching it (train2017.zip, val2017.zip, " \
           "annotations_trainval2017.zip, checked)" in out
    assert f"served by {(sources.parent / 'val2017.zip').as_uri()}" in out
    assert (tmp_path / "raw" / "coco" / "annotations" / "instances_val2017.json").is_file()
    assert json.loads((tmp_path / "fetched.json").read_text())["coco"]["kind"] == "public archives"
    assert missing_datasets(cfg) == [] and ensure_datasets(cfg) == []  # there now: nothing to do


def test_an_unreachable_source_stops_with_one_line_naming_the_local_way(coco_mirror, tmp_path):
    from visual_words.data.preflight import DatasetMissingError, ensure_datasets

    _, sources = coco_mirror
    table = yaml.safe_load(sources.read_text())
    for a in table["coco"]["archives"]:
        a["sources"] = [{"url": f"http://127.0.0.1:9/{a['file']}"}]  # a closed port: no network
    dead = tmp_path / "dead.yaml"
    dead.write_text(yaml.safe_dump(table))
    cfg = _cfg(tmp_path, **{"prepare.source": "real", "study.datasets": ["coco"], "prepare.dataset_sources": str(dead)})
    with pytest.raises(DatasetMissingError) as e:
        ensure_datasets(cfg, timeout=5)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"COCO 2017 is not in {tmp_path / 'raw' / 'coco'} and could not be "
                                              "downloaded (http://127.0.0.1:9/train2017.zip")
    assert msg.endswith("run `vw data fetch coco --from FOLDER`, then run again")
    assert not (tmp_path / "raw" / "coco").exists()


def test_an_incomplete_folder_is_never_replaced(coco_mirror, tmp_path):
    from visual_words.data.preflight import DatasetMissingError, ensure_datasets

    _, sources = coco_mirror
    (tmp_path / "raw" / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "raw" / "coco" / "train2017" / "mine.jpg").write_bytes(b"x")
    cfg = _cfg(tmp_path, **{"prepare.source": "real", "study.datasets": ["coco"],
                            "prepare.dataset_sources": str(sources)})
    with pytest.raises(DatasetMissingError, match=r"raw/coco exists but is not a complete COCO 2017 "
                                                   r"\(annotations/instances_train2017.json is missing\).*"
                                                   r"vw data fetch coco --force"):
        ensure_datasets(cfg)
    assert (tmp_path / "raw" / "coco" / "train2017" / "mine.jpg").read_bytes() == b"x"


def test_prepare_without_the_data_names_the_fetch_command(tmp_path, capsys):
    from visual_words.cli import main

    args = ["data", "prepare", "--profile", "smoke", "--params", str(REPO / "params.yaml"),
            "--set", "prepare.source=real", "--set", f"prepare.data_root={tmp_path / 'raw'}",
            "--set", f"prepare.manifests_dir={tmp_path / 'manifests'}"]
    assert main(args) == 2  # what `dvc repro` of a profile with missing data shows: prepare stops at once
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vw data: error: COCO 2017 is not in {tmp_path / 'raw' / 'coco'}: run `vw data fetch "
                   "coco` (downloads train2017.zip, val2017.zip, annotations_trainval2017.zip, checked), then run "
                   "again"]
    assert not (tmp_path / "manifests").exists()


def test_imagenet_without_a_root_names_what_to_set(tmp_path):
    from visual_words.data.preflight import DatasetMissingError, ensure_datasets

    cfg = _cfg(tmp_path, "paper")
    with pytest.raises(DatasetMissingError, match=r"`prepare.imagenet_root` is not set .*vw data fetch imagenet "
                                                   r"--from PATH"):
        ensure_datasets(cfg)


def test_a_bad_sources_file_is_named(tmp_path):
    from visual_words.data.fetch import configured_source

    bad = tmp_path / "s.yaml"
    bad.write_text("imagenette: {folder: x}\n")
    cfg = _cfg(tmp_path, **{"prepare.dataset_sources": str(bad)})
    with pytest.raises(ValueError, match=r"s.yaml: unknown dataset `imagenette`"):
        configured_source(cfg, "coco")
    cfg = _cfg(tmp_path, **{"prepare.dataset_sources": str(tmp_path / "nope.yaml")})
    with pytest.raises(FileNotFoundError, match=r"nope.yaml: dataset sources file \(prepare.dataset_sources\)"):
        configured_source(cfg, "coco")


# ---------------------------------------------------------------------------------------------------------------
# DreamBooth boxes drawn at prepare time (tiny OWLv2: random weights, the plumbing is what is tested)


@pytest.fixture(scope="module")
def dreambooth_root(shared_assets, tmp_path_factory) -> Path:
    """data_root with dreambooth/ in its released layout: two subjects' real photos at 256 px (OWLv2's processor
    blurs before it downsizes; at 2048 px that is slow on a CPU, see test_data_dreambooth_boxes)."""
    src = shared_assets / "dreambooth"
    raw = tmp_path_factory.mktemp("raw")
    root = raw / "dreambooth"
    root.mkdir()
    shutil.copy(src / "prompts_and_classes.txt", root)
    for subject in ("cat2", "vase"):
        (root / subject).mkdir()
        for p in sorted((src / subject).glob("*.jpg")):
            with Image.open(p) as im:
                im.draft("RGB", (256, 256))
                im.convert("RGB").resize((256, 192)).save(root / subject / p.name, quality=90)
    return raw


@pytest.mark.needs_shared
@pytest.mark.slow
def test_prepare_draws_the_boxes_with_scores_reuses_them_and_the_report_shows_them(dreambooth_root, tmp_path,
                                                                                     capsys):
    from visual_words.data.dreambooth import read_box_file
    from visual_words.data.manifest import manifest_path, read_manifest
    from visual_words.data.prepare import prepare
    from visual_words.report.sections.dreambooth_boxes import dreambooth_boxes_section

    over = {"prepare.source": "real", "prepare.data_root": str(dreambooth_root), "study.datasets": ["dreambooth"],
            "study.concepts_per_dataset": 2, "prepare.dreambooth_holdout": 1, "prepare.train_per_concept": 1}
    cfg = _cfg(tmp_path, **over)
    assert cfg.prepare.dreambooth_boxes == "detect" and cfg.study.models["detection"] == "tiny-owlv2"
    prepare(cfg, progress=False)
    run_file = tmp_path / "manifests" / "dreambooth_boxes.json"
    data = read_box_file(run_file)
    assert sorted(data["images"]) == [f"cat2/0{i}.jpg" for i in range(5)] + [f"vase/0{i}.jpg" for i in range(6)]
    assert data["detector"]["model"] == "tiny-owlv2" and len(data["detector"]["weights_sha256"]) == 64
    e = data["images"]["vase/03.jpg"]
    assert (e["query"], e["width"], e["height"], e["checked"]) == ("vase", 256, 192, False)
    (box,) = e["boxes"]
    assert 0 <= box["bbox"][0] and box["bbox"][0] + box["bbox"][2] <= 256.01 and 0 <= box["score"] <= 1
    m = read_manifest(manifest_path(cfg, "dreambooth"))
    rec = m.concepts["vase"].train[0]
    assert [list(b.bbox) for b in rec.boxes] == [data["images"][rec.file]["boxes"][0]["bbox"]]
    assert "dreambooth boxes: 11 photo(s) detected by tiny-owlv2, 0 reused" in capsys.readouterr().out

    # a second prepare reuses every box (same photos, same weights); a changed photo is detected again
    photo = dreambooth_root / "dreambooth" / "cat2" / "00.jpg"
    original = photo.read_bytes()
    try:
        Image.open(photo).rotate(90).save(photo, quality=90)
        prepare(cfg, progress=False)
    finally:
        photo.write_bytes(original)
    assert "1 photo(s) detected by tiny-owlv2, 10 reused" in capsys.readouterr().out
    # a damaged run file is not used: every box is drawn again
    run_file.write_text("{not json")
    prepare(cfg, progress=False)
    assert "11 photo(s) detected by tiny-owlv2, 0 reused" in capsys.readouterr().out

    section = dreambooth_boxes_section(cfg)
    assert section.metrics["dreambooth_boxes"]["photos"] == 11
    assert section.metrics["dreambooth_boxes"]["source"] == "detected at prepare time, not checked by hand"
    assert "checked by nobody" in section.text and "prepare.dreambooth_boxes" in section.text
    (fig,) = section.figures
    drawn = fig.draw()
    assert len([ax for ax in drawn.axes if ax.images]) == 11
    assert sum(len(ax.patches) for ax in drawn.axes) == 11  # one box per photo

    # a hand-checked file instead: prepare reads it and refuses boxes nobody checked
    hand = tmp_path / "hand.json"
    hand.write_text(run_file.read_text())
    with pytest.raises(ValueError, match=r"hand.json: 11 DreamBooth box\(es\) not checked by hand"):
        prepare(_cfg(tmp_path, **over, **{"prepare.dreambooth_boxes": str(hand)}), progress=False)
    checked = json.loads(hand.read_text())
    for entry in checked["images"].values():
        entry["checked"] = True
    hand.write_text(json.dumps(checked))
    cfg_hand = _cfg(tmp_path, **over, **{"prepare.dreambooth_boxes": str(hand)})
    prepare(cfg_hand, progress=False)
    assert dreambooth_boxes_section(cfg_hand).metrics["dreambooth_boxes"]["source"] == "hand-checked"
