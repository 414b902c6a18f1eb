"""The `analyze` stage, part 3: generations with Stable Diffusion's text encoder truncated to its first N layers
(docs/paper.md §4.4: the paper's §5.2, Fig. 7 top): a word trained for generation from an unrelated anchor shows
the anchor's concept until late layers, and the target only when the last layers run.

Truncation keeps the encoder's own final LayerNorm (what the UNet is used to) and drops the layers after N, by
handing the encoder a shorter module list for the duration of the call; the pipeline, prompts, seeds and sampler
are the evaluation stage's own (`visual_words.evaluate.tasks.generate`).
Output: `<analyze.out_dir>/truncation/<trial slug>/depth-NN__i.png` and `truncation.csv`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TRUNCATION_FILE = "truncation.csv"


def encoder_layers(text_model):
    """The ModuleList of a transformers CLIP-style text encoder's layers (SD's text encoder, OWL's, hf CLIP's)."""
    inner = getattr(text_model, "text_model", text_model)
    enc = getattr(inner, "encoder", None)
    if enc is None or not hasattr(enc, "layers"):
        raise ValueError(f"cannot truncate a {type(text_model).__name__}: no `encoder.layers`")
    return enc


@contextlib.contextmanager
def truncated(text_model, depth: int):
    """Run `text_model` with only its first `depth` layers inside the block; the full list comes back after."""
    import torch

    enc = encoder_layers(text_model)
    full = enc.layers
    if not 1 <= depth <= len(full):
        raise ValueError(f"truncation depth {depth} outside 1..{len(full)}")
    enc.layers = torch.nn.ModuleList(list(full)[:depth])
    try:
        yield
    finally:
        enc.layers = full


def depths(num_layers: int, count: int) -> list[int]:
    """`count` depths evenly spaced from 1 to all `num_layers` layers (unique, ascending)."""
    return sorted({int(round(x)) for x in np.linspace(1, num_layers, max(1, min(count, num_layers)))})


def pick_word(cfg, trained):
    """The generation word of `analyze.truncation_word` (dataset/concept/anchor) at δ = tsne_delta, or — when that
    is "" or not trained in this profile — the first generation word whose anchor is not its own concept's."""
    from visual_words import registry

    gen = [t for t in trained if t.trial.task == "generation"]
    delta = cfg.analyze.tsne_delta
    at_delta = [t for t in gen if t.trial.delta == delta or (math.isinf(delta) and math.isinf(t.trial.delta))] or gen
    want = cfg.analyze.truncation_word
    if want:
        parts = want.split("/")
        if len(parts) != 3:
            raise ValueError(f"analyze.truncation_word must be dataset/concept/anchor; got `{want}`")
        for t in at_delta:
            if (t.trial.dataset, t.trial.concept, t.trial.anchor) == tuple(parts):
                return t
        log.warning("truncation: `%s` was not trained in this profile; picking another word", want)
    for t in at_delta:
        own = {c.name: c.anchor for c in registry.concepts(t.trial.dataset)}.get(t.trial.concept)
        if t.trial.anchor != own:
            return t
    return at_delta[0] if at_delta else None


def run_truncation(cfg, spaces, trained, progress: bool = True):
    """Generate the chosen word at each depth; write PNGs and truncation.csv. Returns the CSV path or None."""
    import pandas as pd
    import torch

    from visual_words.analysis.spaces import write_table
    from visual_words.io import atomic_path
    from visual_words.models.adapters import adapter_for
    from visual_words.models.loading import load_model

    word = pick_word(cfg, trained)
    if word is None:
        log.warning("truncation: no generation word trained; Fig. 7 generations skipped")
        return None
    try:
        from visual_words.evaluate.tasks import generate
    except ImportError as e:  # the evaluation stage's generator is what Fig. 7 must use
        log.warning("truncation: evaluation generator unavailable (%s); Fig. 7 generations skipped", e)
        return None
    loaded = load_model(spaces["generation"].key, device=cfg.study.device,
                        precision=getattr(cfg.evaluate, "precision", "auto"), root=cfg.root)
    adapter = adapter_for(loaded)
    n_layers = len(encoder_layers(adapter.text_model).layers)
    out_dir = cfg.path(cfg.analyze.out_dir) / "truncation" / word.trial.slug
    rows = []
    vectors = torch.as_tensor(word.vectors[None], dtype=torch.float32)
    it = depths(n_layers, cfg.analyze.truncation_depths)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="truncated generations", unit="depth")
    for depth in it:
        with truncated(adapter.text_model, depth):
            images = generate(cfg, adapter, vectors, [word.trial.seed])[0]
        for i, im in enumerate(images):
            path = out_dir / f"depth-{depth:02d}__{i}.png"
            with atomic_path(path, suffix=".png") as tmp:
                im.save(tmp, format="PNG")
            rows.append({"trial_id": word.trial.id, "dataset": word.trial.dataset, "concept": word.trial.concept,
                         "anchor": word.trial.anchor, "delta": word.trial.delta, "depth": depth,
                         "num_layers": n_layers, "image": i,
                         "path": str(Path("truncation") / word.trial.slug / path.name)})
    return write_table(pd.DataFrame(rows), cfg.path(cfg.analyze.out_dir) / TRUNCATION_FILE)
