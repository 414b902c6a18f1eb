"""Splicing learned vectors into a text tower: prompts with a "{}" slot, tokenised, and an embedding hook.

No tokenizer entry is added and the embedding table is never resized or written. A prompt such as
"a photo of a {}" is tokenised with n consecutive *slot* positions where "{}" stands; a forward hook on the text
tower's token-embedding ``nn.Embedding`` returns a copy of its output with those positions overwritten by the learned
vectors. That works for every library's text tower (transformers' CLIPTextModel / Owlv2TextTransformer, open_clip's
CLIP) because all of them look tokens up through one ``nn.Embedding`` (docs/toolchain.md §8). Gradients reach only the
learned vectors; the table stays bit-identical.

K trials run in one forward: the batch is K × P rows (trial-major), each trial's vectors go into its own rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

SLOT = "{}"


@dataclass(frozen=True)
class Tokenized:
    """Token ids of K × P prompts (trial-major rows) with their slot and end-of-text positions."""

    ids: torch.Tensor  # [K*P, context] long
    slots: torch.Tensor  # [K*P, n] long: positions of the n learned vectors (empty when n == 0)
    eos: torch.Tensor  # [K*P] long: position of the end-of-text token (where CLIP-style towers pool)
    k: int
    p: int

    @property
    def used_length(self) -> int:
        """Positions up to and including the batch's last end-of-text token: all a causal, EOS-pooled tower needs."""
        return int(self.eos.max()) + 1


def _as_grid(prompts: Sequence[str] | Sequence[Sequence[str]], k: int) -> list[list[str]]:
    """Prompts shared by all K trials (a list of str) or one list per trial (K lists of P str) -> K × P."""
    if not prompts:
        raise ValueError("no prompts given")
    if isinstance(prompts[0], str):
        return [list(prompts)] * k  # type: ignore[list-item]
    grid = [list(p) for p in prompts]
    if len(grid) != k or len({len(p) for p in grid}) != 1:
        raise ValueError(f"per-trial prompts must be {k} lists of equal length, got lengths {[len(p) for p in grid]}")
    return grid


def tokenize_with_slots(
    prompts: Sequence[str] | Sequence[Sequence[str]],
    n: int,
    k: int,
    encode: Callable[[str], list[int]],
    bos: int,
    eos: int,
    pad: int,
    context_length: int,
    filler: int,
) -> Tokenized:
    """Tokenise prompts; the "{}" of each becomes n slot positions holding `filler` (any id but end-of-text).

    The text before and after the slot is encoded separately. CLIP's BPE splits on whitespace and punctuation
    before merging, so that gives the same ids as encoding the whole prompt with a word in place of "{}".
    With n == 0 a prompt must not contain "{}" (plain text).
    """
    if filler == eos:
        raise ValueError("the slot filler id must differ from the end-of-text id (towers pool at end-of-text)")
    grid = _as_grid(prompts, k)
    rows, slots, eos_pos = [], [], []
    cache: dict[str, tuple[list[int], list[int]]] = {}
    for trial_prompts in grid:
        for prompt in trial_prompts:
            if prompt not in cache:
                parts = prompt.split(SLOT)
                if n > 0 and len(parts) != 2:
                    raise ValueError(f"prompt {prompt!r} must contain exactly one {SLOT!r} slot")
                if n == 0 and len(parts) != 1:
                    raise ValueError(f"prompt {prompt!r} has a {SLOT!r} slot but no vectors were given")
                before = encode(parts[0]) if parts[0].strip() else []
                after = encode(parts[1]) if n > 0 and parts[1].strip() else []
                cache[prompt] = (before, after)
            before, after = cache[prompt]
            ids = [bos, *before, *([filler] * n), *after, eos]
            if len(ids) > context_length:
                raise ValueError(f"prompt {prompt!r} with {n} vectors needs {len(ids)} tokens; the model's context "
                                 f"is {context_length}")
            slots.append(list(range(1 + len(before), 1 + len(before) + n)))
            eos_pos.append(len(ids) - 1)
            rows.append(ids + [pad] * (context_length - len(ids)))
    return Tokenized(ids=torch.tensor(rows, dtype=torch.long),
                     slots=torch.tensor(slots, dtype=torch.long).reshape(len(rows), n),
                     eos=torch.tensor(eos_pos, dtype=torch.long), k=k, p=len(grid[0]))


def splice(embeds: torch.Tensor, vectors: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """A copy of `embeds` [K*P, L, d] with row r's slot positions set to its trial's vectors [K, n, d].

    Out-of-place (index_put), so the frozen table's output is never written and autograd sees both inputs.
    """
    k, n, d = vectors.shape
    rows = embeds.shape[0]
    if rows % k or slots.shape != (rows, n):
        raise ValueError(f"cannot splice {k} trials × {n} vectors into {rows} rows with slots {tuple(slots.shape)}")
    p = rows // k
    row = torch.arange(rows, device=embeds.device)[:, None].expand(rows, n)
    values = vectors.to(embeds.dtype)[:, None].expand(k, p, n, d).reshape(rows, n, d)
    return embeds.index_put((row, slots.to(embeds.device)), values)


@contextlib.contextmanager
def spliced(embedding: torch.nn.Module, vectors: torch.Tensor | None, tok: Tokenized) -> Iterator[None]:
    """While active, the embedding module's output for the batch `tok` carries the learned vectors."""
    if vectors is None:
        yield
        return
    slots = tok.slots

    def hook(module, inputs, output):
        if output.shape[0] != slots.shape[0]:
            raise RuntimeError(f"splice hook saw a batch of {output.shape[0]} rows, expected {slots.shape[0]}")
        return splice(output, vectors, slots)

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
