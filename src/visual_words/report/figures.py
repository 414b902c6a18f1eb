"""The paper's figures, regenerated with matplotlib (Agg: no display needed). Each function returns a Figure;
`save` writes it in every format of `report.formats`. With a banner (smoke runs) the suptitle's first line is it.

    fig3(cells, paper)           3 × datasets bars: metric per trained-for task, 95 % CI, paper's value as ◆
    fig6(cells, paper)           3 × datasets lines: metric vs δ, CI band, paper's values dashed
    comparison_scatter(comp)     ours vs paper per cell, CIs both ways, flagged cells ringed in red
    eps_figure(eps)              where the words land: ‖v−a‖/d_nn, nearest-is-anchor share, anchor rank, cosine
    tsne_figure(rows)            t-SNE at four layers, coloured by target concept, marker by anchor word
    image_grid(rows)             a labelled grid of images (Fig. 4, Fig. 5-style, appendix 10 × 10)
    fig7(truncation, tsne)       truncated-encoder generations over t-SNE panels
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from visual_words.tasks import TASKS, task  # noqa: E402

DATASET_LABEL = {"imagenet": "ImageNet", "dreambooth": "DreamBooth", "coco": "COCO", "pascal": "PASCAL"}
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def _title(fig, banner: str, title: str) -> float:
    """Suptitle: the banner first (wrapped to the figure's width), then the title. Returns the top of the free
    area in figure coordinates, for tight_layout's rect."""
    import textwrap

    width = max(30, int(fig.get_figwidth() * 12))
    lines = (textwrap.wrap(banner, width) if banner else []) + textwrap.wrap(title, width)
    fig.suptitle("\n".join(lines), fontsize=9, y=0.995, va="top")
    return 1.0  # tight_layout itself makes room for the suptitle (matplotlib ≥ 3.3)


def _datasets(df: pd.DataFrame, datasets: Sequence[str] | None) -> list[str]:
    if datasets:
        return list(datasets)
    seen = list(dict.fromkeys(df["dataset"]))
    return [d for d in DATASET_LABEL if d in seen] + [d for d in seen if d not in DATASET_LABEL]


def _is_inf(series) -> np.ndarray:
    return np.array([math.isinf(float(d)) for d in series], dtype=bool)


def fig3(cells: pd.DataFrame, paper: pd.DataFrame | None = None, datasets: Sequence[str] | None = None,
         banner: str = "") -> plt.Figure:
    """Fig. 3: unconstrained words (δ = ∞). Rows: the evaluated metric; columns: datasets; one bar per task the
    word was trained for, with its 95 % CI; the paper's value (and CI) as a black diamond where it has one."""
    cols = _datasets(cells, datasets)
    cells = cells[_is_inf(cells["delta"])]
    pap = paper[_is_inf(paper["delta"])] if paper is not None else None
    fig, axes = plt.subplots(3, len(cols), figsize=(3.4 * len(cols), 7.2), squeeze=False, sharex=True)
    for r, ev in enumerate(TASKS):
        for c, ds in enumerate(cols):
            ax = axes[r, c]
            for y, tr in enumerate(TASKS):
                row = cells[(cells["eval_task"] == ev) & (cells["trained_task"] == tr) & (cells["dataset"] == ds)]
                if len(row):
                    m, lo, hi = (float(row.iloc[0][k]) for k in ("mean", "ci_low", "ci_high"))
                    err = None if math.isnan(lo) else [[max(0.0, m - lo)], [max(0.0, hi - m)]]
                    ax.barh(y, m, color=task(tr).colour, xerr=err, capsize=3, height=0.7,
                            label=task(tr).label if (r, c) == (0, 0) else None)
                if pap is not None:
                    p = pap[(pap["eval_task"] == ev) & (pap["trained_task"] == tr) & (pap["dataset"] == ds)]
                    if len(p):
                        v, lo, hi = (float(p.iloc[0][k]) for k in ("paper", "paper_ci_low", "paper_ci_high"))
                        if not math.isnan(lo):
                            ax.plot([lo, hi], [y, y], color="black", lw=1)
                        ax.plot(v, y, "D", color="black", ms=4, label="paper" if (r, c) == (0, 0) and y == 0 else None)
            ax.set_yticks(range(3), ["Gen.", "Det.", "Cls."])
            ax.invert_yaxis()
            ax.set_xlim(0, 1.05)
            if r == 0:
                ax.set_title(DATASET_LABEL.get(ds, ds))
            if c == 0:
                ax.set_ylabel(task(ev).metric_label)
    axes[0, 0].legend(fontsize=7, loc="lower right", title="trained for", title_fontsize=7)
    top = _title(fig, banner, "Fig. 3 - unconstrained words, in-domain and transferred (95 % CI)")
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def fig6(cells: pd.DataFrame, paper: pd.DataFrame | None = None, datasets: Sequence[str] | None = None,
         banner: str = "") -> plt.Figure:
    """Fig. 6: words constrained to the ε-ball. Metric vs δ, one line per trained-for task, 95 % CI band; the
    paper's values dashed."""
    cols = _datasets(cells, datasets)
    cells = cells[~_is_inf(cells["delta"])]
    pap = paper[~_is_inf(paper["delta"])] if paper is not None else None
    fig, axes = plt.subplots(3, len(cols), figsize=(3.4 * len(cols), 7.2), squeeze=False, sharex=True, sharey=True)
    for r, ev in enumerate(TASKS):
        for c, ds in enumerate(cols):
            ax = axes[r, c]
            for tr in TASKS:
                sel = cells[(cells["eval_task"] == ev) & (cells["trained_task"] == tr) & (cells["dataset"] == ds)]
                sel = sel.sort_values("delta")
                if len(sel):
                    x = sel["delta"].astype(float).to_numpy()
                    m = sel["mean"].astype(float).to_numpy()
                    err = np.nan_to_num(np.array([m - sel["ci_low"].astype(float), sel["ci_high"].astype(float) - m])
                                        ).clip(min=0)
                    ax.errorbar(x, m, yerr=err, fmt="-o", color=task(tr).colour, ms=3, capsize=2, elinewidth=0.8,
                                label=task(tr).label if (r, c) == (0, 0) else None)
                    ax.fill_between(x, sel["ci_low"].astype(float), sel["ci_high"].astype(float),
                                    color=task(tr).colour, alpha=0.2, lw=0)
                if pap is not None:
                    p = pap[(pap["eval_task"] == ev) & (pap["trained_task"] == tr) & (pap["dataset"] == ds)]
                    if len(p):
                        p = p.sort_values("delta")
                        ax.plot(p["delta"].astype(float), p["paper"], "--", color=task(tr).colour, lw=1, alpha=0.8,
                                label="paper" if (r, c) == (0, 0) and tr == "generation" else None)
            ax.set_ylim(-0.02, 1.05)
            ax.set_xticks([0.1, 0.2, 0.5, 1.0])
            if r == 0:
                ax.set_title(DATASET_LABEL.get(ds, ds))
            if c == 0:
                ax.set_ylabel(task(ev).metric_label)
            if r == 2:
                ax.set_xlabel("Distance From Initialization (δ)")
    axes[0, 0].legend(fontsize=7, loc="upper left", title="trained for", title_fontsize=7)
    top = _title(fig, banner, "Fig. 6 - words constrained to the ε-ball around their anchor (95 % CI; paper dashed)")
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def comparison_scatter(comp: pd.DataFrame, banner: str = "") -> plt.Figure:
    """Every cell this run has and the paper has: ours (y) vs paper (x), CIs as error bars; flagged cells ringed."""
    rows = comp[comp["ours"].notna() & comp["paper"].notna()]
    fig, ax = plt.subplots(figsize=(5.6, 5.6))
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls=":")
    for ev in TASKS:
        sel = rows[rows["eval_task"] == ev]
        if not len(sel):
            continue
        yerr = np.array([(sel["ours"] - sel["ours_ci_low"]).clip(lower=0),
                         (sel["ours_ci_high"] - sel["ours"]).clip(lower=0)])
        xerr = np.array([(sel["paper"] - sel["paper_ci_low"]).clip(lower=0),
                         (sel["paper_ci_high"] - sel["paper"]).clip(lower=0)])
        ax.errorbar(sel["paper"], sel["ours"], yerr=np.nan_to_num(yerr), xerr=np.nan_to_num(xerr), fmt="o", ms=4,
                    color=task(ev).colour, alpha=0.8, elinewidth=0.7, label=f"evaluated: {task(ev).metric_label}")
    flagged = rows[rows["status"].isin(["outside paper CI", "outside tolerance"])]
    if len(flagged):
        ax.scatter(flagged["paper"], flagged["ours"], s=90, facecolors="none", edgecolors="red", lw=1.2,
                   label=f"outside CI / tolerance ({len(flagged)})")
    ax.set_xlim(-0.02, 1.05)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("paper")
    ax.set_ylabel("ours")
    ax.legend(fontsize=7, loc="upper left")
    top = _title(fig, banner, f"Ours vs the paper, {len(rows)} cells (Fig. 3 and Fig. 6)")
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def delta_label(d: float) -> str:
    """δ as the figures and their labels show it (∞ for unconstrained words)."""
    return "∞" if math.isinf(d) else f"{d:g}"


