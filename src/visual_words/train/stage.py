"""The `train` stage: every trial of the profile's grid, fanned out on Ray (train/sweep.py: batches of trials, one
MLflow run per trial, resumable), each batch trained by the trainer in train/loop.py."""

from __future__ import annotations

from visual_words.train.sweep import run_sweep


def run(cfg, trials=None, progress: bool = True):
    """Train the selected trials (default: the whole grid); returns the sweep's summary."""
    return run_sweep(cfg, trials, progress=progress)
