"""The `analyze` stage, part 2: t-SNE of the pooled (end-of-text) activations of trained words, layer by layer
(docs/paper.md §4.4: the paper's §5.2, Fig. 7 bottom, appendix Figs. 12–18).

For each task model, dataset and source of words (trained in this model, or trained in another and transferred here
by the linear map), the words at δ = `analyze.tsne_delta` are put into the model's prompt, the text tower's
end-of-text activation is read after the embedding layer and after every layer (the adapter's
`pooled_hidden_states`), and four layers are embedded in 2-D with scikit-learn's t-SNE. The paper's reading: early
layers cluster by anchor word, the last by target concept — and transferred words stay mismatched.
Output: `<analyze.out_dir>/tsne.csv` (one row per word × layer).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from visual_words.tasks import PROMPTS  # D2: the prompt a word is read in, per task model

log = logging.getLogger(__name__)

TSNE_FILE = "tsne.csv"
MIN_POINTS = 4  # t-SNE of fewer points says nothing


def layer_indices(num_hidden: int, count: int = 4) -> list[int]:
    """Which of the `num_hidden` = L + 1 hidden states (0 = the embedding layer's output) to show: the paper's
    1, L/3, 2L/3, L (12 layers: 1, 4, 8, 12; SD-2.1's 23: 1, 8, 15, 23); evenly spaced when L is too small for
    distinct values."""
    L = num_hidden - 1
    if L < 1:
        raise ValueError(f"a text tower needs at least one layer; got {num_hidden} hidden states")
    picks = sorted({1, *(max(1, round(L * i / (count - 1))) for i in range(1, count))})
    if len(picks) < min(count, L):
        picks = sorted({int(round(x)) for x in np.linspace(1, L, min(count, L))})
    return picks


def embed_2d(points: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """scikit-learn t-SNE to 2-D (PCA init, fixed seed); perplexity capped below the number of points, as t-SNE
    requires."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = points.shape[0]
    if n < MIN_POINTS:
        raise ValueError(f"t-SNE needs at least {MIN_POINTS} points; got {n}")
    perp = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    # One thread: for the few hundred points of a group, OpenMP threads only spin (measured on the 2 shared cores
    # here: 100 points took 8.2 s with 2 threads under load, 0.6 s with 1), and the result is the same.
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed,
                    learning_rate="auto").fit_transform(points.astype(np.float64)).astype(np.float32)


def pooled_layers(adapter, prompt: str, vectors, layers: list[int]) -> dict[int, np.ndarray]:
    """{layer: [K, d]} end-of-text activations of K words (vectors [K, n, d]) in `prompt`."""
    import torch

    with torch.no_grad():
        h = adapter.pooled_hidden_states([prompt], torch.as_tensor(vectors, dtype=torch.float32))  # [L+1, K, 1, d]
    return {layer: h[layer, :, 0].float().cpu().numpy() for layer in layers}


def tsne_rows(cfg, adapter, table_task: str, groups, progress: bool = False) -> list[dict]:
    """t-SNE rows for one task model. `groups`: [(dataset, source_task, [(Trial, vectors [n, d] in this model's
    space)])]."""
    ac = cfg.analyze
    rows = []
    num_hidden = None
    for dataset, source, words in groups:
        if len(words) < MIN_POINTS:
            log.info("t-SNE %s/%s/%s: %d words (< %d), skipped", table_task, dataset, source, len(words), MIN_POINTS)
            continue
        vectors = np.stack([v for _, v in words])
        if num_hidden is None:
            import torch

            with torch.no_grad():
                num_hidden = adapter.pooled_hidden_states([PROMPTS[table_task]], torch.as_tensor(vectors[:1])).shape[0]
        layers = layer_indices(num_hidden)
        acts = pooled_layers(adapter, PROMPTS[table_task], vectors, layers)
        for layer in layers:
            xy = embed_2d(acts[layer], ac.tsne_perplexity, ac.tsne_seed)
            for (trial, _), (x, y) in zip(words, xy):
                rows.append({"table_task": table_task, "table_model": adapter.entry.key, "dataset": dataset,
                             "source_task": source, "transferred": source != table_task, "layer": layer,
                             "num_layers": num_hidden - 1, "trial_id": trial.id, "concept": trial.concept,
                             "anchor": trial.anchor, "delta": trial.delta, "x": float(x), "y": float(y)})
    return rows


def run_tsne(cfg, spaces, trained, maps, progress: bool = True, models: dict | None = None):
    """The stage part: every (task model, dataset, word source) group at δ = tsne_delta -> tsne.csv. `models`: the
    task models `load_spaces` kept (fp32, study.device), used and released here; a model not in it is loaded."""
    import pandas as pd

    from visual_words.analysis.spaces import write_table
    from visual_words.models.adapters import adapter_for
    from visual_words.models.loading import load_model

    delta = cfg.analyze.tsne_delta
    chosen = [t for t in trained if (math.isinf(delta) and math.isinf(t.trial.delta)) or t.trial.delta == delta]
    if not chosen:
        log.warning("t-SNE: no trained words at δ = %g; nothing to embed", delta)
    rows = []
    for table_task, space in spaces.items():
        groups = []
        for dataset in cfg.study.datasets:
            for source in spaces:
                if source != table_task and maps is None:
                    continue
                words = []
                for tr in chosen:
                    if tr.trial.dataset != dataset or tr.trial.task != source:
                        continue
                    v = tr.vectors if source == table_task else maps[(source, table_task)].apply(tr.vectors)
                    words.append((tr.trial, np.asarray(v, dtype=np.float32)))
                if words:
                    groups.append((dataset, source, words))
        loaded = (models or {}).pop(table_task, None)
        if not groups:
            continue
        if loaded is None:
            loaded = load_model(space.key, device=cfg.study.device, precision="fp32", root=cfg.root)
        rows += tsne_rows(cfg, adapter_for(loaded), table_task, groups, progress)
        del loaded
    df = pd.DataFrame(rows, columns=["table_task", "table_model", "dataset", "source_task", "transferred", "layer",
                                     "num_layers", "trial_id", "concept", "anchor", "delta", "x", "y"])
    return write_table(df, cfg.path(cfg.analyze.out_dir) / TSNE_FILE)
