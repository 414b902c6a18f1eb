"""The claims run as a user starts it, rehearsed (`make rehearse` runs this after `vw rehearsal-models`):
`vw reproduce --profile claims` from an empty workspace, on the full-size random-weight stand-ins, fetching COCO,
VOC and DreamBooth from local archives over HTTP (127.0.0.1), drawing the DreamBooth boxes with the OWLv2 stand-in at
prepare time, through every stage to the report's contact sheet.

The archives are small stand-ins in the layout of the official ones, built from the real samples in ../shared/assets
(coco128, voc100, the DreamBooth subjects); `prepare.dataset_sources` points the fetch at them with their md5s, as a
user would point it at a local mirror. The DreamBooth photos are the real ones, so the registry's own sha256 of every
photo is checked. In the COCO stand-in, the names of a few categories are swapped so that the study's first concepts
(laptop, scissors: coco128 has one laptop and no scissors image) have images in both splits: the rehearsal tests the
plumbing; random weights give no meaningful number anyway. The grid is cut to a few words (one per task, each in
another dataset) so the rehearsal adds minutes, not hours."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.rehearsal, pytest.mark.needs_shared, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DREAMBOOTH_COMMIT = "4f887af7970a06fc0cd3adaa1d0b368547d6a1d0"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _largest_box_labels(doc: dict) -> dict[int, str]:
    names = {c["id"]: c["name"] for c in doc["categories"]}
    best: dict[int, tuple[float, str]] = {}
    for a in doc["annotations"]:
        area = a["bbox"][2] * a["bbox"][3]
        if not a.get("iscrowd") and area > best.get(a["image_id"], (-1.0, ""))[0]:
            best[a["image_id"]] = (area, names[a["category_id"]])
    return {i: name for i, (_, name) in best.items()}


def coco_archives(coco128: Path, out: Path, needed: list[str]) -> list[dict]:
    """train2017.zip, val2017.zip, annotations_trainval2017.zip as COCO ships them, from coco128 (sorted by file
    name: the last 64 images are train2017, the first 64 val2017); each class in `needed` that lacks a labelled image
    in a split swaps names with a frequent class that has them."""
    doc = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    images = sorted(doc["images"], key=lambda im: im["file_name"])
    parts = {"train2017": images[64:], "val2017": images[:64]}
    labels = _largest_box_labels(doc)

    def count(name: str, part: list[dict]) -> int:
        return sum(labels.get(im["id"]) == name for im in part)

    by_name = {c["name"]: c for c in doc["categories"]}
    donors = sorted((n for n in by_name if n not in needed),
                    key=lambda n: -min(count(n, p) for p in parts.values()))
    for name in needed:
        if min(count(name, p) for p in parts.values()) == 0:
            donor = donors.pop(0)
            by_name[name]["name"], by_name[donor]["name"] = donor, name
            labels = _largest_box_labels(doc)
    for name in needed:
        assert all(count(name, p) for p in parts.values()), f"stand-in COCO: no `{name}` image in a split"
    files = []
    for release, part in parts.items():
        with zipfile.ZipFile(out / f"{release}.zip", "w") as z:
            for im in part:
                z.write(coco128 / "train2017" / im["file_name"], f"{release}/{im['file_name']}")
        files.append(f"{release}.zip")
    with zipfile.ZipFile(out / "annotations_trainval2017.zip", "w") as z:
        for release, part in parts.items():
            ids = {im["id"] for im in part}
            z.writestr(f"annotations/instances_{release}.json", json.dumps(
                doc | {"images": part, "annotations": [a for a in doc["annotations"] if a["image_id"] in ids]}))
    files.append("annotations_trainval2017.zip")
    return [{"file": f, "md5": _md5(out / f)} for f in files]


def voc_archive(voc100: Path, out: Path) -> list[dict]:
    """VOCtrainval_11-May-2012.tar (VOCdevkit/VOC2012/…) from voc100; images alternate between train and val."""
    ids = sorted(p.stem for p in (voc100 / "Annotations").glob("*.xml"))
    name = "VOCtrainval_11-May-2012.tar"
    top = "VOCdevkit/VOC2012"
    with tarfile.open(out / name, "w") as t:
        for i in ids:
            t.add(voc100 / "Annotations" / f"{i}.xml", f"{top}/Annotations/{i}.xml")
            t.add(voc100 / "JPEGImages" / f"{i}.jpg", f"{top}/JPEGImages/{i}.jpg")
        for split, part in (("train", ids[0::2]), ("val", ids[1::2])):
            data = ("\n".join(part) + "\n").encode()
            info = tarfile.TarInfo(f"{top}/ImageSets/Main/{split}.txt")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return [{"file": name, "md5": _md5(out / name)}]


def dreambooth_archive(dreambooth: Path, out: Path) -> list[dict]:
    """The GitHub archive of google/dreambooth at the pinned commit: dreambooth-<commit>/dataset/…"""
    name = f"{DREAMBOOTH_COMMIT}.zip"
    prefix = f"dreambooth-{DREAMBOOTH_COMMIT}/dataset/"
    with zipfile.ZipFile(out / name, "w") as z:
        for p in sorted(dreambooth.rglob("*")):
            if p.is_file():
                z.write(p, prefix + p.relative_to(dreambooth).as_posix())
    return [{"file": name, "md5": None, "member_prefix": prefix}]


@pytest.fixture(scope="module")
def served_archives(shared_assets, tmp_path_factory):
    """The stand-in archives on an HTTP server at 127.0.0.1 (a free port), and a sources file naming them."""
    folder = tmp_path_factory.mktemp("mirror")
    archives = {"coco": coco_archives(shared_assets / "coco128", folder, ["laptop", "scissors"]),
                "pascal": voc_archive(shared_assets / "voc100", folder),
                "dreambooth": dreambooth_archive(shared_assets / "dreambooth", folder)}
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    table = {ds: {"archives": [a | {"sources": [{"url": f"{base}/{a['file']}",
                                                   "last_report": "rehearsal stand-in from ../shared/assets"}]}
                               for a in entries]} for ds, entries in archives.items()}
    sources = folder / "sources.yaml"
    sources.write_text(yaml.safe_dump(table, sort_keys=False))
    yield sources, base
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's output is the run's
        pass


def claims_rehearsal_overrides(sources: Path, hub: Path) -> dict:
    """The claims profile on the stand-ins: its datasets, models, claims and stages; few concepts, steps, words."""
    return {
        "study.hub_cache": str(hub), "study.device": "cpu", "study.concepts_per_dataset": 2,
        "study.anchors_per_concept": 1, "study.deltas": [0.5],
        # one word per task, each in another dataset: every dataset's images reach a trained word
        "study.grid_by_task": {
            "generation": {"datasets": ["pascal"], "concepts_per_dataset": 1, "unconstrained": False},
            "detection": {"datasets": ["dreambooth"], "concepts_per_dataset": 1, "deltas": []},
            "classification": {"datasets": ["coco"], "concepts_per_dataset": 1, "unconstrained": False}},
        "prepare.dataset_sources": str(sources), "prepare.train_per_concept": 1, "prepare.eval_per_concept": 1,
        "prepare.dreambooth_holdout": 1,
        "train.steps": 2, "train.batch_size": 1, "train.log_every": 1, "train.checkpoint_every": 1,
        # fp32: the half-precision paths are the paper rehearsal's to exercise (`vw reproduce --profile rehearsal`);
        # this one is about the claims run's start (fetch, boxes, every stage), and a CPU without native bf16
        # convolutions takes tens of minutes for one 768 px VAE encode in bf16 (43 s in fp32, measured here)
        "train.precision": "fp32",
        "evaluate.engine": "local", "evaluate.inference_steps": 1, "evaluate.precision": "fp32",
        "evaluate.bootstrap_resamples": 100, "analyze.tsne_perplexity": 2.0, "analyze.truncation_word": "",
        "analyze.truncation_depths": 1,  # the paper rehearsal generates at two depths
    }


def _vw(workspace: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", VW_ACCEPT_REHEARSAL="1", PYTHONPATH=str(REPO / "src"))
    env.pop("VW_PARAMS", None)
    return subprocess.run([sys.executable, "-m", "visual_words.cli", *args], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _sets(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={json.dumps(v)}"]  # JSON is YAML: lists and mappings pass as they are
    return out


@pytest.fixture(scope="module")
def hub(repo_root) -> Path:
    hub = repo_root / "artifacts" / "rehearsal" / "hub"
    if not (hub / "models.lock.json").is_file():
        pytest.fail(f"{hub}: no full-size stand-ins; run `vw rehearsal-models` first (make rehearse does)")
    return hub


def test_claims_run_fetches_draws_boxes_and_reports_from_an_empty_workspace(served_archives, hub, tmp_path):
    from visual_words.config import load_config
    from visual_words.data.dreambooth import read_box_file

    sources, base = served_archives
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    shutil.copy(REPO / "params.yaml", workspace / "params.yaml")  # what the container seeds an empty volume with
    overrides = claims_rehearsal_overrides(sources, hub)

    # fetching switched off: one line naming the command, before any stage (nothing written but the plan's output)
    stopped = _vw(workspace, "reproduce", "--profile", "claims", "--yes", *_sets(overrides),
                  "--set", "prepare.fetch=false")
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    lines = stopped.stderr.strip().splitlines()  # the model check's hashing progress bars, then the error
    err = [line for line in lines if "error" in line]
    want = (f"vw reproduce: error: DreamBooth (google/dreambooth dataset/) is not in "
            f"{workspace / 'data' / 'raw' / 'dreambooth'}: run `vw data fetch dreambooth`")
    assert len(err) == 1 and lines[-1] == err[0] and err[0].startswith(want), err
    assert "(also missing: coco, pascal)" in err[0]
    assert not (workspace / "data").exists() and not list(workspace.rglob("manifests"))  # no stage ran

    done = _vw(workspace, "reproduce", "--profile", "claims", "--yes", *_sets(overrides))
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout
    for ds, archive in (("coco", "train2017.zip"), ("pascal", "VOCtrainval_11-May-2012.tar"),
                        ("dreambooth", f"{DREAMBOOTH_COMMIT}.zip")):
        assert f"[fetch] {archive}: served by {base}/{archive}" in out
        assert (workspace / "data" / "raw" / ds).is_dir()
    fetched = json.loads((workspace / "data" / "fetched.json").read_text())
    assert set(fetched) == {"coco", "pascal", "dreambooth"}
    assert fetched["pascal"]["archives"]["VOCtrainval_11-May-2012.tar"]["served_by"].startswith(base)
    # the fetch comes before the first stage
    assert out.index("[fetch] ") < out.index("[reproduce] stage prepare")

    cfg = load_config("claims", workspace / "params.yaml", overrides)
    boxes_file = cfg.path(cfg.prepare.manifests_dir) / "dreambooth_boxes.json"
    data = read_box_file(boxes_file)
    photos = sorted(p.name for s in ("cat2", "vase") for p in (workspace / "data" / "raw" / "dreambooth" / s).iterdir())
    assert len(data["images"]) == len(photos) == 11  # cat2: 5 photos, vase: 6
    assert data["detector"]["model"] == "owlv2" and len(data["detector"]["weights_sha256"]) == 64
    for key, entry in data["images"].items():
        (box,) = entry["boxes"]
        x, y, w, h = box["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= entry["width"] + 0.01
        assert 0.0 <= box["score"] <= 1.0 and entry["checked"] is False
    assert "dreambooth boxes: 11 photo(s) detected by owlv2, 0 reused" in out

    report = cfg.path(cfg.report.out_dir) / "claims"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["dreambooth_boxes"]["photos"] == 11
    assert metrics["dreambooth_boxes"]["source"] == "detected at prepare time, not checked by hand"
    assert (report / "figures" / "dreambooth_boxes.png").stat().st_size > 10_000
    page = (report / "index.html").read_text()
    assert 'id="dreambooth-boxes"' in page and "checked by nobody" in page
    # the claims profile's own verdicts ran on the fetched data: one per claim it checks, each three-valued (or not
    # run where a part has no cell: this rehearsal trains one word per task)
    verdicts = metrics["verdicts"]
    assert list(verdicts) == list(cfg.report.claims) == ["C1", "C2", "C5"]
    statuses = {part["status"] for v in verdicts.values() for part in v["parts"]}
    assert statuses <= {"supported", "contradicted", "inconclusive", "not run"} and statuses - {"not run"}
    assert sum(metrics["verdicts_summary"].values()) == 3
