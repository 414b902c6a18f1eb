"""The `evaluate` stage: every trained token scored in its own model and, through the maps, in the two others
(evaluate/runner.py), with per-cell statistics."""

from __future__ import annotations

from visual_words.evaluate.runner import run_evaluation


def run(cfg, tasks=None, limit: int | None = None, progress: bool = True):
    """Evaluate (reusing finished rows whose keys still hold); returns the runner's result."""
    return run_evaluation(cfg, tasks=tasks, limit=limit, progress=progress)
