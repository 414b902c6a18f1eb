"""The `maps` stage: fit the transfer maps between the study's three task models, write them with provenance;
and `map_between`, which gives any other pair of checkpoints a map too (fitted on demand)."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

from visual_words.io import atomic_path
from visual_words.provenance import write_provenance
from visual_words.transfer.estimators import LinearMap
from visual_words.transfer.files import MapFileError, check_tables, load_map, map_path, save_map
from visual_words.transfer.fitting import fit_pairs, table_of

TASK_ROLES = ("generation", "detection", "classification")  # the models the study's tokens are trained in
QUALITY_FILE = "quality.csv"


def study_model_keys(cfg) -> list[str]:
    """The registry keys of the three task models (their order: generation, detection, classification)."""
    return [cfg.study.models[r] for r in TASK_ROLES]


def _load(key: str, cfg):
    """A model loaded as the train stage loads it (study.device, train.precision): its table is then exactly the
    one the tokens are trained in (fp16 rounding on a GPU included), so the hashes in the map's sidecar match the
    embeddings' ``token_table_hash``."""
    from visual_words.models.loading import load_model

    return load_model(key, device=cfg.study.device, precision=cfg.train.precision, root=cfg.root)


def build_maps(cfg, model_keys: list[str] | None = None, progress: bool = True) -> dict[tuple[str, str], Path]:
    """Fit all ordered pairs among ``model_keys`` (default: the study's task models) with ``cfg.maps`` settings;
    write each map + sidecar, ``quality.csv`` and ``provenance.json`` under ``maps.out_dir``. Returns the paths."""
    t0 = time.time()
    keys = list(dict.fromkeys(model_keys or study_model_keys(cfg)))
    if len(keys) < 2:
        raise ValueError(f"maps need at least two distinct models; got {keys}")
    tables = []
    for key in keys:
        loaded = _load(key, cfg)
        tables.append(table_of(loaded))
        del loaded  # only the table is needed; free the model (SD-2.1 is GBs)
    m = cfg.maps
    maps = fit_pairs(tables, estimator=m.estimator, ridge_alpha=m.ridge_alpha, holdout_fraction=m.holdout_fraction,
                     seed=m.seed, progress=progress)
    out_dir = cfg.path(m.out_dir)
    paths = {pair: save_map(map_path(cfg, *pair), lmap) for pair, lmap in maps.items()}
    _write_quality(out_dir / QUALITY_FILE, maps)
    write_provenance(out_dir, cfg, "maps", elapsed_s=round(time.time() - t0, 2))
    return paths


def _write_quality(path: Path, maps: dict[tuple[str, str], LinearMap]) -> None:
    cols = ["src_key", "dst_key", "estimator", "src_width", "dst_width", "n_fit_tokens", "n_heldout", "r2",
            "retrieval_at_1"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for (src, dst), lm in maps.items():
            q = lm.meta["quality"]
            w.writerow({"src_key": src, "dst_key": dst, "estimator": lm.estimator, "src_width": lm.d_src,
                        "dst_width": lm.d_dst, "n_fit_tokens": lm.meta["n_fit_tokens"], "n_heldout": q["n_heldout"],
                        "r2": "" if q["r2"] is None else f"{q['r2']:.6f}",
                        "retrieval_at_1": "" if q["retrieval_at_1"] is None else f"{q['retrieval_at_1']:.6f}"})


def map_between(cfg, src: Any, dst: Any, fit_missing: bool = True, cache_dir: Path | None = None) -> LinearMap:
    """The map from loaded model ``src`` to loaded model ``dst``: read from ``map_path`` when the file exists and
    was fitted on these very tables; otherwise (a checkpoint outside the study, say) fitted now with ``cfg.maps``
    settings and saved for next time: in ``cache_dir`` when given (the toolkit's user cache: ``vw transfer`` never
    writes into the DVC-tracked ``maps.out_dir``), else at ``map_path``. A damaged map file is reported and
    refitted, never used. ``fit_missing=False`` makes a missing, stale or damaged file an error."""
    ta, tb = table_of(src), table_of(dst)
    src_hash, dst_hash = ta.meta["table_hash"], tb.meta["table_hash"]
    study = map_path(cfg, src.entry.key, dst.entry.key)
    save_to = study if cache_dir is None else Path(cache_dir) / study.name
    for path in dict.fromkeys([study, save_to]):
        if not path.is_file():
            continue
        try:
            lmap = load_map(path)
        except MapFileError as e:
            if not fit_missing:
                raise
            print(f"[maps] {e}; fitting it again", file=sys.stderr, flush=True)
            continue
        if lmap.meta.get("src_table_hash") == src_hash and lmap.meta.get("dst_table_hash") == dst_hash:
            return lmap
        if not fit_missing:
            check_tables(lmap, src_hash, dst_hash, str(path))
    if not fit_missing:
        load_map(study)  # raises FileNotFoundError naming the file and `vw maps`
    m = cfg.maps
    pair = (src.entry.key, dst.entry.key)
    lmap = fit_pairs([ta, tb], [pair], estimator=m.estimator, ridge_alpha=m.ridge_alpha,
                     holdout_fraction=m.holdout_fraction, seed=m.seed)[pair]
    save_map(save_to, lmap)
    return lmap


def summary(paths: dict[tuple[str, str], Path]) -> list[dict]:
    """One dict per written map (for printing): keys, widths, quality."""
    rows = []
    for (src, dst), p in paths.items():
        lm = load_map(p)
        rows.append({"src": src, "dst": dst, "file": str(p), "estimator": lm.estimator,
                     "shape": [lm.d_src, lm.d_dst], **lm.meta.get("quality", {})})
    return rows

