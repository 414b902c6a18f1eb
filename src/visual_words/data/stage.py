"""The `prepare` stage: the study's datasets → per-concept manifests (train / held-out splits, boxes, labels) and the
image-side feature caches of the study's models (data/prepare.py does the work)."""

from __future__ import annotations

from visual_words.data.prepare import prepare


def run(cfg, datasets: list[str] | None = None, features: bool | None = None, progress: bool = True):
    """Write the manifests (and, unless `features` is False, fill the feature cache); returns prepare's result."""
    return prepare(cfg, datasets=datasets, features=features, progress=progress)
