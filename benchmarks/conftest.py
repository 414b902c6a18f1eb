"""Benchmark helpers. Every benchmark times ours and a baseline in the same process and ends with one line
`NAME ratio=<x> …raw times…` (printed, and written to $VW_BENCH_RATIO_FILE so `vw bench NAME` prints it last)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # reuse test helpers where handy


@pytest.fixture
def report_ratio():
    def _report(name: str, ratio: float, **raw) -> str:
        parts = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in raw.items())
        line = f"{name} ratio={ratio:.4g} {parts}".strip()
        print("\n" + line)
        path = os.environ.get("VW_BENCH_RATIO_FILE")
        if path:
            Path(path).write_text(line + "\n")
        return line

    return _report
