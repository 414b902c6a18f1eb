"""`vw bench NAME`: run one benchmark (a pytest-benchmark file under benchmarks/) and end with its ratio line."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def benchmarks_dir() -> Path:
    from visual_words.models.location import repo_root

    return repo_root() / "benchmarks"


def available() -> dict[str, Path]:
    d = benchmarks_dir()
    return {p.stem[len("bench_"):].replace("_", "-"): p for p in sorted(d.glob("bench_*.py"))} if d.is_dir() else {}


def cmd_bench(args) -> int:
    benches = available()
    if args.list or not args.name:
        print("benchmarks:", ", ".join(benches) or f"none found in {benchmarks_dir()}")
        return 0
    if args.name not in benches:
        raise KeyError(f"unknown benchmark `{args.name}` (available: {', '.join(benches)})")
    with tempfile.TemporaryDirectory() as tmp:
        ratio_file = Path(tmp) / "ratio.txt"
        env = dict(os.environ, VW_BENCH_RATIO_FILE=str(ratio_file))
        cmd = [sys.executable, "-m", "pytest", str(benches[args.name]), "-s", "-q", "-p", "no:cacheprovider",
               "--benchmark-only", *args.pytest_args]
        rc = subprocess.call(cmd, env=env, cwd=benchmarks_dir().parent)
        if ratio_file.exists():
            print(ratio_file.read_text().strip())  # the benchmark's `NAME ratio=…` line, last
        return rc


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark; the last line is `NAME ratio=…`",
                       description="Runs benchmarks/bench_NAME.py with pytest-benchmark. Each benchmark times ours "
                       "against a baseline in the same process and ends with `NAME ratio=<x> …raw times…`.")
    p.add_argument("name", nargs="?", help="benchmark name (see --list)")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    p.set_defaults(func=cmd_bench)
