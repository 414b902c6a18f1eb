"""`vw models`, `vw concepts`, `vw tiny`: print the registries; build the tiny checkpoints."""

from __future__ import annotations

import json

from visual_words import registry


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
