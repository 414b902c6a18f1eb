"""A model's token table: one type for the input-embedding table, its vocabulary, its identity and its searches.

    table = TokenTable.of(loaded)                       # [V, d] fp32 CPU copy, vocabulary, identity, model ids
    table.identity                                      # the stored table's identity (models/table_identity.py)
    table.nearest(queries, k=5)                         # k nearest rows by L2, fp64-exact, ties by id
    table.nearest(queries, k=5, metric="cosine")        # k most cosine-similar rows
    table.nearest(queries, exact=False, device="cuda")  # the nearest row from one fp32 GEMM (logging, retrieval@1)
    table.d_nn(ids)                                     # distance of each row to its nearest *other* row (D9)
    table.ball(queries, anchor_ids, radii, k=5)         # ε-ball statistics: anchor distance and rank, counts, top-k

Training, the transfer maps, the analysis and the toolkit all hold a `TokenTable`; nothing else searches a table.
The heavy exact searches run on the ε-ball engine (`eps_ball/search.py` + `_kernels.py`: fp32 BLAS tiles, every
undecided row resolved in fp64), which this type calls with its prepared weights.

d_nn has two methods, both fp64 and equal up to rounding of the last bits (tested); which one a caller uses is part
of its results:
- "screened" (default): the ε-ball engine; fast for many ids (the analysis, the toolkit).
- "direct": fp64 differences to every row in torch, one id at a time (no ‖x‖² − 2x·y cancellation). Training's
  ε-ball radii δ·d_nn have always come from this computation, so trained vectors keep their exact bits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from visual_words.tokenizer import BOS, EOS


def is_special(token: str) -> bool:
    """CLIP BPE's markers (``<|startoftext|>``, ``<|endoftext|>``) and any other ``<|…|>`` control token."""
    return token in (BOS, EOS) or (token.startswith("<|") and token.endswith("|>"))


def vocabulary(loaded: Any) -> dict[str, int]:
    """token string -> id of a loaded model's tokenizer (HF tokenizers and open_clip's own), without its
    start/end markers (HF spells them ``<|startoftext|>``, open_clip ``<start_of_text>``). The pad token is kept:
    SD-2.1's and OWLv2's pad with "!", an ordinary word."""
    from visual_words.models.families import family_of

    vocab, markers = family_of(loaded).vocabulary(loaded)
    return {t: i for t, i in vocab.items() if t not in markers and not is_special(t)}


class Nearest(NamedTuple):
    """What `TokenTable.nearest` found: row ids [Q, k] (int64) and their L2 distances or cosines [Q, k] (float64;
    None for the approximate search, which ranks without measuring)."""

    ids: np.ndarray
    values: np.ndarray | None


FAST_BLOCK = 512  # queries per fp32 GEMM of the approximate search: the [block, V] score matrix stays small


