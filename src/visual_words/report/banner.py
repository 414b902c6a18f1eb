"""The one-line warning that heads every output of a run on tiny random-weight models (DESIGN.md §5)."""

from __future__ import annotations

SMOKE_BANNER = ("SMOKE RUN - tiny random-weight models: these outputs prove the machinery runs end to end, "
                "not the science. No number here says anything about the paper.")


def uses_tiny_models(cfg) -> bool:
    """True when any of the study's models is a tiny random-weight checkpoint (the smoke profile, or any profile
    that swaps one in): what decides the banner, not the profile's name."""
    from visual_words import registry

    return any(registry.model(key).tiny is not None for key in cfg.study.models.values())


def banner_for(cfg) -> str:
    """The banner text, or "" for a run on real checkpoints."""
    return SMOKE_BANNER if uses_tiny_models(cfg) else ""
