"""The `vw` command's parser and `main`. Thin: each subcommand lives in a module of `visual_words.commands` that
defines `register(subparsers)`; modules are discovered, so a new command needs no edit here. (visual_words.cli, the
installed entry point, only calls this `main`.)"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import signal
import sys
import threading

from visual_words import commands

# Offline by default: the real weights are local (container bake or the user's cache), never fetched mid-run.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
if not os.environ.get("RAY_ADDRESS"):
    # A local Ray cluster listens on the loopback interface only (see ray_tasks.start_ray for why this variable).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


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


class Terminated(BaseException):
    """SIGTERM (`kill`, a scheduler's stop, `docker stop`), raised where the command is, like Ctrl-C: every
    `finally` runs on the way out, so temporaries are removed, the run lock released and child servers stopped.
    Python's default for SIGTERM ends the process at once and runs none of them."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises():
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from visual_words.errors import report

    try:
        # Stage commands take the run lock when they have read their config (commands.config_from_args); it is
        # released when the command ends, however it ends.
        with sigterm_raises(), contextlib.ExitStack() as args.resources:
            return int(args.func(args) or 0)
    except (KeyboardInterrupt, Terminated, SystemExit) as e:
        # ray.init installs its own SIGTERM handler, sys.exit(SIGTERM): the same unwinding, the same line
        terminated = isinstance(e, Terminated) or (isinstance(e, SystemExit) and e.code == signal.SIGTERM)
        if os.environ.get("VW_DEBUG", "") not in ("", "0") or (isinstance(e, SystemExit) and not terminated):
            raise
        what, code = ("terminated", 128 + signal.SIGTERM) if terminated else ("interrupted", 130)
        if getattr(args, "takes_run_lock", False):  # a stage: its finished outputs stay, a re-run goes on from them
            what += "; re-run to resume (finished outputs are kept)"
        print(f"vw {args.command}: {what}", file=sys.stderr)
        return code
    except Exception as e:  # noqa: BLE001 - one home for expected failures: one line, exit 2 (bugs re-raise)
        return report(e, args.command)


if __name__ == "__main__":
    sys.exit(main())
