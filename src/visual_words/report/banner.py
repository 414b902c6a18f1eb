"""The one-line warning that heads every output of a run on tiny random-weight models (docs/design.md §5)."""

from __future__ import annotations

from visual_words.registry import uses_tiny_models

SMOKE_BANNER = ("SMOKE RUN - tiny random-weight models: these outputs prove the machinery runs end to end, "
                "not the science. No number here says anything about the paper.")


def paper_trials() -> int:
    """The paper's trial count, from its numbers: datasets x 10 concepts x 10 anchors x 3 tasks x (4 δ + ∞)."""
    from visual_words.report.paper import raw

    return len(raw()["datasets"]) * 100 * 3 * (len(raw()["fig6"]["deltas"]) + 1)


def claims_banner(cfg) -> str:
    from visual_words.trials import trial_grid

    return (f"CLAIMS PROFILE: {len(trial_grid(cfg)):,} of the paper's {paper_trials():,} trials - it checks the "
            f"claims listed under \"Claims checked by this profile\" with the power stated there; cells it did not "
            f"run are \"not run\", and its per-cell numbers rest on fewer trials than the paper's.")


def banner_for(cfg) -> str:
    """The banner text: the smoke banner on tiny models, the claims banner on a profile that checks claims
    (`report.claims`), "" for a full run on real checkpoints."""
    if uses_tiny_models(cfg):
        return SMOKE_BANNER
    return claims_banner(cfg) if cfg.report.claims else ""
