"""The `prepare` stage: datasets -> one manifest per dataset (+ the feature cache warmed for the study's models).

1. Read each dataset of `study.datasets` from its real on-disk format: under `prepare.data_root` (COCO, VOC,
   DreamBooth), `prepare.imagenet_root` (ImageNet), or — `prepare.source: synthetic` — from the smoke image set
   drawn under `prepare.synthetic_root` in the same layouts. DreamBooth's boxes: drawn here by the study's
   detector (`prepare.dreambooth_boxes: detect`, written to `<manifests_dir>/dreambooth_boxes.json` with the
   manifests) or read from a hand-checked box file.
2. Split the first `study.concepts_per_dataset` concepts of each (D7, `splits.py`).
3. Decode every selected image and check its size against the annotation: an unreadable, truncated or mismatched
   file is an error naming it.
4. Only when every dataset succeeded, write the manifests (each atomically) and provenance.json: a failed prepare
   leaves the previous manifests as they were.
5. With `prepare.precompute_features`, fill the feature cache (`features.py`) for the study's task models: SD
   latents of the training images of the concepts SD trains, OWL and CLIP embeddings of the training and held-out
   images.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from visual_words import registry
from visual_words.config import ConfigError
from visual_words.data.index import DatasetIndex
from visual_words.data.manifest import Manifest, manifest_path, read_manifest, write_manifest
from visual_words.io import write_text
from visual_words.preprocess import load_rgb
from visual_words.provenance import write_provenance
from visual_words.registry import study_concepts
from visual_words.tasks import TASKS

DATASETS = ("imagenet", "dreambooth", "coco", "pascal")


def dataset_root(cfg, dataset: str) -> Path:
    """Where a dataset's files are read from for this config (real or synthetic)."""
    if cfg.prepare.source == "synthetic":
        from visual_words.data.synthetic import dataset_root as syn_root
        from visual_words.data.synthetic import ensure_synthetic

        return syn_root(ensure_synthetic(cfg, dataset), dataset)
    if cfg.prepare.source != "real":
        raise ConfigError(f"{cfg.source}: `prepare.source` must be `real` or `synthetic`, got {cfg.prepare.source!r}")
    if dataset == "imagenet":
        from visual_words.data.imagenet import check_root

        return check_root(cfg.prepare.imagenet_root if not cfg.prepare.imagenet_root
                          else cfg.path(cfg.prepare.imagenet_root))
    from visual_words.data.preflight import DatasetMissingError, dataset_folder, missing_message

    folder = dataset_folder(cfg, dataset)
    if not folder.exists():  # not fetched: `vw reproduce` fetches first; `dvc repro` alone stops here, saying how
        raise DatasetMissingError(missing_message(cfg, dataset))
    return folder


def load_index(cfg, dataset: str, allow_unchecked: bool = False, boxes: dict | None = None) -> DatasetIndex:
    """The dataset as its loader reads it, restricted to what the study needs where the format allows. `boxes`:
    DreamBooth boxes drawn at this prepare (`prepare.dreambooth_boxes: detect`), before their file is written."""
    root = dataset_root(cfg, dataset)
    concepts = study_concepts(cfg, dataset)
    if dataset == "coco":
        from visual_words.data.coco import load_coco

        return load_coco(root)
    if dataset == "pascal":
        from visual_words.data.voc import load_voc

        return load_voc(root, cfg.prepare.voc_image_sets)
    if dataset == "imagenet":
        from visual_words.data.imagenet import load_imagenet

        return load_imagenet(root, {c.cls for c in concepts})
    if dataset == "dreambooth":
        from visual_words.data.dreambooth import load_dreambooth

        subjects = [c.cls for c in concepts]
        if cfg.prepare.source == "synthetic":
            return load_dreambooth(root, root / "dreambooth_boxes.json", subjects, allow_unchecked=allow_unchecked)
        if detects_boxes(cfg):  # drawn by the detector, never checked by hand (the deviation docs/data.md states)
            from visual_words.data.detect_boxes import run_boxes_path

            path = run_boxes_path(cfg)
            if boxes is None and not path.is_file():
                raise FileNotFoundError(f"{path}: the run's DreamBooth boxes are drawn by `vw data prepare` "
                                        "(prepare.dreambooth_boxes: detect); run it first")
            return load_dreambooth(root, path, subjects, allow_unchecked=True, data=boxes)
        return load_dreambooth(root, cfg.path(cfg.prepare.dreambooth_boxes), subjects,
                               allow_unchecked=allow_unchecked)
    raise ValueError(f"unknown dataset `{dataset}` (known: {', '.join(DATASETS)})")


def detects_boxes(cfg) -> bool:
    """True when this run draws its DreamBooth boxes at prepare time (real photos, `dreambooth_boxes: detect`)."""
    from visual_words.data.dreambooth import DETECT

    return cfg.prepare.source == "real" and cfg.prepare.dreambooth_boxes == DETECT


def build(cfg, dataset: str, boxes: dict | None = None) -> tuple[Manifest, DatasetIndex]:
    from visual_words.data.splits import build_holdout_manifest, build_manifest

    index = load_index(cfg, dataset, boxes=boxes)
    p = cfg.prepare
    common = dict(seed=p.split_seed, source=p.source, manifest_dir=manifest_path(cfg, dataset).parent,
                  repo=Path(cfg.root))
    concepts = study_concepts(cfg, dataset)
    if dataset == "dreambooth":
        m = build_holdout_manifest(index, concepts, holdout=p.dreambooth_holdout, train_per_concept=p.train_per_concept,
                                   **common)
    else:
        m = build_manifest(index, concepts, train_per_concept=p.train_per_concept,
                           eval_per_concept=p.eval_per_concept, **common)
    return m, index


