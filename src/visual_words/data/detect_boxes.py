"""The DreamBooth box tool behind `vw data dreambooth-boxes` (box file format: `dreambooth.py`).

Runs the OWL detector on every photo of the subjects with the subject's class (prompts_and_classes.txt, e.g. "toy"
for duck_toy) as the text query, through the loaded model and its processor's own post-processing (which maps
OWLv2's padded-square boxes back to image pixels), keeps the best-scoring box, and writes it unchecked. It draws a
review image per photo (the box and its score) so a person can check each box; `accept` then marks entries checked.

Hand work is never lost: an entry already checked for the same photo (same sha256) is kept as it is unless `redo`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import ImageDraw
from tqdm import tqdm

from visual_words.data import dreambooth as db
from visual_words.io import sha256_file
from visual_words.preprocess import load_rgb

REVIEW_SIDE = 512  # review images are downscaled to this longer side


@torch.no_grad()
def detect(loaded, image, query: str) -> tuple[list[float], float]:
    """The best box [x, y, w, h] (pixels of `image`) for `query` and its score."""
    from visual_words.models.families import family_of

    if family_of(loaded).task != "detection":
        raise ValueError(f"model `{loaded.entry.key}` is not an OWL detector (family {loaded.entry.family})")
    inputs = loaded.processor(text=[[query]], images=[image], return_tensors="pt")
    inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
    outputs = loaded.model(**inputs)
    result = loaded.processor.post_process_grounded_object_detection(
        outputs, threshold=0.0, target_sizes=[(image.height, image.width)])[0]
    if len(result["scores"]) == 0:
        raise ValueError(f"OWL returned no box at all for query {query!r}")
    best = int(result["scores"].float().argmax())
    x0, y0, x1, y1 = (float(v) for v in result["boxes"][best].float())
    # clipped to the image; a box wholly outside it (possible for any scorer) becomes a 1-px box at its edge
    x0, y0 = min(max(0.0, x0), image.width - 1.0), min(max(0.0, y0), image.height - 1.0)
    x1, y1 = min(float(image.width), x1), min(float(image.height), y1)
    return [round(x0, 2), round(y0, 2), round(max(x1 - x0, 1.0), 2), round(max(y1 - y0, 1.0), 2)], \
        float(result["scores"][best])


def draw_review(image, boxes: list[dict], out: Path, caption: str) -> Path:
    scale = REVIEW_SIDE / max(image.width, image.height)
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    d = ImageDraw.Draw(small)
    for b in boxes:
        x, y, w, h = (v * scale for v in b["bbox"])
        d.rectangle((x, y, x + w, y + h), outline=(255, 0, 0), width=3)
        d.text((x + 4, y + 4), f"{b.get('score', 0):.2f}", fill=(255, 0, 0))
    d.text((4, small.height - 14), caption, fill=(255, 255, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out)
    return out


def run(loaded, root: str | Path, out: str | Path, subjects: list[str] | None = None, threshold: float = 0.1,
        redo: bool = False, review_dir: str | Path | None = None, progress: bool = True) -> dict[str, int]:
    """Detect boxes for the subjects' photos and merge them into the box file `out`. Returns counts."""
    root = db.find_root(root)
    out = Path(out)
    classes = db.read_classes(root)
    subjects = subjects or sorted(classes)
    data = db.read_box_file(out) if out.is_file() else db.empty_box_file()
    data["detector"] = {"model": loaded.entry.key, "id": loaded.entry.id, "revision": loaded.entry.revision,
                        "threshold": threshold, "query": "the subject's class from prompts_and_classes.txt"}
    stats = {"detected": 0, "kept_checked": 0, "low_score": 0}
    photos = [(s, p) for s in subjects for p in db.subject_images(root, s)]
    for subject, path in tqdm(photos, desc="dreambooth boxes", unit="img", disable=not progress):
        key = f"{subject}/{path.name}"
        sha = sha256_file(path)
        old = data["images"].get(key)
        if old and old["checked"] and old.get("sha256") == sha and not redo:
            stats["kept_checked"] += 1
            continue
        if subject not in classes:
            raise ValueError(f"{root / db.CLASSES_FILE}: subject `{subject}` has no class line")
        image = load_rgb(path)
        bbox, score = detect(loaded, image, classes[subject])
        low = score < threshold
        stats["detected"] += 1
        stats["low_score"] += low
        data["images"][key] = {"subject": subject, "query": classes[subject], "sha256": sha, "width": image.width,
                               "height": image.height, "boxes": [{"bbox": bbox, "score": round(score, 4)}],
                               "checked": False, "note": f"score below {threshold}: check carefully" if low else ""}
        if review_dir is not None:
            draw_review(image, data["images"][key]["boxes"], Path(review_dir) / subject / f"{path.stem}.png",
                        f"{key} query={classes[subject]!r} score={score:.2f}")
    db.write_box_file(out, data)
    return stats


