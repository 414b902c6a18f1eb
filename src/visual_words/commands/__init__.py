"""One module per `vw` subcommand group; each defines `register(subparsers)` (discovered by commands/main.py).

Shared argument helpers live here so every stage takes --profile / --set the same way.

Layer: commands, just below the `vw` entry point (cli.py) (docs/design.md, "Layers"; `make lint` enforces it). It
may import every layer below: report, claims, analysis, evaluate, toolkit, train, transfer, plan, reuse, data,
models, eps_ball and the foundations; only cli imports it.
"""

from __future__ import annotations

import argparse


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="profile in params.yaml (default: the file's `profile` key)")
    parser.add_argument("--params", help="params file (default: params.yaml in this folder or a parent)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key, e.g. --set train.steps=5 (repeatable; values are YAML)")


def config_from_args(args: argparse.Namespace):
    from visual_words.config import load_config, parse_override
    from visual_words.models.lock import use_profile_hub_cache

    overrides = dict(parse_override(o) for o in getattr(args, "overrides", []) or [])
    cfg = load_config(profile=args.profile, params_file=args.params, overrides=overrides)
    use_profile_hub_cache(cfg)
    if getattr(args, "loads_models", False):
        # weights missing or not the locked ones: refuse now, before a Ray cluster or a data pass starts (a no-op
        # for the tiny models)
        from visual_words.models.lock_check import check_models_before_stage

        check_models_before_stage(cfg)
    if getattr(args, "tracks", False) and not getattr(args, "no_tracking", False):
        # a damaged MLflow store would fail the run's first (or, for evaluate, last) write: name it now
        from visual_words.tracking import check_store

        check_store(cfg)
    resources = getattr(args, "resources", None)
    if getattr(args, "takes_run_lock", False) and resources is not None:
        # Commands that write the study's outputs hold the run lock of those outputs until they end, so two runs
        # never train or evaluate the same trial at once (visual_words.runlock).
        from visual_words.runlock import run_lock

        resources.enter_context(run_lock(cfg, command=f"vw {args.command}"))
    if getattr(args, "writes", None):
        # the command's output folder must be writable: say so now, not after loading models and training
        from visual_words.io import check_writable

        section, key = args.writes.split(".")
        folder = check_writable(cfg.path(getattr(getattr(cfg, section), key)), f"`{args.writes}`")
        if getattr(args, "takes_run_lock", False) and resources is not None:
            _remove_temporaries(folder)
    return cfg


def _remove_temporaries(folder) -> None:
    """A run killed with SIGKILL (or a machine that lost power) leaves its half-written temporaries; with the run
    lock held, no other run is writing any, so the next run removes them before it starts."""
    import sys

    from visual_words.io import remove_temporaries

    gone = remove_temporaries(folder)
    if gone:
        print(f"[vw] removed {len(gone)} temporary file(s) a killed run left in {folder} (e.g. {gone[0].name})",
              file=sys.stderr)