def verify_images(m: Manifest, root: Path, progress: bool = True) -> None:
    """Decode every image of the manifest; its size must match the annotation the boxes were drawn on."""
    records = [r for s in m.concepts.values() for r in (*s.train, *s.eval)]
    for r in tqdm(records, desc=f"{m.dataset}: checking images", unit="img", disable=not progress):
        path = root / r.file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image of the {m.dataset} manifest not found")
        im = load_rgb(path)
        if (im.width, im.height) != (r.width, r.height):
            raise ValueError(f"{path}: image is {im.width}x{im.height} but its annotation says "
                             f"{r.width}x{r.height}; the boxes would not fit it")


def feature_jobs(cfg, manifest: Manifest) -> list[tuple[str, str, list, str]]:
    """(model key, feature kind, records, precision) the study's task models need from a manifest (their families
    say which features of which splits: `Family.prepared_features`; a family whose training reads only its own
    concept's images gets features only for the concepts its task's grid trains).

    Each split's features are computed at the precision of the stage that reads them (train images at
    `train.precision`, held-out images at `evaluate.precision`): a feature's cache key holds the weights' dtype, so a
    feature computed at another precision would never be read, and the reading stage would compute it again."""
    from visual_words.models.families import family_of
    from visual_words.trials import trained_concepts

    jobs = []
    for role in TASKS:
        key = cfg.study.models.get(role)
        if not key:
            continue
        family = family_of(registry.model(key))
        concepts = dict(manifest.concepts)
        if family.trains_on_own_concept_only:
            trained = {c.name for c in trained_concepts(cfg, role, manifest.dataset)}
            concepts = {name: split for name, split in concepts.items() if name in trained}
        train = [r for s in concepts.values() for r in s.train]
        held_out = [r for s in concepts.values() for r in s.eval]
        for kind, splits in family.prepared_features.items():
            by_precision: dict[str, list] = {cfg.train.precision: list(train)}
            if "eval" in splits:
                by_precision.setdefault(cfg.evaluate.precision, []).extend(held_out)
            jobs += [(key, kind, records, precision) for precision, records in by_precision.items() if records]
    return jobs


def precompute_features(cfg, manifests: dict[str, Manifest], progress: bool = True) -> dict[str, int]:
    """Fill the cache for every (model, kind) the study needs; loads one model at a time. Returns images computed."""
    from visual_words.data.features import FeatureCache
    from visual_words.models.loading import load_model

    by_model: dict[tuple[str, str], list[tuple[str, Manifest, list]]] = {}
    for m in manifests.values():
        for key, kind, records, precision in feature_jobs(cfg, m):
            by_model.setdefault((key, precision), []).append((kind, m, records))
    cache = FeatureCache(cfg, progress=progress)
    computed: dict[str, int] = {}
    for (key, precision), jobs in by_model.items():
        loaded = load_model(key, device=cfg.study.device, precision=precision, root=cfg.root)
        before = cache.misses
        for kind, m, records in jobs:
            cache.get(kind, loaded, m, records)
        computed[key] = computed.get(key, 0) + cache.misses - before
        del loaded
    return computed


def prepare(cfg, datasets: list[str] | None = None, features: bool | None = None,
            progress: bool = True) -> dict[str, Path]:
    """Run the stage; returns dataset -> manifest path. Nothing is written unless every dataset succeeded."""
    t0 = time.time()
    datasets = list(datasets or cfg.study.datasets)
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset `{unknown[0]}` (known: {', '.join(DATASETS)})")
    boxes = None
    if "dreambooth" in datasets and detects_boxes(cfg):
        from visual_words.data.detect_boxes import boxes_for_run
        from visual_words.data.dreambooth import find_root

        boxes = boxes_for_run(cfg, find_root(dataset_root(cfg, "dreambooth")),
                              [c.cls for c in study_concepts(cfg, "dreambooth")], progress)
    built = {}
    for ds in datasets:
        m, index = build(cfg, ds, boxes if ds == "dreambooth" else None)
        verify_images(m, index.root, progress)
        built[ds] = m
    if boxes is not None:  # with the manifests that read them, never before every dataset succeeded
        from visual_words.data.detect_boxes import run_boxes_path
        from visual_words.data.dreambooth import write_box_file

        write_box_file(run_boxes_path(cfg), boxes)
    paths = {ds: write_manifest(manifest_path(cfg, ds), m) for ds, m in built.items()}
    # The synthetic image folder is a DVC output of this stage (so `dvc pull` brings the smoke images with the
    # manifests that point at them); it exists, holding just this note, when the source is real.
    synthetic = cfg.path(cfg.prepare.synthetic_root)
    synthetic.mkdir(parents=True, exist_ok=True)
    if not (synthetic / "README.txt").exists():
        write_text(synthetic / "README.txt", "Smoke-profile images drawn at run time by `vw data prepare` "
                   "(prepare.source: synthetic), in each dataset's real on-disk layout.\n")
    for ds, path in paths.items():
        counts = built[ds].counts()
        total = sum(c["train"] + c["eval"] for c in counts.values())
        print(f"[prepare] {ds}: {len(counts)} concepts, {total} images -> {path}")
    if cfg.prepare.precompute_features if features is None else features:
        done = precompute_features(cfg, {ds: read_manifest(p) for ds, p in paths.items()}, progress)
        for key, n in done.items():
            print(f"[prepare] features of {key}: {n} image(s) computed, the rest already cached")
    write_provenance(cfg.path(cfg.prepare.manifests_dir), cfg, "prepare", time.time() - t0)
    return paths
