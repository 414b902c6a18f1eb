"""The pictures a trial's MLflow run carries besides its numbers.

- Its training curves, drawn from the sidecar when the run is logged: ``loss.png`` (the loss per logged step) and
  ``distance_to_anchor.png`` (max over the word's vectors of ‖v − a‖ / d_nn(a) per logged step, with the ε-ball's
  radius δ dashed for a constrained trial).
- What the evaluation drew for the word (evaluate/runner.py keeps them under ``<evaluate.out_dir>/images/``):
  ``<trial slug>__<i>.png`` (the i-th generated image) and ``<trial slug>__det.png`` (the best detection boxes on
  the concept's first held-out image), logged as ``generated_<i>.png`` and ``detection.png``.

Plain Agg figures (no pyplot: no global state, safe in Ray workers and threads).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable

LOSS_PNG = "loss.png"
DISTANCE_PNG = "distance_to_anchor.png"
DETECTION_PNG = "detection.png"
GENERATED_PNG = "generated_{}.png"

_KEPT = re.compile(r"^(?P<slug>.+)__(?P<what>det|\d+)\.png$")  # evaluate/runner.py's names for kept images


def _line_png(path: Path, steps, values, title: str, ylabel: str, level: float | None = None,
              level_label: str = "", from_zero: bool = False) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from visual_words.io import atomic_path

    fig = Figure(figsize=(5, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pts = [(s, v) for s, v in zip(steps, values) if isinstance(v, (int, float)) and math.isfinite(v)]
    if pts:
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o" if len(pts) < 30 else None, lw=1.5)
    else:
        ax.text(0.5, 0.5, "no finite values logged", ha="center", va="center", transform=ax.transAxes)
    if level is not None and math.isfinite(level):
        ax.axhline(level, color="tab:red", ls="--", lw=1, label=level_label)
        ax.legend(loc="best", fontsize=8)
    if from_zero:  # a distance: its scale starts at 0, so a word pinned on the ball's surface reads as such
        ax.set_ylim(bottom=0, top=1.1 * max([v for _, v in pts] + [level or 0, 1e-12]))
    ax.ticklabel_format(axis="y", useOffset=False)  # values, not "1e-8 + 5e-1" offsets
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.15, top=0.9)  # fixed: tight_layout costs more than the plot
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_curves(sidecar: dict, out_dir: Path) -> list[Path]:
    """The loss and distance-to-anchor curves of one trained trial (from its sidecar) as PNGs in `out_dir`."""
    curves = sidecar.get("curves") or {}
    steps = curves.get("step") or []
    if not steps:
        return []
    trial_id = (sidecar.get("trial") or {}).get("id", "")
    delta = sidecar.get("delta")
    radius = float(delta) if isinstance(delta, (int, float)) else None  # "inf" (unconstrained): no ball to draw
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_line_png(out_dir / LOSS_PNG, steps, curves.get("loss") or [], trial_id, "loss"),
            _line_png(out_dir / DISTANCE_PNG, steps, curves.get("rel_dist") or [], trial_id,
                      "distance to the anchor  ‖v − a‖ / d_nn(a)", radius,
                      f"ε-ball radius δ = {delta:g}" if radius is not None else "", from_zero=True)]


def kept_images(images_dir: Path) -> dict[str, dict[str, Path]]:
    """The evaluation's kept pictures by trial slug: ``{slug: {artifact name: file}}``."""
    out: dict[str, dict[str, Path]] = {}
    if not images_dir.is_dir():
        return out
    for p in sorted(images_dir.glob("*.png")):
        m = _KEPT.match(p.name)
        if m is None:
            continue
        name = DETECTION_PNG if m["what"] == "det" else GENERATED_PNG.format(m["what"])
        out.setdefault(m["slug"], {})[name] = p
    return out


def run_note(trial_id: str, run_id: str, pictures: Iterable[str]) -> str:
    """The run's description (markdown, shown on its Overview page): the trial and its pictures inline. The image
    links are the tracking server's own artifact route, relative to the UI's page."""
    names = sorted(pictures, key=_picture_order)
    if not names:
        return f"Trial `{trial_id}`."
    # the pictures first: the Overview shows a description's first lines until "Show more" is clicked
    return "\n".join([" ".join(f"![{n}](get-artifact?path={n}&run_uuid={run_id})" for n in names), "",
                      f"Trial `{trial_id}`: " + ", ".join(f"`{n}`" for n in names) + " (also under Artifacts)."])


def _picture_order(name: str) -> tuple[int, str]:
    """Generated images, then detections, then curves."""
    for rank, prefix in enumerate(("generated_", DETECTION_PNG, LOSS_PNG, DISTANCE_PNG)):
        if name.startswith(prefix):
            return rank, name
    return 9, name