def _paired_boxplots(ax, own, moved, deltas, values) -> None:
    """Side-by-side boxes per δ: in-domain vectors (grey) and their transferred images (purple)."""
    for i, part in enumerate((own, moved)):
        data = [values(part[part["delta"] == d]) for d in deltas]
        ok = [k for k, x in enumerate(data) if len(x)]
        if ok:
            b = ax.boxplot([data[k] for k in ok], positions=np.arange(len(deltas))[ok] + (i - 0.5) * 0.38,
                           widths=0.3, patch_artist=True, showfliers=False)
            for patch in b["boxes"]:
                patch.set_facecolor(("tab:gray", "tab:purple")[i])
                patch.set_alpha(0.6)


def eps_figure(eps: pd.DataFrame, banner: str = "") -> plt.Figure:
    """Where the words land (docs/paper.md §4): in-domain distance to the anchor in units of d_nn; the share whose
    nearest token is the anchor, in-domain and after transfer; the anchor's rank; cosine to the anchor."""
    deltas = sorted(set(float(d) for d in eps["delta"]))
    labels = [delta_label(d) for d in deltas]
    own, moved = eps[~eps["transferred"].astype(bool)], eps[eps["transferred"].astype(bool)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))

    ax = axes[0, 0]
    for i, tr in enumerate(TASKS):
        data = [own[(own["trained_task"] == tr) & (own["delta"] == d)]["rel_dist"].to_numpy() for d in deltas]
        pos = np.arange(len(deltas)) + (i - 1) * 0.25
        ok = [k for k, x in enumerate(data) if len(x)]
        if ok:
            b = ax.boxplot([data[k] for k in ok], positions=pos[ok], widths=0.2, patch_artist=True, showfliers=False)
            for patch in b["boxes"]:
                patch.set_facecolor(task(tr).colour)
                patch.set_alpha(0.6)
        ax.plot([], [], "s", color=task(tr).colour, label=task(tr).label)
    ax.axhline(0.5, color="gray", ls=":", lw=1)
    ax.set_xticks(range(len(deltas)), labels)
    ax.set_xlabel("δ")
    ax.set_ylabel("‖v − anchor‖ / d_nn(anchor)")
    ax.set_title("in-domain distance to the anchor", fontsize=10)
    ax.legend(fontsize=7, title="trained for", title_fontsize=7)

    ax = axes[0, 1]
    width = 0.38
    for i, (name, part) in enumerate((("in-domain", own), ("transferred", moved))):
        share = [part[part["delta"] == d]["nearest_is_anchor"].astype(float).mean() if len(part) else np.nan
                 for d in deltas]
        ax.bar(np.arange(len(deltas)) + (i - 0.5) * width, np.nan_to_num(share), width,
               color=("tab:gray", "tab:purple")[i], label=name)
    ax.set_xticks(range(len(deltas)), labels)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("δ")
    ax.set_ylabel("share of vectors")
    ax.set_title("nearest vocabulary token is the anchor", fontsize=10)
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    _paired_boxplots(ax, own, moved, deltas, lambda part: np.log10(1 + part["anchor_rank"].to_numpy(dtype=float)))
    ax.set_xticks(range(len(deltas)), labels)
    ax.set_xlabel("δ")
    ax.set_ylabel("log10(1 + anchor rank)")
    ax.set_title("tokens closer than the anchor (grey in-domain, purple transferred)", fontsize=10)

    ax = axes[1, 1]
    _paired_boxplots(ax, own, moved, deltas, lambda part: part["cos_anchor"].to_numpy(dtype=float))
    ax.set_xticks(range(len(deltas)), labels)
    ax.set_xlabel("δ")
    ax.set_ylabel("cos(v, anchor)")
    ax.set_title("cosine to the anchor", fontsize=10)
    top = _title(fig, banner, f"ε-ball statistics of {len(own)} trained vectors and {len(moved)} transferred images")
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def tsne_figure(rows: pd.DataFrame, title: str, banner: str = "", axes=None) -> plt.Figure:
    """t-SNE panels (one per layer) of one group: colour = the word's target concept, marker = its anchor."""
    layers = sorted(set(int(x) for x in rows["layer"]))
    concepts = list(dict.fromkeys(rows["concept"]))
    anchors = list(dict.fromkeys(rows["anchor"]))
    cmap = plt.get_cmap("tab10")
    own_fig = axes is None
    if own_fig:
        fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.6), squeeze=False)
        axes = axes[0]
    else:
        fig = axes[0].figure
    num_layers = int(rows["num_layers"].iloc[0]) if "num_layers" in rows else None
    for ax, layer in zip(axes, layers):
        sel = rows[rows["layer"] == layer]
        for _, r in sel.iterrows():
            ax.scatter(r["x"], r["y"], s=22, color=cmap(concepts.index(r["concept"]) % 10),
                       marker=MARKERS[anchors.index(r["anchor"]) % len(MARKERS)], edgecolors="none")
        ax.set_title(f"layer {layer}" + (f" of {num_layers}" if num_layers else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(i % 10), label=c) for i, c in enumerate(concepts)]
    handles += [plt.Line2D([], [], ls="", marker=MARKERS[i % len(MARKERS)], color="gray", label=f"anchor: {a}")
                for i, a in enumerate(anchors)]
    axes[-1].legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    if own_fig:
        top = _title(fig, banner, title)
        fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def _show_image(ax, path: Path | None, label: str = "") -> None:
    from PIL import Image

    ax.set_xticks([])
    ax.set_yticks([])
    if path is not None and Path(path).is_file():
        with Image.open(path) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
    else:
        ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=7, color="gray", transform=ax.transAxes)
        ax.set_facecolor("#f4f4f4")
    if label:
        ax.set_xlabel(label, fontsize=7)


