"""The `evaluate` stage: every trained token scored in its own model and, through the maps, in the two others
(evaluate/runner.py), with per-cell statistics; in this process, or fanned out on Ray (evaluate/fanout.py)."""

from __future__ import annotations

from visual_words.evaluate.runner import run_evaluation


def run(cfg, tasks=None, limit: int | None = None, progress: bool = True, engine: str | None = None):
    """Evaluate (reusing finished rows whose keys still hold) with `engine` (default `evaluate.engine`: local or
    ray); returns the runner's result."""
    engine = engine or cfg.evaluate.engine
    if engine not in ("local", "ray"):
        raise ValueError(f"`evaluate.engine` must be local or ray; got {engine!r}")
    if engine == "ray":
        from visual_words.evaluate.fanout import run_evaluation_ray

        return run_evaluation_ray(cfg, tasks=tasks, limit=limit, progress=progress)
    return run_evaluation(cfg, tasks=tasks, limit=limit, progress=progress)
