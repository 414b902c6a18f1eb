"""`vw data check`: is a dataset on disk usable for the study? Images per concept and split, and unreadable files.

For every selected concept and split it counts the images labelled with the concept (largest box; what prepare
draws from) and the images holding any box of it, against what prepare will ask for. It decodes the images of the
selected concepts (or every image of the dataset) and lists the files that are missing, unreadable or truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from visual_words.preprocess import load_rgb


@dataclass
class CheckReport:
    dataset: str
    root: Path
    rows: list[dict] = field(default_factory=list)  # concept, class, split, labelled, with_box, asked, ok
    bad_files: list[tuple[str, str]] = field(default_factory=list)  # (path, problem)
    decoded: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_files and all(r["ok"] for r in self.rows)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "root": str(self.root), "ok": self.ok, "rows": self.rows,
                "bad_files": [{"file": f, "problem": p} for f, p in self.bad_files], "decoded": self.decoded,
                "notes": self.notes}


def check_dataset(cfg, dataset: str, all_images: bool = False, progress: bool = True) -> CheckReport:
    from visual_words.data.prepare import load_index
    from visual_words.registry import study_concepts

    index = load_index(cfg, dataset, allow_unchecked=True)
    concepts = study_concepts(cfg, dataset)
    report = CheckReport(dataset, index.root)
    p = cfg.prepare
    if dataset == "dreambooth":
        asked = {"all": p.dreambooth_holdout + 1}
        report.notes.append(f"DreamBooth: each subject needs at least dreambooth_holdout + 1 = {asked['all']} photos "
                            "with a box (D7)")
    else:
        asked = {"train": p.train_per_concept, "val": p.eval_per_concept}
    wanted = {c.cls for c in concepts}
    to_decode = []
    for split, images in index.splits.items():
        by_label = index.by_label(split)
        for c in concepts:
            labelled = len(by_label.get(c.cls, []))
            with_box = sum(any(b.cls == c.cls for b in im.boxes) for im in images)
            need = asked.get(split, 0)
            report.rows.append({"concept": c.name, "class": c.cls, "split": split, "labelled": labelled,
                                "with_box": with_box, "asked": need, "ok": labelled >= need})
        to_decode += [im for im in images if all_images or im.label in wanted]
    for im in tqdm(to_decode, desc=f"{dataset}: decoding", unit="img", disable=not progress):
        path = index.root / im.file
        try:
            if not path.is_file():
                raise FileNotFoundError("file not found")
            decoded = load_rgb(path)
            if (decoded.width, decoded.height) != (im.width, im.height):
                raise ValueError(f"is {decoded.width}x{decoded.height}, annotation says {im.width}x{im.height}")
        except (FileNotFoundError, ValueError) as e:
            msg = str(e).removeprefix(f"{path}: ")
            report.bad_files.append((str(path), msg))
        report.decoded += 1
    return report


def format_report(r: CheckReport) -> str:
    lines = [f"{r.dataset} at {r.root}", f"  {'concept':<20} {'class':<14} {'split':<6} {'labelled':>8} "
             f"{'with box':>8} {'asked':>6}"]
    for row in r.rows:
        flag = "" if row["ok"] else "   <- too few"
        lines.append(f"  {row['concept']:<20} {row['class']:<14} {row['split']:<6} {row['labelled']:>8} "
                     f"{row['with_box']:>8} {row['asked']:>6}{flag}")
    lines += [f"  note: {n}" for n in r.notes]
    lines.append(f"  decoded {r.decoded} image(s); {len(r.bad_files)} unreadable or missing")
    lines += [f"  BAD {f}: {p}" for f, p in r.bad_files]
    lines.append("  OK" if r.ok else "  PROBLEMS FOUND")
    return "\n".join(lines)