def image_grid(rows: Sequence[tuple[str, Sequence[tuple[str, Path | None]]]], title: str, banner: str = "",
               cell: float = 1.6) -> plt.Figure:
    """A grid of images: `rows` = [(row label, [(column label, path or None), …]), …]."""
    ncols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(cell * ncols + 1.2, cell * len(rows) + 0.9), squeeze=False)
    for i, (row_label, items) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            if j < len(items):
                col_label, path = items[j]
                _show_image(ax, path)
                if i == 0 or col_label != (rows[0][1][j][0] if j < len(rows[0][1]) else None):
                    ax.set_title(col_label, fontsize=7)
            else:
                ax.axis("off")
        axes[i, 0].set_ylabel(row_label, fontsize=7, rotation=0, ha="right", va="center")
    top = _title(fig, banner, title)
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def box_contact_sheet(photos: Sequence[tuple[Path, str, Sequence[dict]]], title: str, banner: str = "",
                      low_score: float = 0.1, ncols: int = 6, cell: float = 1.9) -> plt.Figure:
    """Photos with their boxes and scores, for a person to inspect: `photos` = [(path, caption, [{"bbox": [x, y, w,
    h] in the photo's pixels, "score": s}, …]), …]. A box scoring below `low_score` is drawn in orange, others in
    red; each photo is shown downscaled (JPEG draft decoding), the boxes scaled with it."""
    from matplotlib.patches import Rectangle
    from PIL import Image

    ncols = max(1, min(ncols, len(photos)))
    nrows = max(1, math.ceil(len(photos) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, caption, boxes) in zip(axes.flat, photos):
        with Image.open(path) as im:
            full = im.size
            im.draft("RGB", (256, 256))  # JPEG: decode at a fraction of the size (a 2048 px photo in milliseconds)
            thumb = im.convert("RGB")
            thumb.thumbnail((256, 256))
        scale = thumb.width / full[0]
        ax.imshow(np.asarray(thumb))
        for b in boxes:
            x, y, w, h = (v * scale for v in b["bbox"])
            score = b.get("score")
            colour = "orange" if score is not None and score < low_score else "red"
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.5))
            if score is not None:
                ax.text(x + 2, y + 2, f"{score:.2f}", color="white", fontsize=7, va="top",
                        bbox={"facecolor": colour, "edgecolor": "none", "pad": 1})
        ax.set_title(caption, fontsize=7)
    top = _title(fig, banner, title)
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def fig7(truncation: pd.DataFrame, tsne_rows: pd.DataFrame | None, root: Path, banner: str = "") -> plt.Figure:
    """Fig. 7: top, one word generated with the text encoder cut after N layers (N increasing); bottom, t-SNE of
    the generation model's pooled activations at four layers (that word's dataset, in-domain words)."""
    first = truncation[truncation["image"] == 0].sort_values("depth")
    layers = sorted(set(int(x) for x in tsne_rows["layer"])) if tsne_rows is not None and len(tsne_rows) else []
    ncols = max(len(first), len(layers), 1)
    fig = plt.figure(figsize=(2.0 * ncols + 1.5, 5.4 if layers else 2.8))
    grid = fig.add_gridspec(2 if layers else 1, 1, height_ratios=[1, 1.25] if layers else [1])
    top = grid[0].subgridspec(1, ncols)
    n_layers = int(first["num_layers"].iloc[0])
    for j, (_, r) in enumerate(first.iterrows()):
        ax = fig.add_subplot(top[0, j])
        _show_image(ax, root / r["path"])
        ax.set_title(f"{int(r['depth'])} of {n_layers} layers", fontsize=8)
    if layers:
        bottom = grid[1].subgridspec(1, len(layers))
        axes = [fig.add_subplot(bottom[0, j]) for j in range(len(layers))]
        tsne_figure(tsne_rows, "", banner, axes=axes)
    w = first.iloc[0]
    top = _title(fig, banner, f"Fig. 7 - <{w['concept']}> trained from \"{w['anchor']}\" "
                              f"(δ = {delta_label(float(w['delta']))}): "
                              "generations with the text encoder truncated, and t-SNE of pooled activations")
    fig.tight_layout(rect=(0, 0, 0.93, top))
    return fig


def save(fig: plt.Figure, out_dir: Path, name: str, formats: Sequence[str], dpi: int) -> list[Path]:
    """Write `fig` as <out_dir>/<name>.<fmt> for each format, atomically; close it."""
    from visual_words.io import atomic_path

    paths = []
    try:
        for fmt in formats:
            path = Path(out_dir) / f"{name}.{fmt}"
            with atomic_path(path, suffix=f".{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths
