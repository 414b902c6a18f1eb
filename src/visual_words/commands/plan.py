"""`vw plan`: the projected GPU-hours and wall time of every stage of a profile, before anything runs."""

from __future__ import annotations

import json

from visual_words.commands import add_config_args, config_from_args


def add_plan_args(p) -> None:
    """The options that price a run (shared by `vw plan`, `vw sweep` and `vw reproduce`)."""
    p.add_argument("--gpus", type=int, help="GPUs the sweep fans out over (default: this machine's count, at least 1)")
    p.add_argument("--gpu", dest="card", help="card kind, e.g. h100, h200, a100, l4 (default: this machine's, "
                   "else h100); cards without measured rates are scaled by published bf16 peak")
    p.add_argument("--rates", help="rates file (default: $VW_RATES, else src/visual_words/registry/rates.yaml)")


def project(cfg, args):
    from visual_words.plan import plan_for

    gpus = getattr(args, "gpus", None)
    if gpus is None:
        import torch

        gpus = max(1, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    return plan_for(cfg, card=getattr(args, "card", None), gpus=gpus, rates_file=getattr(args, "rates", None))


def check_budget(cfg, args, quiet: bool = False) -> int:
    """Print the projection and ask when it exceeds sweep.confirm_above_gpu_hours; 0 = go on, 2 = refused."""
    import sys

    from visual_words.plan import PlanRefused, confirm, format_plan

    plan = project(cfg, args)
    if not quiet:
        print(format_plan(plan), flush=True)
    try:
        confirm(plan, cfg.sweep.confirm_above_gpu_hours, yes=getattr(args, "yes", False))
    except PlanRefused as e:
        print(f"vw {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_plan(args) -> int:
    cfg = config_from_args(args)
    plan = project(cfg, args)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        from visual_words.plan import format_plan

        print(format_plan(plan))
        if cfg.report.claims:  # what the run will decide, and how surely, next to what it costs
            from visual_words.claims.interval import format_planned, planned
            from visual_words.claims.simulate import DRAWS, RESAMPLES, calibrate, format_table

            print(format_planned(planned(cfg)), flush=True)
            # at the targets' ρ only (about 15 s); `vw claims simulate` prints ρ = 0, 0.3 and 0.6
            print(format_table(calibrate(cfg, rhos=(0.3,), progress=True), cfg.profile, DRAWS, RESAMPLES))
    return 0


def register(sub) -> None:
    p = sub.add_parser("plan", help="projected GPU-hours and wall time of every stage of a profile",
                       description="Counts each stage's work from the profile (trial grid, steps, images) and prices "
                       "it with measured per-step and per-image rates of the card (registry/rates.yaml, written by "
                       "the full-size benchmarks); each row says whether its rate was measured on that card, scaled "
                       "from another by published bf16 peak, or estimated.")
    add_config_args(p)
    add_plan_args(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)
