"""DreamBooth (google/dreambooth `dataset/`) and its box file.

Layout, as released:

    <root>/<subject>/00.jpg …            4–6 photos of one subject (cat2, vase, duck_toy, …)
    <root>/prompts_and_classes.txt       "subject_name,class" lines (cat2,cat / duck_toy,toy / …)

DreamBooth has no boxes. The paper (docs/paper.md §2.1) ran the detector (OWLv2) with the subject's class as the
text query and checked every box by hand. Two ways here (`prepare.dreambooth_boxes`, docs/data.md):

- `detect` (the default): prepare runs the study's detector on the study's subjects' photos and keeps the best box
  of each with its score, unchecked, in the run's box file `<prepare.manifests_dir>/dreambooth_boxes.json`
  (`detect_boxes.boxes_for_run`); the report draws them all on a contact sheet for inspection. A deviation from
  the paper: nobody checked them.
- a hand-checked box file: `vw data dreambooth-boxes` runs the detector and writes the file; a person looks at the
  review images it draws, fixes what is wrong and marks each entry `checked` (by editing the file, or
  `vw data dreambooth-boxes --accept cat2/00.jpg …`); `prepare.dreambooth_boxes: <that file>` makes prepare use it,
  and prepare refuses boxes in it that nobody checked.

Box file format (JSON, `prepare.dreambooth_boxes`; `FORMAT` names the version):

    {"format": "visual-words/dreambooth-boxes/1",
     "detector": {"model": "owlv2", "id": "google/owlv2-base-patch16-ensemble", "revision": "…", "threshold": 0.1,
                  "weights_sha256": "…"},                     # the weights' digest (boxes drawn at prepare time)
     "images": {
       "cat2/00.jpg": {"subject": "cat2", "query": "cat", "sha256": "<sha256 of the image file>",
                       "width": 1920, "height": 1920,
                       "boxes": [{"bbox": [x, y, w, h], "score": 0.83}],   # pixels, COCO-style xywh
                       "checked": false,                                     # true once a person confirmed it
                       "note": ""}}}                                         # free text for the reviewer

`sha256` ties an entry to the exact photo: a changed photo makes its box stale, which is an error. Every box of an
image belongs to its subject, so the label (class of the largest box) is the subject.
"""

from __future__ import annotations

import json
from pathlib import Path

from visual_words.data.index import AnnotatedImage, DatasetIndex, RawBox, require_file
from visual_words.io import sha256_file, write_json

FORMAT = "visual-words/dreambooth-boxes/1"
DETECT = "detect"  # prepare.dreambooth_boxes: draw the boxes at prepare time (else: a hand-checked file's path)
RUN_BOXES = "dreambooth_boxes.json"  # the run's own box file, in prepare.manifests_dir
HAND_CHECKED = "data/dreambooth_boxes.json"  # where `vw data dreambooth-boxes` writes unless told (--out)
CLASSES_FILE = "prompts_and_classes.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_root(root: str | Path) -> Path:
    """The folder with the subject folders: `root` itself, or `root/dataset` (a clone of the repository)."""
    root = Path(root)
    for cand in (root, root / "dataset"):
        if (cand / CLASSES_FILE).is_file():
            return cand
    raise FileNotFoundError(f"{root}: no DreamBooth dataset here ({CLASSES_FILE} not found in it or in dataset/; "
                            "fetch it with `vw data fetch dreambooth`)")


def read_classes(root: Path) -> dict[str, str]:
    """subject -> class from prompts_and_classes.txt (the `subject_name,class` block before the prompt lists)."""
    out = {}
    for line in (root / CLASSES_FILE).read_text().splitlines():
        line = line.strip()
        if line.lower().startswith("prompts"):
            break
        name, sep, cls = line.partition(",")
        if sep and name and name != "subject_name" and " " not in name:
            out[name] = cls.strip()
    return out


def subject_images(root: Path, subject: str) -> list[Path]:
    folder = root / subject
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: DreamBooth subject folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def empty_box_file(detector: dict | None = None) -> dict:
    return {"format": FORMAT, "detector": detector or {}, "images": {}}


def read_box_file(path: str | Path) -> dict:
    path = Path(path)
    require_file(path, "DreamBooth box file", "run `vw data dreambooth-boxes` to detect the boxes, then check them")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: DreamBooth box file is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("images"), dict):
        raise ValueError(f"{path}: not a DreamBooth box file (expected \"format\": \"{FORMAT}\" and an `images` map)")
    for key, entry in data["images"].items():
        try:
            for b in entry["boxes"]:
                if len(b["bbox"]) != 4 or b["bbox"][2] <= 0 or b["bbox"][3] <= 0:
                    raise ValueError("bbox must be [x, y, w, h] with w, h > 0")
            if not isinstance(entry["checked"], bool):
                raise ValueError("`checked` must be true or false")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: entry `{key}` is malformed ({type(e).__name__}: {e})") from None
    return data


def write_box_file(path: str | Path, data: dict) -> Path:
    return write_json(path, data)


def load_dreambooth(root: str | Path, boxes_file: str | Path, subjects: list[str] | None = None,
                    allow_unchecked: bool = False, data: dict | None = None) -> DatasetIndex:
    """The subjects' photos with their boxes from the box file, as one split `all` (D7 splits it per subject).
    `data`: the box file's contents when they are not written yet (boxes detected at prepare time; errors still
    name `boxes_file`, where they will be written).

    Errors name the photo: no entry in the box file, an entry for a different photo (sha256), or a box nobody
    checked (unless `allow_unchecked`: boxes detected at prepare time, or detector output before review)."""
    root = find_root(root)
    boxes_file = Path(boxes_file)
    entries = (data if data is not None else read_box_file(boxes_file))["images"]
    subjects = subjects if subjects is not None else sorted(read_classes(root))
    images, unchecked = [], []
    for subject in subjects:
        for path in subject_images(root, subject):
            key = f"{subject}/{path.name}"
            entry = entries.get(key)
            if entry is None:
                raise ValueError(f"{boxes_file}: no box for DreamBooth photo {path} (key `{key}`); run "
                                 "`vw data dreambooth-boxes` and check the new boxes")
            if entry.get("sha256") and entry["sha256"] != sha256_file(path):
                raise ValueError(f"{path}: the photo differs from the one whose box was checked in {boxes_file} "
                                 "(sha256 mismatch); re-run `vw data dreambooth-boxes` for it and check it again")
            if not entry["checked"]:
                unchecked.append(key)
            boxes = tuple(RawBox(subject, tuple(float(v) for v in b["bbox"])) for b in entry["boxes"])
            images.append(AnnotatedImage(file=key, width=int(entry["width"]), height=int(entry["height"]),
                                         boxes=boxes))
    if unchecked and not allow_unchecked:
        raise ValueError(f"{boxes_file}: {len(unchecked)} DreamBooth box(es) not checked by hand yet "
                         f"({', '.join(unchecked[:5])}{' …' if len(unchecked) > 5 else ''}); look at the review "
                         "images of `vw data dreambooth-boxes`, fix the boxes, then set `checked: true`")
    return DatasetIndex("dreambooth", root, {"all": images})
