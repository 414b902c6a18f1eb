"""`vw data fetch | check | show | prepare | dreambooth-boxes`: the datasets, their manifests and feature caches."""

from __future__ import annotations

import json
import sys

from visual_words.commands import add_config_args, config_from_args

DATASETS = ("imagenet", "dreambooth", "coco", "pascal")


def cmd_fetch(args) -> int:
    from visual_words.data.fetch import configured_source, fetch

    cfg = config_from_args(args)
    src = args.src if args.src or args.dataset != "imagenet" else (cfg.prepare.imagenet_root or None)
    try:
        fetch(args.dataset, cfg.path(cfg.prepare.data_root), src=src, copy=args.copy, force=args.force,
              downloads=cfg.path(cfg.prepare.downloads_dir), timeout=args.timeout,
              spec=configured_source(cfg, args.dataset))
    except ConnectionError as e:
        print(f"vw data fetch: {e}", file=sys.stderr)
        return 3
    return 0


def cmd_check(args) -> int:
    from visual_words.data.check import check_dataset, format_report

    cfg = config_from_args(args)
    rc = 0
    for ds in args.datasets or cfg.study.datasets:
        report = check_dataset(cfg, ds, all_images=args.all_images, progress=not args.json)
        print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
        rc = rc or (0 if report.ok else 1)
    return rc


def cmd_show(args) -> int:
    from visual_words.data.manifest import manifest_path, read_manifest

    cfg = config_from_args(args)
    m = read_manifest(manifest_path(cfg, args.dataset))
    if args.json:
        print(json.dumps(m.to_dict(), indent=2))
        return 0
    print(f"{m.dataset}: source={m.source} seed={m.seed} images under {m.image_root}")
    for k, v in m.meta.items():
        if k not in ("classes",):
            print(f"  {k}: {v}")
    print(f"  {'concept':<20} {'class':<14} {'train':>5} {'eval':>5} {'boxes':>6}")
    classes = m.meta.get("classes", {})
    for name, split in m.concepts.items():
        boxes = sum(len(r.boxes_of(name)) for r in (*split.train, *split.eval))
        print(f"  {name:<20} {classes.get(name, ''):<14} {len(split.train):>5} {len(split.eval):>5} {boxes:>6}")
        if args.files:
            for part, recs in (("train", split.train), ("eval", split.eval)):
                for r in recs:
                    print(f"      {part:<5} {r.file}  {r.width}x{r.height}  label={r.label}  "
                          f"boxes={[(b.concept, [round(v, 1) for v in b.bbox]) for b in r.boxes]}")
    return 0


def cmd_prepare(args) -> int:
    from visual_words.data.stage import run

    cfg = config_from_args(args)
    run(cfg, datasets=args.datasets or None, features=False if args.no_features else None)
    return 0


