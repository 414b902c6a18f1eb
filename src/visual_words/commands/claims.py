"""`vw claims simulate`: how often the verdict of each claim is right at a profile's design, computed by simulating
whole studies (visual_words.claims.simulate)."""

from __future__ import annotations

import json
import sys

from visual_words.commands import add_config_args, config_from_args


def cmd_simulate(args) -> int:
    from visual_words.claims.simulate import RHOS, calibrate, format_table

    if args.draws < 10 or args.resamples < 20:
        print("vw claims simulate: --draws must be >= 10 and --resamples >= 20", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    cal = calibrate(cfg, RHOS, args.draws, args.resamples, args.seed, progress=not args.json)
    if args.json:
        print(json.dumps({"profile": cfg.profile, "draws": args.draws, "resamples": args.resamples,
                          "seed": args.seed, "calibration": [c.to_dict() for c in cal]}, indent=2))
    else:
        print(format_table(cal, cfg.profile, args.draws, args.resamples))
    return 0


def register(sub) -> None:
    from visual_words.claims.simulate import DRAWS, RESAMPLES

    p = sub.add_parser("claims", help="the claims' verdicts: calibration by simulation",
                       description="Commands about the verdicts on the paper's claims (src/visual_words/claims/).")
    csub = p.add_subparsers(dest="claims_command", required=True)
    s = csub.add_parser(
        "simulate", help="P(supported|true), P(contradicted|true), P(supported|false) per claim, by simulation",
        description="Draws whole studies of the profile's design from a hierarchical model (a concept effect plus "
        "anchor noise; within-concept correlation 0, 0.3 and 0.6; per-word binomial noise for accuracies, Beta for "
        "AP) with the paper's values true, and for each claim with its cells moved to the alternative written in "
        "claims/claims.yaml; runs the real verdict code (the structured bootstrap) on each, and prints per claim "
        "P(supported | true), P(contradicted | true) and P(supported | false). Targets at correlation 0.3: >= 0.9 "
        "and <= 0.05.")
    add_config_args(s)
    s.add_argument("--json", action="store_true", help="print the table as JSON (no progress bar)")
    s.add_argument("--draws", type=int, default=DRAWS, help=f"simulated studies per scenario (default {DRAWS})")
    s.add_argument("--resamples", type=int, default=RESAMPLES,
                   help=f"bootstrap resamples per simulated study (default {RESAMPLES}; a real run uses "
                   "evaluate.bootstrap_resamples)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.set_defaults(func=cmd_simulate)
