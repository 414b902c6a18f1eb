"""`vw versions`: the versions of the result-defining code (code_versions.yaml) and which changed unrecorded."""

from __future__ import annotations


def cmd_versions(args) -> int:
    from visual_words import code_versions

    if args.record:
        for line in code_versions.record(args.record, bump=args.bump):
            print(f"[versions] {line}")
        return 0
    stale = {name: now for name, _, now in code_versions.stale_pieces()}
    pieces = code_versions._versions_file()
    for name, p in sorted(pieces.items()):
        state = f"CHANGED (now {stale[name]})" if name in stale else "recorded"
        print(f"{name:<28} v{p['version']:<3} {state:<28} -> {', '.join(p['outputs'])}")
    if stale:
        print(f"\n{len(stale)} piece(s) changed since their fingerprint was recorded. For each, decide:\n"
              "  results change:   vw versions --record PIECE --bump   (its outputs are redone)\n"
              "  results the same: vw versions --record PIECE          (finished outputs stay reused)")
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("versions", help="versions of the result-defining code; record a change (bump or refactor)")
    p.add_argument("--record", nargs="+", metavar="PIECE", help="record the current fingerprint of these pieces")
    p.add_argument("--bump", action="store_true", help="with --record: the change alters results, bump the version")
    p.set_defaults(func=cmd_versions)
