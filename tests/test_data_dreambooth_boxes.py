"""The DreamBooth box tool on the real DreamBooth photos, with the tiny OWLv2 (random weights: the boxes mean nothing,
the plumbing is what is tested — the box file, the mapping to pixels, the review images, hand work kept).

The photos are used at 256 px: OWLv2's image processor blurs before it downsizes (anti-aliasing), and from 2048 px
down to the tiny model's 64 px its Gaussian kernel is ~125 px wide, ~40 s per photo on this CPU (at the real
model's 960 px it is 1.7 s)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from visual_words.cli import main
from visual_words.io import sha256_file


@pytest.fixture(scope="module")
def small_dreambooth(shared_assets, tmp_path_factory) -> Path:
    """The real DreamBooth layout (subject folders + prompts_and_classes.txt) with two subjects' photos at 256 px."""
    src = shared_assets / "dreambooth"
    root = tmp_path_factory.mktemp("dreambooth")
    shutil.copy(src / "prompts_and_classes.txt", root)
    for subject in ("cat2", "duck_toy"):
        (root / subject).mkdir()
        for p in sorted((src / subject).glob("*.jpg")):
            with Image.open(p) as im:
                im.draft("RGB", (256, 256))  # JPEG DCT scaling: decode at ~1/8 size
                im.convert("RGB").resize((256, 256)).save(root / subject / p.name, quality=95)
    return root


def test_detect_maps_owlv2_boxes_back_to_image_pixels(tiny_owl, small_dreambooth):
    from visual_words.data.detect_boxes import detect

    image = Image.open(small_dreambooth / "cat2" / "02.jpg").convert("RGB").resize((320, 200))
    # not square: OWLv2 pads to 320 x 320 at the bottom, and its boxes are relative to that square
    bbox, score = detect(tiny_owl, image, "cat")
    inputs = tiny_owl.processor(text=[["cat"]], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = tiny_owl.model(**inputs)
    best = int(out.logits[0, :, 0].argmax())
    cx, cy, w, h = (out.pred_boxes[0, best] * 320).tolist()  # relative to the padded square
    x0, y0, x1, y1 = max(cx - w / 2, 0), max(cy - h / 2, 0), min(cx + w / 2, 320), min(cy + h / 2, 200)
    want = [x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)]  # a degenerate box is widened to 1 px
    assert torch.allclose(torch.tensor(bbox), torch.tensor(want), atol=0.02)
    assert score == pytest.approx(torch.sigmoid(out.logits[0, best, 0]).item())


@pytest.mark.slow
def test_box_tool_writes_unchecked_boxes_keeps_hand_work_and_accepts(small_dreambooth, tmp_path, capsys):
    from visual_words.data import dreambooth as db

    out, review = tmp_path / "boxes.json", tmp_path / "review"
    args = ["data", "dreambooth-boxes", "--root", str(small_dreambooth), "--out", str(out),
            "--model", "tiny-owlv2", "--subjects", "cat2", "duck_toy", "--review-dir", str(review),
            "--set", "study.device=cpu"]
    assert main(args) == 0
    assert "9 box(es) detected" in capsys.readouterr().out
    data = db.read_box_file(out)
    assert data["detector"]["model"] == "tiny-owlv2" and len(data["images"]) == 9
    e = data["images"]["duck_toy/00.jpg"]
    assert e["query"] == "toy" and e["checked"] is False and (e["width"], e["height"]) == (256, 256)
    x, y, w, h = e["boxes"][0]["bbox"]
    assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 257 and y + h <= 257
    assert e["sha256"] == sha256_file(small_dreambooth / "duck_toy" / "00.jpg")
    assert sorted(p.name for p in (review / "cat2").iterdir()) == [f"0{i}.png" for i in range(5)]
    # a reviewer fixes a box by hand and accepts cat2; a re-run keeps that work
    data["images"]["cat2/00.jpg"]["boxes"] = [{"bbox": [100, 200, 300, 400], "score": 1.0}]
    out.write_text(json.dumps(data))
    assert main(["data", "dreambooth-boxes", "--out", str(out), "--accept", "cat2"]) == 0
    assert capsys.readouterr().out.count("checked: cat2/") == 5
    assert main(args) == 0
    assert re.search(r"4 box\(es\) detected \(\d below 0.1\), 5 already-checked kept", capsys.readouterr().out)
    kept = db.read_box_file(out)["images"]
    assert kept["cat2/00.jpg"]["boxes"] == [{"bbox": [100, 200, 300, 400], "score": 1.0}]
    assert kept["cat2/00.jpg"]["checked"] and not kept["duck_toy/00.jpg"]["checked"]
    index = db.load_dreambooth(small_dreambooth, out, ["cat2"])
    assert index.images("all")[0].boxes[0].bbox == (100.0, 200.0, 300.0, 400.0)
    assert main(["data", "dreambooth-boxes", "--out", str(out), "--accept", "dog9"]) == 2
    assert "no entry `dog9`" in capsys.readouterr().err
