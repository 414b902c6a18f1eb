"""File what a full-size benchmark measured as this card's rates for `vw plan` (visual_words.plan).

The target is $VW_RATES when set, else artifacts/bench/rates.yaml (a copy of the packaged rates file, so the
packaged one changes only when someone commits a measurement).
"""

from __future__ import annotations

import os
from pathlib import Path

from visual_words.models.location import repo_root
from visual_words.plan import RATES_ENV, add_measured_rates, detect_card


def file_card_rates(rates: dict[str, float], basis: str) -> str:
    """Add `rates` (keys of plan.RATE_KEYS) to this card's measured entry; returns the line to print."""
    card = detect_card()
    if card is None:
        return "rates not filed: this card is not in the rates file (add it with its bf16 peak to file it)"
    target = Path(os.environ.get(RATES_ENV) or repo_root() / "artifacts" / "bench" / "rates.yaml")
    add_measured_rates(card, rates, basis=basis, path=target)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in rates.items())
    return f"rates filed for {card} in {target} ({shown}); `VW_RATES={target} vw plan --profile paper` uses them"
