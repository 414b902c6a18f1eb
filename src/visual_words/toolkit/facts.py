"""Facts the toolkit quotes, kept as data: which text-encoder widths community embeddings come from, and what the
paper measured for transferred tokens (docs/paper.md §9, arXiv 2406.07506 Fig. 3 and Fig. 6)."""

from __future__ import annotations

import functools

from visual_words.tasks import TASKS, task

# Widths of the text encoders community textual-inversion files are trained for (beyond our registry).
COMMUNITY_WIDTHS: dict[int, tuple[str, ...]] = {
    768: ("Stable Diffusion 1.x (CLIP ViT-L/14 text encoder)", "SDXL text encoder 1 (clip_l)"),
    1024: ("Stable Diffusion 2.x (OpenCLIP ViT-H/14 text encoder)",),
    1280: ("SDXL text encoder 2 (clip_g, OpenCLIP ViT-bigG/14)",),
}



def fig3(evaluated: str, trained: str) -> tuple[float, ...]:
    """The paper's Fig. 3 values (unconstrained tokens, 100 trials per bar) for one (evaluated, trained) pair, on
    (ImageNet, DreamBooth, COCO, PASCAL), read from the paper's numbers (registry/paper_numbers.yaml)."""
    return _fig3()[(evaluated, trained)]


@functools.cache
def _fig3() -> dict[tuple[str, str], tuple[float, ...]]:
    from visual_words.paper import raw

    data = raw()
    first = lambda v: float(v[0] if isinstance(v, list) else v)  # noqa: E731  (value, or [value, low, high])
    return {(r["eval"], r["trained"]): tuple(first(r[d]) for d in data["datasets"]) for r in data["fig3"]}



SNAP_QUOTE = ("embeddings snap to the nearest word in the embedding space known to both models, and all fine-grain "
              "optimization is lost")
CITATION = "Trabucco et al., arXiv 2406.07506"


def _span(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}"


def kept_share(evaluated: str, trained: str) -> tuple[float, float]:
    """The range over the 4 datasets of transferred / in-domain score (Fig. 3)."""
    ratios = [t / i for t, i in zip(fig3(evaluated, trained), fig3(evaluated, evaluated))]
    return min(ratios), max(ratios)


def paper_finding(src_family: str, dst_family: str) -> str:
    """What the paper measured for a token moved from a model of `src_family` to one of `dst_family`."""
    from visual_words.models.families import families

    task_of = {name: fam.task for name, fam in families().items()}  # the task each family serves in the study
    trained, evaluated = task_of.get(src_family), task_of.get(dst_family)
    head = f"The paper ({CITATION}, §5) found that transferred tokens do not carry their concept: \"{SNAP_QUOTE}\"."
    if trained and evaluated and trained != evaluated:
        lo, hi = kept_share(evaluated, trained)
        body = (f" For tokens trained for {trained} and evaluated on {evaluated} (Fig. 3, 4 datasets, 100 trials "
                f"each), {task(evaluated).metric_words} was {_span(fig3(evaluated, trained))} transferred against "
                f"{_span(fig3(evaluated, evaluated))} in-domain: {lo:.0%}–{hi:.0%} of the in-domain score.")
    else:
        shares = [kept_share(e, t) for e in TASKS for t in TASKS if e != t]
        body = (f" The paper did not test this pair ({trained or src_family} → {evaluated or dst_family}); across "
                f"the six pairs it did test, a transferred token kept {min(s[0] for s in shares):.0%}–"
                f"{max(s[1] for s in shares):.0%} of its in-domain score (Fig. 3).")
    tail = (" Tokens trained inside small ε-balls around their init word (δ < 1) transferred at chance level "
            "(Fig. 6). Expect the mapped token to act like the nearest target words listed here, not like the "
            "concept it was trained on: this file is a starting point (e.g. an init for training in the target "
            "model), not a working token.")
    return head + body + tail