def cmd_boxes(args) -> int:
    from visual_words.data import detect_boxes
    from visual_words.data.dreambooth import DETECT, HAND_CHECKED

    cfg = config_from_args(args)
    configured = cfg.prepare.dreambooth_boxes
    out = cfg.path(args.out or (HAND_CHECKED if configured == DETECT else configured))
    if args.accept:
        for key in detect_boxes.accept(out, args.accept):
            print(f"checked: {key}")
        return 0
    from visual_words.models.loading import load_model

    root = args.root or cfg.path(cfg.prepare.data_root) / "dreambooth"
    loaded = load_model(args.model or cfg.study.models["detection"], device=cfg.study.device, root=cfg.root)
    review = cfg.path(args.review_dir)
    stats = detect_boxes.run(loaded, root, out, subjects=args.subjects or None, threshold=args.threshold,
                             redo=args.redo, review_dir=review)
    print(f"[dreambooth-boxes] {stats['detected']} box(es) detected ({stats['low_score']} below {args.threshold}), "
          f"{stats['kept_checked']} already-checked kept -> {out}")
    print(f"[dreambooth-boxes] now look at the review images in {review}, fix wrong boxes in {out}, and mark each "
          "good one checked (`vw data dreambooth-boxes --accept cat2/00.jpg …`, or edit `checked`)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="datasets: fetch, check, show, prepare (manifests + feature caches), "
                       "DreamBooth boxes",
                       description="The four datasets of the study (ImageNet CLS-LOC, DreamBooth, COCO 2017, PASCAL "
                       "VOC 2012) read from their real on-disk formats, split per concept into manifests, and the "
                       "image-side feature caches.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    q = dsub.add_parser("fetch", help="download a dataset into prepare.data_root (checked), or take it from --from",
                        description="Download COCO 2017, VOC 2012 or DreamBooth from their public URLs, check their "
                        "md5 / sha256 and unpack them into prepare.data_root/<dataset>. Without internet access, "
                        "download the archives elsewhere and use --from FOLDER (archives or an unpacked copy). "
                        "ImageNet is never downloaded (licence): --from PATH checks your copy.")
    q.add_argument("dataset", choices=DATASETS)
    q.add_argument("--from", dest="src", metavar="PATH",
                   help="a folder with the official archives, or an unpacked copy")
    q.add_argument("--copy", action="store_true", help="copy an unpacked --from folder instead of linking it")
    q.add_argument("--force", action="store_true", help="replace what is already in prepare.data_root/<dataset>")
    q.add_argument("--timeout", type=float, default=20.0, help="network timeout in seconds (default 20)")
    add_config_args(q)
    q.set_defaults(func=cmd_fetch)

    q = dsub.add_parser("check", help="count images per concept and split, and find unreadable files",
                        description="Reads each dataset as prepare would, counts per selected concept and split the "
                        "images labelled with it (largest box) and those holding any box of it, against what "
                        "prepare asks for, and decodes the images to find missing, unreadable or truncated files. "
                        "Exit status 1 when something is wrong.")
    q.add_argument("datasets", nargs="*", metavar="DATASET", help="datasets to check (default: the study's)")
    q.add_argument("--all-images", action="store_true", help="decode every image, not only the selected concepts'")
    q.add_argument("--json", action="store_true", help="print JSON")
    add_config_args(q)
    q.set_defaults(func=cmd_check)

    q = dsub.add_parser("show", help="summarise a dataset's manifest (concepts, counts, boxes)")
    q.add_argument("dataset", choices=DATASETS)
    q.add_argument("--files", action="store_true", help="also list every image with its label and boxes")
    q.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    add_config_args(q)
    q.set_defaults(func=cmd_show)

    q = dsub.add_parser("prepare", help="the prepare stage: manifests (+ feature caches) for the study's datasets",
                        description="Reads the study's datasets (or the smoke profile's synthetic image set), splits "
                        "each concept into training and held-out images (8 + eval_per_concept; DreamBooth holds out "
                        "dreambooth_holdout per subject), checks every image, writes <manifests_dir>/<dataset>.json "
                        "and fills the feature cache for the study's models. Nothing is written if any dataset fails.")
    q.add_argument("--dataset", dest="datasets", action="append", choices=DATASETS,
                   help="only this dataset (repeatable; default: study.datasets)")
    q.add_argument("--no-features", action="store_true", help="skip filling the feature cache")
    add_config_args(q)
    q.set_defaults(func=cmd_prepare, takes_run_lock=True, loads_models=True, writes="prepare.manifests_dir")

    q = dsub.add_parser("dreambooth-boxes", help="detect DreamBooth boxes with OWL and mark them checked by hand",
                        description="Makes a hand-checked box file. Runs the detection model on every DreamBooth "
                        "photo with the subject's class as the query, writes the best box of each to the box file "
                        "unchecked, and draws review images. After looking at them, mark good boxes with --accept; "
                        "then set prepare.dreambooth_boxes to the file (instead of `detect`, which draws unchecked "
                        "boxes at prepare time). Boxes already checked for the same photo are kept.")
    q.add_argument("--root", help="DreamBooth folder (default: prepare.data_root/dreambooth)")
    q.add_argument("--out", help="box file (default: prepare.dreambooth_boxes when it names a file, else "
                   "data/dreambooth_boxes.json)")
    q.add_argument("--model", help="detector registry key (default: study.models.detection)")
    q.add_argument("--subjects", nargs="+", help="only these subjects")
    q.add_argument("--threshold", type=float, default=0.1, help="boxes scoring below this get a review note")
    q.add_argument("--redo", action="store_true", help="re-detect photos whose boxes were already checked")
    q.add_argument("--review-dir", default="artifacts/dreambooth-boxes-review", help="where review images go")
    q.add_argument("--accept", nargs="+", metavar="KEY", help="mark entries checked (cat2/00.jpg, or a subject)")
    add_config_args(q)
    q.set_defaults(func=cmd_boxes)

    p.set_defaults(func=lambda args: p.print_help() or 0)
