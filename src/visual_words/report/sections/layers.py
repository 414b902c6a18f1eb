"""The layers section: Fig. 7 (the word generated with the text encoder cut after N layers, over t-SNE panels) and
one t-SNE figure per token table × dataset × task the words were trained for (the analysis stage's tsne.csv and
truncation.csv)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from visual_words.report import figures as F
from visual_words.report.section import Figure, Section

ID, TITLE = "layers", "Perturbations target the final layers: Fig. 7 and the appendix t-SNE figures"


def layers_section(tsne: pd.DataFrame | None, truncation: pd.DataFrame | None, analysis_dir: Path,
                   tsne_delta: float, banner: str = "") -> Section:
    """`analysis_dir`: where truncation.csv's image paths are relative to; `tsne_delta`: the δ of the words the
    t-SNE shows (analyze.tsne_delta)."""
    sec = Section(ID, TITLE,
                  "t-SNE (scikit-learn, perplexity analyze.tsne_perplexity capped below the number of points, seed "
                  "analyze.tsne_seed) of each word's end-of-text activation after layers 1, L/3, 2L/3 and L; colour "
                  "= the target concept, marker = the anchor word the vectors started from.")
    if truncation is not None and len(truncation):
        sec.figures.append(Figure(
            "fig7", "Fig. 7", "Fig. 7 - top: the word generated with Stable Diffusion's text encoder cut after N "
            "layers; bottom: t-SNE of the generation model's pooled activations for the same dataset's words.",
            partial(F.fig7, truncation, fig7_tsne_rows(tsne, truncation), analysis_dir, banner)))
    else:
        sec.skipped.append(("Fig. 7", "no truncated-encoder generations (analyze part `truncation` did not run or "
                                      "found no generation word)"))
    if tsne is None or not len(tsne):
        sec.skipped.append(("t-SNE figures", "no tsne.csv (run `vw analyze`), or fewer than 4 words per group"))
        return sec
    for (table, dataset, source), rows in tsne.groupby(["table_task", "dataset", "source_task"], sort=False):
        model = rows["table_model"].iloc[0]
        how = f"trained for {source}" + ("" if source == table else f", transferred into the {table} model")
        title = f"t-SNE - {model} ({table}) text encoder, {F.DATASET_LABEL.get(dataset, dataset)} words {how}"
        sec.figures.append(Figure(f"tsne_{table}_{dataset}_{source}", title, title + f" (δ = {tsne_delta:g}).",
                                  partial(F.tsne_figure, rows, title, banner)))
    return sec


def fig7_tsne_rows(tsne: pd.DataFrame | None, truncation: pd.DataFrame) -> pd.DataFrame | None:
    """Fig. 7's t-SNE panels: the generation model's in-domain words of the truncated word's dataset."""
    if tsne is None:
        return None
    return tsne[(tsne["table_task"] == "generation") & (tsne["source_task"] == "generation")
                & (tsne["dataset"] == truncation.iloc[0]["dataset"])]
