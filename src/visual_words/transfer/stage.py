"""The `maps` stage: fit the transfer maps between the study's three task models (or the given models) and write
each map + sidecar, `quality.csv` and `provenance.json` under `maps.out_dir`.

`quality.csv` describes every map in the folder, not only the ones fitted by this run: `vw maps --models SRC DST`
(the maps a word trained in a model outside the study needs before evaluation can read it) adds its rows beside
the study's. The rows come from the maps' own sidecars, so the file can always be rebuilt and a damaged map is
left out (with one line saying so) instead of being described."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from visual_words.io import atomic_path
from visual_words.models.token_table import TokenTable
from visual_words.provenance import write_provenance
from visual_words.reuse import map_key
from visual_words.transfer.files import SUFFIX, MapFileError, load_map, map_path, save_map
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
    _write_quality(out_dir / QUALITY_FILE)
    write_provenance(out_dir, cfg, "maps", elapsed_s=round(time.time() - t0, 2), files=[out_dir / QUALITY_FILE])
    return paths


QUALITY_COLUMNS = ["src_key", "dst_key", "estimator", "src_width", "dst_width", "n_fit_tokens", "n_heldout", "r2",
                   "retrieval_at_1"]


def _write_quality(path: Path) -> None:
    """quality.csv beside the maps: one row per readable map file in the folder, sorted by (source, target,
    estimator)."""
    maps = []
    for f in sorted(path.parent.glob(f"*{SUFFIX}")):
        try:
            maps.append(load_map(f))
        except (MapFileError, FileNotFoundError) as e:
            print(f"[maps] {e}; left out of {path.name}", file=sys.stderr, flush=True)
    maps.sort(key=lambda lm: (lm.meta.get("src_key", ""), lm.meta.get("dst_key", ""), lm.estimator))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=QUALITY_COLUMNS)
        w.writeheader()
        for lm in maps:
            q = lm.meta.get("quality", {})
            w.writerow({"src_key": lm.meta.get("src_key", ""), "dst_key": lm.meta.get("dst_key", ""),
                        "estimator": lm.estimator, "src_width": lm.d_src, "dst_width": lm.d_dst,
                        "n_fit_tokens": lm.meta.get("n_fit_tokens", ""), "n_heldout": q.get("n_heldout", ""),
                        "r2": "" if q.get("r2") is None else f"{q['r2']:.6f}",
                        "retrieval_at_1": "" if q.get("retrieval_at_1") is None else f"{q['retrieval_at_1']:.6f}"})
