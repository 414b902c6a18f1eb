"""The `analyze` stage: ε-ball statistics, t-SNE of pooled activations and truncated-encoder generations.

`run(cfg)` reads every finished trial of the grid and writes `eps_stats.csv` (analysis/spaces.py), `tsne.csv`
(tsne.py) and the truncated-encoder generations (`truncation.csv` + PNGs, truncation.py) under `analyze.out_dir`,
with `provenance.json`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from visual_words.analysis.spaces import EPS_FILE, eps_table, find_trained, load_maps, load_spaces, write_table

log = logging.getLogger(__name__)

PARTS = ("eps", "tsne", "truncation")


def run(cfg, parts=PARTS, progress: bool = True) -> dict[str, Path | None]:
    """The stage: read every finished trial of the grid; write eps_stats.csv, tsne.csv and the truncated-encoder
    generations (truncation.csv + PNGs) under analyze.out_dir, and provenance.json. Returns the written paths."""
    from visual_words.provenance import write_provenance

    t0 = time.time()
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown analyze part `{unknown[0]}` (known: {', '.join(PARTS)})")
    models: dict | None = {} if "tsne" in parts else None  # t-SNE runs the text towers of the models loaded here
    spaces = load_spaces(cfg, keep=models)
    trained, missing = find_trained(cfg, spaces)
    if not trained:
        raise FileNotFoundError(f"no trained embeddings under {cfg.path(cfg.train.out_dir)} for profile "
                                f"`{cfg.profile}` (run `vw train` first)")
    if missing:
        log.warning("analyze: %d trials of the grid have no embedding file yet; analysing the %d that do",
                    missing, len(trained))
    maps = load_maps(cfg, spaces) if cfg.analyze.transferred else None
    out_dir = cfg.path(cfg.analyze.out_dir)
    written: dict[str, Path | None] = {}
    if "eps" in parts:
        written["eps"] = write_table(eps_table(cfg, spaces, trained, maps, progress=progress), out_dir / EPS_FILE)
    if "tsne" in parts:
        from visual_words.analysis.tsne import run_tsne

        written["tsne"] = run_tsne(cfg, spaces, trained, maps, progress=progress, models=models)
    models = None  # release what t-SNE did not use before the truncated encoder loads SD again
    if "truncation" in parts:
        from visual_words.analysis.truncation import run_truncation

        written["truncation"] = run_truncation(cfg, spaces, trained, progress=progress)
    write_provenance(out_dir, cfg, "analyze", elapsed_s=round(time.time() - t0, 2), files=written.values())
    return written
