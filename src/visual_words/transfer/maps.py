"""Transfer maps between loaded models: the study's task models, how the maps stage loads them, `map_between`
(a map for any pair of checkpoints, read when its file is current, fitted on demand otherwise) and a printable
summary. The `maps` stage itself is transfer/stage.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from visual_words.models.token_table import TokenTable
from visual_words.reuse import map_key
from visual_words.tasks import TASKS
from visual_words.transfer.estimators import LinearMap
from visual_words.transfer.files import MapFileError, check_tables, load_map, map_path, save_map
from visual_words.transfer.fitting import fit_pairs

QUALITY_FILE = "quality.csv"


def study_model_keys(cfg) -> list[str]:
    """The registry keys of the three task models (their order: generation, detection, classification)."""
    return [cfg.study.models[r] for r in TASKS]  # the models the study's tokens are trained in


def load_for_maps(key: str, cfg):
    """A model loaded as the train stage loads it (study.device, train.precision): the map is fitted on the table
    the tokens are trained in. Its sidecar records the table identities (models/table_identity.py), which do not
    depend on that precision."""
    from visual_words.models.loading import load_model

    return load_model(key, device=cfg.study.device, precision=cfg.train.precision, root=cfg.root)


def map_between(cfg, src: Any, dst: Any, fit_missing: bool = True, cache_dir: Path | None = None) -> LinearMap:
    """The map from loaded model ``src`` to loaded model ``dst``: read from ``map_path`` when the file exists and
    its reuse key (``reuse.map_key``: these very tables, the `maps` settings, the estimators' code version) is the
    current one; otherwise (a checkpoint outside the study, say) fitted now with ``cfg.maps`` settings and saved
    for next time: in ``cache_dir`` when given (the toolkit's user cache: ``vw transfer`` never writes into the
    DVC-tracked ``maps.out_dir``), else at ``map_path``. A damaged map file is reported and refitted, never used.
    ``fit_missing=False`` makes a missing, stale or damaged file an error."""
    ta, tb = TokenTable.of(src), TokenTable.of(dst)
    src_hash, dst_hash = ta.identity, tb.identity
    key = map_key(cfg, src_hash, dst_hash)
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
        same_tables = lmap.meta.get("src_table_hash") == src_hash and lmap.meta.get("dst_table_hash") == dst_hash
        if same_tables and lmap.meta.get("reuse_key") == key:
            return lmap
        if not fit_missing:
            check_tables(lmap, src_hash, dst_hash, str(path))
            raise ValueError(f"{path}: fitted with other `maps` settings or estimator code than now (its reuse key "
                             "differs); run `vw maps` to refit it")
    if not fit_missing:
        load_map(study)  # raises FileNotFoundError naming the file and `vw maps`
    m = cfg.maps
    pair = (src.entry.key, dst.entry.key)
    lmap = fit_pairs([ta, tb], [pair], estimator=m.estimator, ridge_alpha=m.ridge_alpha,
                     holdout_fraction=m.holdout_fraction, seed=m.seed)[pair]
    lmap.meta["reuse_key"] = key
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

