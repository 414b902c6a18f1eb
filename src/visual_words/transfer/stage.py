"""The `maps` stage: fit the transfer maps between the study's three task models (or the given models) and write
each map + sidecar, `quality.csv` and `provenance.json` under `maps.out_dir`."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from visual_words.io import atomic_path
from visual_words.models.token_table import TokenTable
from visual_words.provenance import write_provenance
from visual_words.reuse import map_key
from visual_words.transfer.estimators import LinearMap
from visual_words.transfer.files import map_path, save_map
from visual_words.transfer.fitting import fit_pairs
from visual_words.transfer.maps import QUALITY_FILE, load_for_maps, study_model_keys


def run(cfg, model_keys: list[str] | None = None, progress: bool = True) -> dict[tuple[str, str], Path]:
    """Fit all ordered pairs among ``model_keys`` (default: the study's task models) with ``cfg.maps`` settings;
    write each map + sidecar, ``quality.csv`` and ``provenance.json`` under ``maps.out_dir``. Returns the paths."""
    t0 = time.time()
    keys = list(dict.fromkeys(model_keys or study_model_keys(cfg)))
    if len(keys) < 2:
        raise ValueError(f"maps need at least two distinct models; got {keys}")
    tables = []
    for key in keys:
        loaded = load_for_maps(key, cfg)
        tables.append(TokenTable.of(loaded))
        del loaded  # only the table is needed; free the model (SD-2.1 is GBs)
    m = cfg.maps
    maps = fit_pairs(tables, estimator=m.estimator, ridge_alpha=m.ridge_alpha, holdout_fraction=m.holdout_fraction,
                     seed=m.seed, progress=progress)
    for lmap in maps.values():
        lmap.meta["reuse_key"] = map_key(cfg, lmap.meta["src_table_hash"], lmap.meta["dst_table_hash"])
    out_dir = cfg.path(m.out_dir)
    paths = {pair: save_map(map_path(cfg, *pair), lmap) for pair, lmap in maps.items()}
    _write_quality(out_dir / QUALITY_FILE, maps)
    write_provenance(out_dir, cfg, "maps", elapsed_s=round(time.time() - t0, 2), files=[out_dir / QUALITY_FILE])
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
