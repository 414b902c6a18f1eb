"""The analysis's tables: the study's token tables as query spaces, the trained words, and their ε-ball statistics.

The `analyze` stage (analysis/stage.py) runs these; t-SNE (tsne.py), the truncated encoder (truncation.py) and the
report read the same spaces and tables from here. ε-ball statistics of every trained vector, in-domain and
transferred:

For each trained embedding file and each of its n vectors, one row per *space* (token table) the vector is looked
at in: its own model's table (in-domain) and, with `analyze.transferred`, the other two task models' tables after the
linear transfer map (`vw maps`). A space is the model's `TokenTable` (models/token_table.py); all queries that land
in one table are computed in one `TokenTable.ball` call. Output: `<analyze.out_dir>/eps_stats.csv` (tidy: one row per
vector × space) and `provenance.json`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visual_words.embeddings import EmbeddingFileError
from visual_words.models.token_table import TokenTable
from visual_words.trained import grid_words
from visual_words.trials import TASKS, Trial

log = logging.getLogger(__name__)

EPS_FILE = "eps_stats.csv"
COLUMNS = [
    "trial_id", "dataset", "concept", "anchor", "delta", "trained_task", "trained_model", "vector", "table_task",
    "table_model", "transferred", "anchor_id", "d_nn", "dist_anchor", "rel_dist", "cos_anchor", "anchor_rank",
    "nearest_is_anchor", "nearest_id", "nearest_token", "nearest_dist", "nearest_rel", "n_in_ball",
]  # + n_within_<f>dnn per analyze.ball_factors, + nearest_tokens / nearest_dists (k nearest, "|"-joined)


def load_spaces(cfg, tasks=TASKS, keep: dict | None = None) -> dict[str, TokenTable]:
    """The token tables of the study's task models, by task. Each model is loaded once, at fp32. With `keep` (a dict)
    the loaded models stay in it by task, on `study.device`, for the part that runs their text towers (t-SNE), which
    then loads none again; without it each model is dropped as soon as its table is copied (SD-2.1 is GBs)."""
    from visual_words.models.loading import load_model

    spaces = {}
    for task in tasks:
        device = cfg.study.device if keep is not None else "cpu"
        loaded = load_model(cfg.study.models[task], device=device, precision="fp32", root=cfg.root)
        spaces[task] = TokenTable.of(loaded)
        if keep is not None:
            keep[task] = loaded
        del loaded
    return spaces


@dataclass
class Trained:
    trial: Trial
    path: Path
    vectors: np.ndarray  # [n, d] float32
    anchor_id: int


def find_trained(cfg, spaces: dict[str, TokenTable]) -> tuple[list[Trained], int]:
    """The trial grid's finished embedding files (trained.grid_words: files outside the grid are skipped with one
    line), checked against their model's table; (found, missing count)."""
    found = []
    words, missing = grid_words(cfg, "analyze")
    for word in words:
        trial, path = word.trial, word.path
        space = spaces[trial.task]
        if word.table_hash != space.identity:
            raise EmbeddingFileError(f"{path}: trained on a token table with hash {word.table_hash}, but model "
                                     f"`{space.key}` now has {space.identity} (the checkpoint changed); retrain or "
                                     "restore it")
        if word.vectors.shape[1] != space.width:
            raise EmbeddingFileError(f"{path}: vectors of width {word.vectors.shape[1]}, model `{space.key}` has "
                                     f"width {space.width}")
        anchor_id = word.meta.get("anchor_id")
        if anchor_id is None:
            anchor_id = _anchor_id(space, trial.anchor, path)
        found.append(Trained(trial, path, word.vectors.numpy().astype(np.float32), int(anchor_id)))
    return found, missing


def _anchor_id(space: TokenTable, word: str, where: Any) -> int:
    found = space.token_id(word)
    if found is not None:
        return found
    raise ValueError(f"{where}: anchor `{word}` is not a single token of model `{space.key}`")


def load_maps(cfg, spaces: dict[str, TokenTable]) -> dict[tuple[str, str], Any]:
    """The transfer map between every ordered pair of task models, checked against the tables at hand."""
    from visual_words.transfer import check_tables, load_map, map_path

    maps = {}
    for src_task, src in spaces.items():
        for dst_task, dst in spaces.items():
            if src_task == dst_task:
                continue
            path = map_path(cfg, src.key, dst.key)
            lmap = load_map(path)  # FileNotFoundError names the file and `vw maps`
            check_tables(lmap, src.identity, dst.identity, str(path))
            maps[(src_task, dst_task)] = lmap
    return maps


