"""Token-table geometry for training: the relative ε-ball (D9) and nearest vocabulary tokens.

The ball around anchor a has radius δ·d_nn(a), where d_nn(a) is the L2 distance from a to its nearest *other* row
of the same table. After every optimizer step each learned vector is projected onto it (projected gradient
descent, docs/paper.md §4.1).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def nearest_other_distance(table: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """d_nn for each id: the L2 distance from table[id] to the nearest other row, [len(ids)] float64.

    Computed from explicit differences in float64 (no ‖x‖²−2x·y+‖y‖² cancellation): the radius of a δ = 0.1 ball is
    a small number and must not inherit a GEMM's rounding."""
    t = table.detach().to("cpu")
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
    return torch.tensor([best[int(i)] for i in ids], dtype=torch.float64)


def radii(deltas: Sequence[float], d_nn: torch.Tensor) -> torch.Tensor:
    """δ·d_nn per trial (inf for unconstrained trials), float64 [K]."""
    return torch.tensor([float(d) for d in deltas], dtype=torch.float64) * d_nn


@torch.no_grad()
def project_(vectors: torch.Tensor, anchors: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """In place: move every vector [K, n, d] onto the ball ‖v − a_k‖ ≤ r_k around its trial's anchor [K, d].

    The offset is scaled by min(1, r/‖v − a‖), computed in float64; r = inf leaves the vector as it is."""
    a = anchors.to(vectors.device, torch.float64)[:, None]
    offset = vectors.detach().to(torch.float64) - a
    norm = torch.linalg.vector_norm(offset, dim=-1, keepdim=True)
    r = radius.to(vectors.device, torch.float64)[:, None, None]
    scale = torch.where(norm > r, r / norm, torch.ones_like(norm))
    vectors.copy_((a + offset * scale).to(vectors.dtype))
    return vectors


@torch.no_grad()
def relative_distance(vectors: torch.Tensor, anchors: torch.Tensor, d_nn: torch.Tensor) -> torch.Tensor:
    """‖v − a‖ / d_nn(a) per vector, [K, n] float64."""
    offset = vectors.detach().to("cpu", torch.float64) - anchors.to("cpu", torch.float64)[:, None]
    return torch.linalg.vector_norm(offset, dim=-1) / d_nn.to(torch.float64)[:, None]


@torch.no_grad()
def nearest_tokens(table: torch.Tensor, vectors: torch.Tensor, table_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Id of the nearest table row to each vector: [..., d] -> [...] long.

    One GEMM (argmin of ‖t‖² − 2 t·v; ‖v‖² is the same for every row). Used for logging, where an exact tie
    between two rows does not matter."""
    flat = vectors.detach().reshape(-1, vectors.shape[-1]).to(table.device, table.dtype)
    sq = table_sq if table_sq is not None else (table * table).sum(1)
    return (sq[None] - 2 * flat @ table.T).argmin(1).reshape(vectors.shape[:-1])
