"""`vw models [check]`, `vw concepts`, `vw tiny`: print the registries, check the real checkpoints, build the tiny
ones."""

from __future__ import annotations

import json

from visual_words import registry
from visual_words.commands import add_config_args


def cmd_models(args) -> int:
    if args.action == "check":
        return cmd_models_check(args)
    if args.keys:
        raise ValueError(f"`vw models` takes no model keys (did you mean `vw models check {' '.join(args.keys)}`?)")
    rows = [vars(e) | {"key": k} for k, e in registry.models().items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'key':<16} {'role':<15} {'family':<17} {'width':>5} {'layers':>6} {'ctx':>4} {'img':>4}  id @ revision")
    for r in rows:
        print(f"{r['key']:<16} {r['role']:<15} {r['family']:<17} {r['text_width']:>5} {r['text_layers']:>6} "
              f"{r['context_length']:>4} {r['image_size']:>4}  {r['id']} @ {r['revision']}")
    return 0


def cmd_models_check(args) -> int:
    """One line per model: source, state, what was found, what to do. Exit 2 when any is missing or wrong."""
    from visual_words.models.lock_check import model_statuses

    if args.keys:
        keys = args.keys
    else:
        from visual_words.commands import config_from_args

        args.profile = args.profile or "paper"
        keys = list(config_from_args(args).study.models.values())
    statuses = model_statuses(keys, args.lock, args.cache, hashes=not args.no_hash,
                              accept_rehearsal=True if args.rehearsal else None)
    if not statuses:
        print("no real checkpoints to check (this profile uses local tiny models only)")
    for s in statuses:
        print(s.line())
    return 0 if all(s.ok for s in statuses) else 2


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
    from visual_words.models.location import local_path
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
    from visual_words.models.lock import LOCK_ENV, LOCK_NAME, REHEARSAL_ENV

    p = sub.add_parser(
        "models", help="list the model registry, or `vw models check`: are the real checkpoints here and genuine?",
        description="`vw models` lists the registry. `vw models check [KEYS]` (offline) prints one line per real "
        "checkpoint of the profile (default: paper): where it comes from (hub id @ pinned commit, or a folder or "
        "single file named in $VW_MODEL_OVERRIDES), whether every file its loader reads is in the cache as locked "
        "and matches the original publisher's sha256 (registry/pins.yaml), and what to do if not. States: OK, "
        "UNVERIFIED (present, but no published hash to compare with), REHEARSAL (a random-weight rehearsal build, "
        f"accepted only with --rehearsal or {REHEARSAL_ENV}=1), MISSING, MISMATCH. Exit 2 if any is MISSING or "
        "MISMATCH.")
    p.add_argument("action", nargs="?", choices=["list", "check"], default="list", help="list (default) or check")
    p.add_argument("keys", nargs="*", help="check: registry keys (default: the models of --profile)")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    p.add_argument("--cache", help="check: Hugging Face hub cache folder (default: HF_HUB_CACHE, else HF_HOME/hub)")
    p.add_argument("--lock", help=f"check: the model lock (default: ${LOCK_ENV}, else {LOCK_NAME} beside params.yaml)")
    p.add_argument("--no-hash", action="store_true", help="check: presence, commits and sizes only (skip sha256)")
    p.add_argument("--rehearsal", action="store_true",
                   help="check: accept a lock made by a rehearsal build (random weights), labelled REHEARSAL")
    p.add_argument("--profile", help="check: take the models of this profile (default: paper)")
    p.add_argument("--params", help="check: params file (default: params.yaml in this folder or a parent)")
    p.set_defaults(func=cmd_models, overrides=[])
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
