"""The relative ε-ball of training (D9): radii, the projection onto the ball, distances in units of d_nn.

The ball around anchor a has radius δ·d_nn(a), where d_nn(a) is the L2 distance from a to its nearest *other* row
of the same table (`TokenTable.d_nn(method="direct")`, models/token_table.py). After every optimizer step each
learned vector is projected onto it (projected gradient descent, docs/paper.md §4.1).
"""

from __future__ import annotations

from typing import Sequence

import torch


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