def accept(out: str | Path, keys: list[str]) -> list[str]:
    """Mark entries checked after a person looked at them: `subject/file` keys, or a subject name for all its photos."""
    out = Path(out)
    data = db.read_box_file(out)
    done = []
    for k in keys:
        matched = [key for key in data["images"] if key == k or key.split("/", 1)[0] == k]
        if not matched:
            raise KeyError(f"{out}: no entry `{k}` (keys look like cat2/00.jpg, or give a subject name)")
        for key in matched:
            data["images"][key]["checked"] = True
            done.append(key)
    db.write_box_file(out, data)
    return done


# ---------------------------------------------------------------------------------------------------------------
# Boxes drawn at prepare time (prepare.dreambooth_boxes: detect)

LOW_SCORE = 0.1  # a box scoring below this gets a note in the box file and is flagged on the report's contact sheet


def run_boxes_path(cfg) -> Path:
    """The run's own box file: beside the profile's manifests (a prepare output; the report reads it)."""
    return cfg.path(cfg.prepare.manifests_dir) / db.RUN_BOXES


def boxes_for_run(cfg, root: Path, subjects: list[str], progress: bool = True) -> dict:
    """The box-file contents for the study's subjects, drawn by the study's detector (`study.models.detection`)
    with each subject's class as the query, every box with its score and `checked: false`. Entries of the run's
    previous box file are reused for a photo with the same sha256 drawn by the same weights (their sha256); the rest
    is detected. Nothing is written here: prepare writes the file with the manifests, only when all succeed."""
    from visual_words.data.features import weights_digest
    from visual_words.models.loading import load_model

    key = cfg.study.models["detection"]
    loaded = load_model(key, device=cfg.study.device, root=cfg.root)
    detector = {"model": key, "id": loaded.entry.id, "revision": loaded.entry.revision,
                "weights_sha256": weights_digest([("model", loaded.model)]), "threshold": LOW_SCORE,
                "query": "the subject's class from prompts_and_classes.txt",
                "when": "prepare (dreambooth_boxes: detect)"}
    previous = _previous_entries(run_boxes_path(cfg), detector["weights_sha256"])
    classes = db.read_classes(root)
    data = db.empty_box_file(detector)
    data["about"] = (f"DreamBooth boxes drawn by {key} at prepare time, the best box per photo with its score; NOT "
                     "checked by hand (the paper checked its OWLv2 boxes by hand). Inspect them on the report's "
                     "contact sheet; to use hand-checked boxes instead, set prepare.dreambooth_boxes to such a file.")
    photos = [(s, p) for s in subjects for p in db.subject_images(root, s)]
    reused = 0
    for subject, path in tqdm(photos, desc=f"dreambooth boxes ({key})", unit="img", disable=not progress):
        name = f"{subject}/{path.name}"
        sha = sha256_file(path)
        if previous.get(name, {}).get("sha256") == sha:
            data["images"][name] = previous[name]
            reused += 1
            continue
        if subject not in classes:
            raise ValueError(f"{root / db.CLASSES_FILE}: subject `{subject}` has no class line")
        image = load_rgb(path)
        bbox, score = detect(loaded, image, classes[subject])
        data["images"][name] = {"subject": subject, "query": classes[subject], "sha256": sha, "width": image.width,
                                "height": image.height, "boxes": [{"bbox": bbox, "score": round(score, 4)}],
                                "checked": False,
                                "note": f"score below {LOW_SCORE}: look at it" if score < LOW_SCORE else ""}
    print(f"[prepare] dreambooth boxes: {len(photos) - reused} photo(s) detected by {key}, {reused} reused "
          f"-> {run_boxes_path(cfg)} (not checked by hand; see the report's contact sheet)", flush=True)
    return data


def _previous_entries(path: Path, weights_sha256: str) -> dict[str, dict]:
    """The previous run box file's entries when the same weights drew them; a damaged file is never used."""
    if not path.is_file():
        return {}
    try:
        old = db.read_box_file(path)
    except ValueError as e:
        print(f"[prepare] {path}: damaged ({e}); detecting every box again", flush=True)
        return {}
    if old.get("detector", {}).get("weights_sha256") != weights_sha256:
        return {}
    return old["images"]
