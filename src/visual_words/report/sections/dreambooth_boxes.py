"""The DreamBooth boxes the run used, on a contact sheet for inspection (every photo of the study's subjects with its
box and the detector's score), and where they came from: drawn by the detector at prepare time and checked by
nobody (`prepare.dreambooth_boxes: detect`; the paper checked its boxes by hand), or a hand-checked box file."""

from __future__ import annotations

from functools import partial

from visual_words.report import figures as F
from visual_words.report.section import Figure, Section, Table, skipped

ID, TITLE = "dreambooth-boxes", "DreamBooth boxes used by this run"


def dreambooth_boxes_section(cfg, banner: str = "") -> Section:
    """The contact sheet and a table of the lowest-scoring boxes; nothing for a run without real DreamBooth photos."""
    from visual_words.data.detect_boxes import LOW_SCORE, run_boxes_path
    from visual_words.data.dreambooth import find_root, read_box_file
    from visual_words.data.preflight import dataset_folder
    from visual_words.data.prepare import detects_boxes
    from visual_words.registry import study_concepts

    if "dreambooth" not in cfg.study.datasets or cfg.prepare.source != "real":
        return Section("")
    detected = detects_boxes(cfg)
    path = run_boxes_path(cfg) if detected else cfg.path(cfg.prepare.dreambooth_boxes)
    if not path.is_file():
        return skipped("DreamBooth boxes contact sheet", f"{path} not found (run `vw data prepare`)")
    data = read_box_file(path)
    try:
        root = find_root(dataset_folder(cfg, "dreambooth"))
    except FileNotFoundError as e:
        return skipped("DreamBooth boxes contact sheet", str(e))
    subjects = {c.cls for c in study_concepts(cfg, "dreambooth")}
    entries = sorted((k, e) for k, e in data["images"].items() if e["subject"] in subjects)
    scores = [b["score"] for _, e in entries for b in e["boxes"] if b.get("score") is not None]
    low = [(k, b["score"]) for k, e in entries for b in e["boxes"] if b.get("score") is not None
           and b["score"] < LOW_SCORE]
    det = data.get("detector", {})
    rel = path.relative_to(cfg.root) if path.is_relative_to(cfg.root) else path
    if detected:
        origin = (f"drawn at prepare time by `{det.get('model', '?')}` ({det.get('id', '?')} @ "
                  f"{str(det.get('revision', '?'))[:12]}) with each subject's class as the query, the best box per "
                  "photo, and checked by nobody. The paper drew OWLv2 boxes too but checked each by hand: look at "
                  "every box below. To use hand-checked boxes instead, make a box file with `vw data "
                  "dreambooth-boxes` (it draws review images; `--accept` marks checked entries) and set "
                  "`prepare.dreambooth_boxes` to it (docs/data.md).")
    else:
        origin = "read from a hand-checked box file (`prepare.dreambooth_boxes`); prepare accepts only checked boxes."
    text = (f"{len(entries)} photo(s) of {len(subjects)} subject(s), boxes from `{rel}`: {origin} "
            f"Orange: score below {LOW_SCORE}.")
    photos = [(root / k, f"{k}  {e['query']}", e["boxes"]) for k, e in entries]
    figures = [Figure("dreambooth_boxes", "DreamBooth boxes (contact sheet)", text,
                      partial(F.box_contact_sheet, photos, "DreamBooth boxes and detector scores", banner,
                              LOW_SCORE))] if photos else []
    worst = sorted(((k, e["boxes"][0].get("score")) for k, e in entries if e["boxes"]),
                   key=lambda kv: (kv[1] is None, kv[1] if kv[1] is not None else 0))[:10]
    table = Table("Lowest-scoring boxes", ["photo", "query", "score", "checked"],
                  [{"cells": [k, data["images"][k]["query"], "" if s is None else f"{s:.3f}",
                              str(data["images"][k]["checked"]).lower()],
                    "class": "flag" if s is not None and s < LOW_SCORE else ""} for k, s in worst])
    metrics = {"dreambooth_boxes": {
        "file": str(rel), "source": "detected at prepare time, not checked by hand" if detected else "hand-checked",
        "detector": det.get("model"), "photos": len(entries), "low_score_boxes": len(low),
        "min_score": round(min(scores), 4) if scores else None}}
    return Section(ID, TITLE, text, figures=figures, tables=[table] if worst else [], metrics=metrics)
