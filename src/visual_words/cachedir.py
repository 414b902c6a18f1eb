"""The user's cache folder for things `vw` can rebuild at any time and that belong to no study: the maps `vw
transfer` fits between checkpoints outside the study, and the CLIP BPE tokenizer files.

It follows the XDG base-directory rule that platformdirs applies on Linux: `$XDG_CACHE_HOME/visual-words`, or
`~/.cache/visual-words` when that is unset; `VW_CACHE_DIR` overrides both. Never inside the checkout, so nothing
here can make a DVC-tracked folder look changed.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "visual-words"


def user_cache_dir(*parts: str) -> Path:
    """`<user cache>/visual-words[/parts…]` (not created; writers create what they write)."""
    base = os.environ.get("VW_CACHE_DIR")
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG rule: a relative XDG_CACHE_HOME is invalid and is ignored.
        root = (Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / APP
    return root.joinpath(*parts)