@dataclass(eq=False)
class TokenTable:
    """One model's frozen input-embedding table (rows = vocabulary ids) with what names and identifies it."""

    weights: torch.Tensor  # [V, d] fp32 CPU; a copy, never the live parameter; read-only (searches cache from it)
    identity: str | None = None  # the stored table's identity (D12); None only for tables built in memory
    vocab: dict[str, int] | None = None  # token string -> row id (markers left out), where known
    key: str | None = None  # the registry key of the model it came from
    model_id: str | None = None
    model_revision: str | None = None
    # device -> (weights, ‖w‖²) for the approximate search, made on first use (training logs on the GPU)
    _on_device: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.weights = torch.as_tensor(self.weights).detach().to("cpu", torch.float32)
        if self.weights.ndim != 2:
            raise ValueError(f"a token table is [V, d]; got shape {tuple(self.weights.shape)}")

    @classmethod
    def of(cls, model: Any) -> "TokenTable":
        """A loaded model's table (an fp32 CPU copy), vocabulary and identity; `model` is a `LoadedModel` or its
        adapter. The identity is the one its loader read from the weights file (`LoadedModel.table_identity`, via
        `Adapter.table_identity`): precision-independent, so an fp16 training and an fp32 analysis of one checkpoint
        hold the same value."""
        from visual_words.models.adapters import Adapter, adapter_for

        adapter = model if isinstance(model, Adapter) else adapter_for(model)
        loaded, e = adapter.loaded, adapter.entry
        return cls(weights=adapter.embedding.weight.detach().to("cpu", torch.float32).clone(),
                   identity=adapter.table_identity, vocab=vocabulary(loaded), key=e.key, model_id=e.id,
                   model_revision=e.revision)

    # -- what it is ------------------------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weights.shape)

    @property
    def width(self) -> int:
        return int(self.weights.shape[1])

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    @property
    def meta(self) -> dict[str, Any]:
        """What a map sidecar records about its source and target tables (as `src_…` / `dst_…`)."""
        return {"model_id": self.model_id, "model_revision": self.model_revision, "table_hash": self.identity,
                "width": self.width}

    @functools.cached_property
    def _names(self) -> dict[int, str]:
        return {i: tok.replace("</w>", "") for tok, i in (self.vocab or {}).items()}

    def name(self, token_id: int) -> str:
        """A row's token (CLIP BPE's end-of-word marker stripped), or `#id` for a row without a string."""
        return self._names.get(int(token_id), f"#{int(token_id)}")

    def token_id(self, word: str) -> int | None:
        """The row of a whole word (`word</w>` in CLIP BPE, else `word`), or None when the vocabulary lacks it."""
        for tok in (word + "</w>", word):
            if self.vocab and tok in self.vocab:
                return int(self.vocab[tok])
        return None

    @functools.cached_property
    def prepared(self):
        """The table as the ε-ball engine wants it (contiguous fp32 rows, their squared norms), made once."""
        from visual_words.eps_ball.search import prepare_table

        return prepare_table(self.weights)

    # -- searches --------------------------------------------------------------------------------------------

    def nearest(self, queries, k: int = 1, *, metric: str = "l2", exact: bool = True,
                device: str | torch.device | None = None) -> Nearest:
        """The k rows nearest to each query [Q, d].

        - metric "l2", exact: the ε-ball engine; ids and distances are those of an fp64 computation, ties broken by
          id.
        - metric "l2", `exact=False`: k = 1 from one fp32 GEMM per block of queries (argmin of ‖t‖² − 2 q·t, on
          `device`, default CPU), ids only; for logging and retrieval@1, where a tie within fp32 rounding does not
          matter.
        - metric "cosine": the k highest fp32 cosine similarities (values: the cosines)."""
        if metric == "cosine":
            return self._nearest_cosine(queries, k)
        if metric != "l2":
            raise ValueError(f"metric must be l2 or cosine; got {metric!r}")
        if not exact:
            if k != 1:
                raise ValueError("the approximate (exact=False) search gives the nearest row only (k = 1)")
            return self._nearest_fast(queries, device)
        q = _as_rows(queries)
        st = self.ball(q, np.zeros(q.shape[0], np.int64), k=k)  # the anchor's fields are not used
        return Nearest(st["nearest_ids"], st["nearest_dists"])

    @torch.no_grad()
    def _nearest_fast(self, queries, device) -> Nearest:
        device = torch.device(device or "cpu")
        if device not in self._on_device:
            w = self.weights.to(device)
            self._on_device[device] = (w, (w * w).sum(1))
        table, sq = self._on_device[device]
        q = torch.as_tensor(queries).detach().reshape(-1, self.width).to(device, torch.float32)
        sq = sq.expand(min(FAST_BLOCK, max(len(q), 1)), -1)
        out = [torch.argmin(torch.addmm(sq[: len(b)], b, table.T, alpha=-2.0), dim=1)
               for b in q.split(FAST_BLOCK)]
        ids = torch.cat(out) if out else torch.empty(0, dtype=torch.long)
        return Nearest(ids.cpu().numpy()[:, None], None)

    @torch.no_grad()
    def _nearest_cosine(self, queries, k: int) -> Nearest:
        import torch.nn.functional as F

        q = F.normalize(torch.as_tensor(queries, dtype=torch.float32).reshape(-1, self.width), dim=1)
        t = F.normalize(self.weights, dim=1)
        top = (q @ t.T).topk(min(k, len(self)), dim=1)
        return Nearest(top.indices.numpy(), top.values.to(torch.float64).numpy())

    def d_nn(self, ids: Sequence[int], *, method: str = "screened") -> np.ndarray:
        """d_nn of each id: the L2 distance from its row to the nearest *other* row of this table (D9), [len(ids)]
        float64. `method`: "screened" (the ε-ball engine) or "direct" (fp64 differences, training's radii); see the
        module's docstring."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(self) < 2:
            raise ValueError("d_nn needs a table of at least 2 tokens")
        if method == "direct":
            return self._d_nn_direct(ids)
        if method != "screened":
            raise ValueError(f"d_nn method must be screened or direct; got {method!r}")
        st = self.ball(self.prepared.weights[ids], ids, k=2)
        first_is_self = st["nearest_ids"][:, 0] == ids
        return np.where(first_is_self, st["nearest_dists"][:, 1], st["nearest_dists"][:, 0])

    def _d_nn_direct(self, ids: np.ndarray) -> np.ndarray:
        # Explicit differences in float64 (no ‖x‖²−2x·y+‖y‖² cancellation): the radius of a δ = 0.1 ball is a small
        # number and must not inherit a GEMM's rounding.
        t = self.weights
        unique = sorted({int(i) for i in ids})
        best = {i: math.inf for i in unique}
        chunk = 8192  # float64 rows at a time: bounded memory for a 49,408 × 1,024 table
        for start in range(0, t.shape[0], chunk):
            rows = t[start : start + chunk].to(torch.float64)
            for i in unique:
                d = torch.linalg.vector_norm(rows - t[i].to(torch.float64), dim=1)
                if start <= i < start + rows.shape[0]:
                    d[i - start] = math.inf
                best[i] = min(best[i], float(d.min()))
        return torch.tensor([best[int(i)] for i in ids], dtype=torch.float64).numpy()

    def ball(self, queries, anchor_ids, radii=None, *, k: int = 1, block_size: int = 1024,
             progress: bool = False) -> dict[str, np.ndarray]:
        """ε-ball statistics of `queries` [Q, d] around the rows `anchor_ids` [Q]: dist_anchor, cos_anchor,
        anchor_rank, nearest_is_anchor [Q]; nearest_ids, nearest_dists [Q, k]; with `radii` ([Q] or [Q, R]) counts
        [Q, R] of the rows within each radius of the query. fp64-exact (`eps_ball.search.eps_ball_stats`)."""
        from visual_words.eps_ball.search import eps_ball_stats

        return eps_ball_stats(queries, anchor_ids, self.prepared, radii, k=k, block_size=block_size,
                              progress=progress)


def _as_rows(queries) -> np.ndarray:
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().to("cpu", torch.float32).numpy()
    q = np.asarray(queries, dtype=np.float32)
    return q.reshape(-1, q.shape[-1]) if q.ndim != 2 else q
