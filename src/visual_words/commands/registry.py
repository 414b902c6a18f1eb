"""`vw models`, `vw concepts`, `vw tiny`: print the registries; build the tiny checkpoints."""

from __future__ import annotations

import json

from visual_words import registry
from visual_words.commands import add_config_args


def cmd_models(args) -> int:
    rows = [vars(e) | {"key": k} for k, e in registry.models().items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'key':<16} {'role':<15} {'family':<17} {'width':>5} {'layers':>6} {'ctx':>4} {'img':>4}  id @ revision")
    for r in rows:
        print(f"{r['key']:<16} {r['role']:<15} {r['family']:<17} {r['text_width']:>5} {r['text_layers']:>6} "
              f"{r['context_length']:>4} {r['image_size']:>4}  {r['id']} @ {r['revision']}")
    return 0


def cmd_concepts(args) -> int:
    datasets = [args.dataset] if args.dataset else list(registry.datasets())
    if args.json:
        print(json.dumps({d: [vars(c) for c in registry.concepts(d)] for d in datasets}, indent=2))
        return 0
    for d in datasets:
        print(f"{d}:")
        for c in registry.concepts(d):
            note = "" if c.anchor == c.name else f"   (anchor re-chosen: `{c.name}` is not one token)" \
                if " " in c.name or c.anchor not in c.name else ""
            print(f"  {c.index:>2}  {c.name:<20} anchor={c.anchor:<12} class={c.cls}{note}")
    return 0


def cmd_tiny(args) -> int:
    from visual_words.models.loading import local_path
    from visual_words.models.tiny import build_tiny, ensure_tiny

    keys = args.keys or [k for k, e in registry.models().items() if e.tiny is not None]
    for key in keys:
        entry = registry.model(key)
        path = build_tiny(entry, local_path(entry)) if args.force else ensure_tiny(entry)
        print(f"{key}: {path}")
    return 0


def cmd_rehearsal_models(args) -> int:
    import time

    from visual_words.commands import config_from_args
    from visual_words.models.full_size import build_hub_cache
    from visual_words.models.lock import config_lock_path, hub_repo_id

    cfg = config_from_args(args)
    if not cfg.study.hub_cache:
        raise ValueError(f"profile `{cfg.profile}` sets no study.hub_cache: the full-size stand-ins are only ever "
                         "written into a profile's own hub cache (the rehearsal profile's), never into yours")
    keys = [k for k in dict.fromkeys(cfg.study.models.values()) if hub_repo_id(registry.model(k)) is not None]
    cache = cfg.path(cfg.study.hub_cache)
    t0 = time.perf_counter()
    build_hub_cache(keys, cache, config_lock_path(cfg), force=args.force)
    print(f"[rehearsal-models] {len(keys)} full-size random-weight checkpoints ready in {cache} "
          f"({time.perf_counter() - t0:.0f} s); lock: {config_lock_path(cfg)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model registry (checkpoints, families, widths, hub ids)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("concepts", help="list the 40 concepts and their anchor words")
    p.add_argument("dataset", nargs="?", help="only this dataset (imagenet, dreambooth, coco, pascal)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_concepts)
    p = sub.add_parser("tiny", help="build the tiny random-weight checkpoints (smoke profile, tests)")
    p.add_argument("keys", nargs="*", help="registry keys (default: every tiny entry)")
    p.add_argument("--force", action="store_true", help="rebuild even if a complete checkpoint exists")
    p.set_defaults(func=cmd_tiny)
    p = sub.add_parser(
        "rehearsal-models", help="build full-size random-weight stand-ins of the paper's checkpoints (rehearsal)",
        description="Builds the profile's hub models (default profile: rehearsal) at full size from their public "
        "configs with seeded random weights, and writes them into the profile's own hub cache (study.hub_cache) at "
        "the registry's repo ids and revisions, with a model lock: the layout `vw bake-models` leaves, so the real "
        "loaders, the lock check and the paper code paths run on them. About 9 GB; complete builds are reused.")
    add_config_args(p)
    p.set_defaults(profile="rehearsal")
    p.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    p.set_defaults(func=cmd_rehearsal_models)
