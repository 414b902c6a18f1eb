"""Which rows of two token tables describe the same word: the shared vocabulary a map is fitted on.

The study's three models share the 49,408-token CLIP BPE, so the pairing is the identity on every id except the
special tokens (``<|startoftext|>``, ``<|endoftext|>``): they are markers, not words, and their rows are trained
for another job. A model outside the study may have another vocabulary; then rows are paired by token string over
the tokens both vocabularies have, so any two checkpoints with overlapping vocabularies get a map.
"""

from __future__ import annotations

import numpy as np

from visual_words.models.token_table import is_special


def shared_rows(vocab_src: dict[str, int], vocab_dst: dict[str, int], n_src: int, n_dst: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Row ids ``(src_ids, dst_ids)`` of the non-special tokens both vocabularies have, paired, ordered by
    source id. Ids outside a table (tokenizer larger than the table) are skipped."""
    pairs = sorted((i, vocab_dst[t]) for t, i in vocab_src.items()
                   if t in vocab_dst and not is_special(t) and i < n_src and vocab_dst[t] < n_dst)
    if not pairs:
        raise ValueError("the two models share no vocabulary tokens; a transfer map cannot be fitted")
    arr = np.asarray(pairs, dtype=np.int64)
    return arr[:, 0], arr[:, 1]

