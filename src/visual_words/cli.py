"""The `vw` command. Thin: each subcommand lives in a module of `visual_words.commands` that defines
`register(subparsers)`; modules are discovered, so a new command needs no edit here."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from visual_words import commands

# Offline by default: the real weights are local (container bake or the user's cache), never fetched mid-run.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vw",
        description="visual-words: train visual concept tokens in SD-2.1, OWLv2 and CLIP, transfer them between "
        "models, evaluate, analyse and report (arXiv 2406.07506). Settings come from params.yaml; pick a profile "
        "with --profile and override any key with --set section.key=value.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from visual_words.config import ConfigError
    from visual_words.embeddings import EmbeddingFileError
    from visual_words.plan import PlanError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, EmbeddingFileError, PlanError, FileNotFoundError, KeyError, ValueError) as e:
        # Expected failures (bad input, bad config) get one clear line and a non-zero exit, not a traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vw {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
