"""What every dataset loader returns: the images of each split with all their boxes, in the dataset's own classes.

A loader parses one dataset's real on-disk format (COCO instances JSON, VOC XML, ImageNet LOC CSVs, DreamBooth
subject folders + box file) into a `DatasetIndex`. Choosing concepts, labelling and splitting happen afterwards
(`splits.py`), the same way for every dataset, so a loader's only job is to read its format faithfully.

Labels follow the paper (docs/paper.md §2.1): an image's label is the class of its **largest box** (by box area
w × h, over all of the image's boxes, not only those of the selected concepts; ties go to the first box in the
annotation file's order). An image whose largest box is a person is not a cup image, even if a cup is in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RawBox:
    cls: str  # the dataset's own class: COCO category name, VOC XML name, ImageNet wnid, DreamBooth subject
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels of the stored image (COCO convention)
    iscrowd: bool = False  # a COCO crowd region: kept so detection scoring ignores it, never an image's label

    @property
    def area(self) -> float:
        return self.bbox[2] * self.bbox[3]


@dataclass(frozen=True)
class AnnotatedImage:
    file: str  # relative to the dataset's root (DatasetIndex.root), with forward slashes
    width: int
    height: int
    boxes: tuple[RawBox, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str | None:
        """The class of the largest box, crowd regions aside (None for an image without such boxes)."""
        objects = [b for b in self.boxes if not b.iscrowd]
        return largest_box(objects).cls if objects else None


def largest_box(boxes) -> RawBox:
    """The box with the largest area; the first one wins ties (`max` keeps the first maximum)."""
    return max(boxes, key=lambda b: b.area)


@dataclass
class DatasetIndex:
    """One dataset as read from disk: split name -> images. Splits are the dataset's own (train / val)."""

    name: str
    root: Path  # the folder `AnnotatedImage.file` is relative to
    splits: dict[str, list[AnnotatedImage]]

    def images(self, split: str) -> list[AnnotatedImage]:
        if split not in self.splits:
            raise KeyError(f"dataset `{self.name}` at {self.root} has no split `{split}` "
                           f"(it has: {', '.join(self.splits) or 'none'})")
        return self.splits[split]

    def by_label(self, split: str) -> dict[str, list[AnnotatedImage]]:
        """Images of a split grouped by their label (the largest box's class); images without boxes are left out."""
        out: dict[str, list[AnnotatedImage]] = {}
        for im in self.images(split):
            if im.label is not None:
                out.setdefault(im.label, []).append(im)
        return out


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the image header only (no decode); a clear error naming the file when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable image ({e})") from None


def require_file(path: Path, what: str, hint: str = "") -> Path:
    """`path` if it exists, else a FileNotFoundError that says which dataset file is missing and what to do."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))
    return path