def eps_table(cfg, spaces: dict[str, TokenTable], trained: list[Trained], maps: dict | None, progress: bool = False):
    """The tidy ε-ball table (a pandas DataFrame, COLUMNS + counts + nearest lists) for the given vectors."""
    import pandas as pd

    ac = cfg.analyze
    frames = []
    for table_task, space in spaces.items():
        queries, meta = [], []
        for tr in trained:
            if tr.trial.task == table_task:
                vecs, transferred = tr.vectors, False
                anchor = tr.anchor_id
            elif maps is not None:
                vecs = maps[(tr.trial.task, table_task)].apply(tr.vectors).astype(np.float32)
                transferred = True
                anchor = _anchor_id(space, tr.trial.anchor, tr.path)
            else:
                continue
            for v in range(vecs.shape[0]):
                queries.append(vecs[v])
                meta.append((tr, v, transferred, anchor))
        if not queries:
            continue
        anchors = np.array([m[3] for m in meta], dtype=np.int64)
        uniq, inverse = np.unique(anchors, return_inverse=True)
        d_nn = space.d_nn(uniq)[inverse]
        deltas = np.array([m[0].trial.delta for m in meta], dtype=np.float64)
        radii = np.column_stack([np.where(np.isinf(deltas), np.inf, deltas * d_nn)]
                                + [f * d_nn for f in ac.ball_factors])
        k = min(ac.nearest_k, len(space))
        st = space.ball(np.stack(queries), anchors, radii, k=k, block_size=ac.block_size, progress=progress)
        rows = {
            "trial_id": [m[0].trial.id for m in meta],
            "dataset": [m[0].trial.dataset for m in meta],
            "concept": [m[0].trial.concept for m in meta],
            "anchor": [m[0].trial.anchor for m in meta],
            "delta": deltas,
            "trained_task": [m[0].trial.task for m in meta],
            "trained_model": [m[0].trial.model for m in meta],
            "vector": [m[1] for m in meta],
            "table_task": table_task,
            "table_model": space.key,
            "transferred": [m[2] for m in meta],
            "anchor_id": anchors,
            "d_nn": d_nn,
            "dist_anchor": st["dist_anchor"],
            "rel_dist": st["dist_anchor"] / d_nn,
            "cos_anchor": st["cos_anchor"],
            "anchor_rank": st["anchor_rank"],
            "nearest_is_anchor": st["nearest_is_anchor"],
            "nearest_id": st["nearest_ids"][:, 0],
            "nearest_token": [space.name(i) for i in st["nearest_ids"][:, 0]],
            "nearest_dist": st["nearest_dists"][:, 0],
            "nearest_rel": st["nearest_dists"][:, 0] / d_nn,
            # tokens inside the vector's own δ-ball (radius δ·d_nn around it); undefined for δ = ∞
            "n_in_ball": np.where(np.isinf(deltas), np.nan, st["counts"][:, 0]),
        }
        for j, f in enumerate(ac.ball_factors):
            rows[f"n_within_{f:g}dnn"] = st["counts"][:, 1 + j]
        rows["nearest_tokens"] = ["|".join(space.name(i) for i in ids) for ids in st["nearest_ids"]]
        rows["nearest_dists"] = ["|".join(f"{x:.6g}" for x in ds) for ds in st["nearest_dists"]]
        frames.append(pd.DataFrame(rows))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)


def write_table(df, path: Path) -> Path:
    from visual_words.io import atomic_path

    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.9g")
    return path


def summary(df) -> "Any":
    """Per (trained task, table task, δ): vectors, median ‖v−a‖/d_nn, share whose nearest token is the anchor,
    median anchor rank — the numbers the report quotes."""
    g = df.groupby(["trained_task", "table_task", "delta"], sort=True)
    out = g.agg(vectors=("rel_dist", "size"), rel_dist_median=("rel_dist", "median"),
                nearest_is_anchor=("nearest_is_anchor", "mean"), anchor_rank_median=("anchor_rank", "median"),
                cos_anchor_median=("cos_anchor", "median")).reset_index()
    out["delta"] = [("inf" if math.isinf(d) else d) for d in out["delta"]]
    return out
