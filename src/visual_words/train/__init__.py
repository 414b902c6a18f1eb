"""Textual inversion in the three task models: the optimizer loop, the ε-ball, trial batching (docs/design.md §3, §4).

    from visual_words.train import train_trials
    results = train_trials(cfg, trials)   # one <train.out_dir>/<task>/<slug>.safetensors (+ sidecar) per trial

Layer: train (beside transfer and plan, which it does not import) (docs/design.md, "Layers"; `make lint` enforces
it). It may import reuse, data, models, eps_ball and the foundations; never evaluate or above.
"""

from visual_words.train.loop import TrialBatch, TrialResult, output_path, read_result, train_batch, train_trials

__all__ = ["TrialBatch", "TrialResult", "output_path", "read_result", "train_batch", "train_trials"]
