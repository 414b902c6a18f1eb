"""Linear transfer maps between two token tables, and the estimators that fit them (docs/paper.md §5, docs/design.md
D8).

A map takes a vector of the source model's input-embedding space to the target's: ``v_dst = v_src @ W + b``
(``W`` is ``[d_src, d_dst]``; the paper writes the same map as ``T = Wᵀ``, ``v_x = T v_y``).

Every estimator here needs only the second-moment statistics of the paired rows (``XᵀX``, ``XᵀY`` and, for the
affine map, the column sums): ``Moments``. That is what makes fitting all six ordered pairs of three tables cheap:
each table's Gram matrix and each pair's cross product is computed once, in fp64, and shared by both directions,
by the held-out quality fit and by the final fit (moments of disjoint row sets add up).

Estimators (``maps.estimator``):
- ``ols``: ordinary least squares without bias, the paper's map, ``W = (XᵀX)⁻¹ XᵀY`` solved in fp64 from the normal
  equations (Cholesky).
- ``ridge``: ``W = (XᵀX + αI)⁻¹ XᵀY``.
- ``procrustes``: the orthogonal ``Q`` minimising ``‖XQ − Y‖`` (no scaling), widths equalised by zero-padding the
  narrower table; the fit reduces to an SVD of ``XᵀY``, so ``W = (U Vᵀ)[:d_src, :d_dst]``.
- ``affine``: least squares with a bias: ``W`` from the centred moments, ``b = ȳ − x̄ W``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import torch

ESTIMATORS = ("ols", "ridge", "procrustes", "affine")


@dataclass
class Moments:
    """Sufficient statistics of paired rows ``X [n, d_src]``, ``Y [n, d_dst]`` (fp64): enough for every estimator."""

    xtx: np.ndarray  # [d_src, d_src]
    xty: np.ndarray  # [d_src, d_dst]
    x_sum: np.ndarray  # [d_src]
    y_sum: np.ndarray  # [d_dst]
    n: int

    def __add__(self, other: Moments) -> Moments:
        """The moments of the union of two disjoint row sets."""
        return Moments(self.xtx + other.xtx, self.xty + other.xty, self.x_sum + other.x_sum,
                       self.y_sum + other.y_sum, self.n + other.n)


def as_float64(a: Any) -> np.ndarray:
    """A numpy fp64 array from a tensor or array (a copy only where the dtype or device requires one)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu").numpy()
    return np.asarray(a, dtype=np.float64)


def gram(x: np.ndarray) -> np.ndarray:
    """``XᵀX`` in fp64. numpy hands ``x.T @ x`` on one buffer to BLAS syrk (half the flops of a general GEMM)."""
    return x.T @ x


def moments(x: Any, y: Any, xtx: np.ndarray | None = None) -> Moments:
    """The moments of paired rows; pass ``xtx`` when the source Gram matrix is already known (shared across pairs)."""
    x, y = as_float64(x), as_float64(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"paired tables must be [n, d_src] and [n, d_dst]; got {x.shape} and {y.shape}")
    return Moments(gram(x) if xtx is None else xtx, x.T @ y, x.sum(0), y.sum(0), x.shape[0])


@dataclass
class LinearMap:
    """``v_dst = v_src @ weight + bias``; weight ``[d_src, d_dst]`` and bias ``[d_dst]`` kept in fp64."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    estimator: str = "ols"
    meta: dict[str, Any] = field(default_factory=dict)  # what the file's sidecar says (hashes, quality, keys)

    @property
    def d_src(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_dst(self) -> int:
        return int(self.weight.shape[1])

    @property
    def matrix(self) -> np.ndarray:
        """The paper's ``T`` (``[d_dst, d_src]``, ``v_x = T v_y``)."""
        return self.weight.T

    def apply(self, v: Any) -> Any:
        """Map vectors ``[..., d_src]`` (tensor or array); the result has the input's type, dtype and device.
        The product is taken in fp64, the precision the map was solved in."""
        if isinstance(v, torch.Tensor):
            w = torch.from_numpy(self.weight).to(v.device)
            out = v.to(torch.float64) @ w
            if self.bias is not None:
                out = out + torch.from_numpy(self.bias).to(v.device)
            return out.to(v.dtype if v.is_floating_point() else torch.float32)
        arr = np.asarray(v)
        out = arr.astype(np.float64) @ self.weight
        if self.bias is not None:
            out = out + self.bias
        return out.astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32)

    def __call__(self, v: Any) -> Any:
        if np.shape(v)[-1] != self.d_src:
            raise ValueError(f"map {self.meta.get('src_key', '?')}→{self.meta.get('dst_key', '?')} takes vectors of "
                             f"width {self.d_src}; got width {np.shape(v)[-1]}")
        return self.apply(v)


def _solve_spd(a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
    """Solve ``a w = b`` for a symmetric positive-definite ``a`` (Cholesky); a clear error when it is singular."""
    try:
        return scipy.linalg.solve(a, b, assume_a="pos")
    except np.linalg.LinAlgError as e:
        raise ValueError(f"{what}: the normal equations are singular ({e}); the source table has linearly dependent "
                         "columns or fewer rows than columns — use maps.estimator=ridge") from None


def fit_from_moments(m: Moments, estimator: str = "ols", ridge_alpha: float = 1.0) -> LinearMap:
    """Fit a map from precomputed moments (see the module docstring for each estimator)."""
    if estimator == "ols":
        return LinearMap(_solve_spd(m.xtx, m.xty, "ols"), None, "ols")
    if estimator == "ridge":
        if ridge_alpha < 0:
            raise ValueError(f"maps.ridge_alpha must be >= 0, got {ridge_alpha}")
        a = m.xtx + ridge_alpha * np.eye(m.xtx.shape[0])
        return LinearMap(_solve_spd(a, m.xty, "ridge"), None, "ridge", {"ridge_alpha": ridge_alpha})
    if estimator == "procrustes":
        # Zero-padding both tables to d = max(d_src, d_dst) pads XᵀY with zero rows/columns; the orthogonal
        # solution of the padded problem is U Vᵀ of its SVD, and the padded input columns / output columns drop out.
        d_src, d_dst = m.xty.shape
        d = max(d_src, d_dst)
        c = np.zeros((d, d))
        c[:d_src, :d_dst] = m.xty
        u, _, vt = scipy.linalg.svd(c)
        return LinearMap((u @ vt)[:d_src, :d_dst], None, "procrustes")
    if estimator == "affine":
        x_mean, y_mean = m.x_sum / m.n, m.y_sum / m.n
        cxx = m.xtx - m.n * np.outer(x_mean, x_mean)
        cxy = m.xty - m.n * np.outer(x_mean, y_mean)
        w = _solve_spd(cxx, cxy, "affine")
        return LinearMap(w, y_mean - x_mean @ w, "affine")
    raise ValueError(f"unknown maps.estimator `{estimator}` (known: {', '.join(ESTIMATORS)})")


def fit_map(x_src: Any, y_dst: Any, estimator: str = "ols", ridge_alpha: float = 1.0) -> LinearMap:
    """Fit a map on paired rows: ``x_src [n, d_src]`` (tensor or array) → ``y_dst [n, d_dst]``."""
    return fit_from_moments(moments(x_src, y_dst), estimator, ridge_alpha)
