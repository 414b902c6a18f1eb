"""ε-ball statistics of vectors against a token table: where a trained (or transferred) token lands.

The engine behind the exact searches of `TokenTable` (models/token_table.py: `ball`, `nearest`, `d_nn`), which is how
the project calls it; this module works on plain arrays and knows nothing of models.

For each query vector q with an anchor token a in a table W (V × d):
  dist_anchor   ‖q − w_a‖ (fp64)                cos_anchor  cos(q, w_a)
  anchor_rank   #{w : ‖q − w‖ < ‖q − w_a‖}      (0 ⇔ the anchor is q's nearest token: the paper's "snaps to the anchor")
  nearest_ids / nearest_dists                    the k nearest tokens, exact, ties broken by id
  counts[:, r]  #{w : ‖q − w‖ ≤ radii[:, r]}     (tokens inside a ball of that radius around q)

How: the distances come from fp32 BLAS products (torch.mm; a pure-Numba distance loop is 3–28× slower on a CPU),
one cache-sized tile (256 queries × 2,048 tokens) at a time, one worker thread per core, and a fused Numba pass
reduces each tile (top-k, the rank, every count) right after BLAS wrote it, while it is still in that core's cache.
On a GPU the same decisions run as torch ops (eps_ball.search_torch). fp32 alone cannot decide a token whose
distance is within rounding of a threshold, so every decision is made against a rigorous error bound and the
undecided tokens are recomputed in fp64 from the fp32 inputs: indices and ranks are exactly those of an fp64
computation.

Error bound: x = ‖w‖² − 2 q·w in fp32 differs from the exact value by at most
  2u·max‖w‖² + (2γ_d + 2u)·‖q‖·max‖w‖ (u = 2⁻²⁴, γ_d = d·u / (1 − d·u): any summation order, Higham Thm 3.1),
doubled for safety below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from visual_words.eps_ball import _kernels

U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of fp32
FLT_MAX = float(np.finfo(np.float32).max)
EXTRA_CANDIDATES = 4  # approximate top-(k + 4) are re-ranked exactly; more only when the bound says so


@dataclass(frozen=True)
class PreparedTable:
    """A token table ready for repeated queries: contiguous fp32 weights and their squared norms."""

    weights: np.ndarray  # [V, d] float32, C-contiguous
    sq_norms: np.ndarray  # [V] float32 (rounded from fp64)
    max_norm: float
    max_sq_norm: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.weights.shape


def prepare_table(table) -> PreparedTable:
    """Accepts a [V, d] numpy array or torch tensor (any float dtype); returns a PreparedTable (or passes one
    through)."""
    if isinstance(table, PreparedTable):
        return table
    if isinstance(table, torch.Tensor):
        table = table.detach().to("cpu", torch.float32).numpy()
    w = np.ascontiguousarray(np.asarray(table, dtype=np.float32))
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"token table must be [V, d] with V, d > 0; got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("token table holds NaN or inf values")
    sq64 = np.einsum("ij,ij->i", w.astype(np.float64), w.astype(np.float64))
    return PreparedTable(weights=w, sq_norms=sq64.astype(np.float32), max_norm=float(np.sqrt(sq64.max())),
                         max_sq_norm=float(sq64.max()))


def _as_queries(queries, d: int) -> np.ndarray:
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().to("cpu", torch.float32).numpy()
    q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"queries must be [Q, {d}] (the table's width); got shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("queries hold NaN or inf values")
    return q


def _round_out(x: np.ndarray, down: bool) -> np.ndarray:
    """fp64 -> fp32, rounded away from the band (so the fp32 band contains the fp64 one); ±inf -> ±FLT_MAX."""
    x = np.clip(x, -FLT_MAX, FLT_MAX)
    f = x.astype(np.float32)
    with np.errstate(over="ignore"):  # nextafter(±FLT_MAX) is computed for every entry but never selected
        if down:
            return np.where(f.astype(np.float64) > x, np.nextafter(f, np.float32(-np.inf)), f)
        return np.where(f.astype(np.float64) < x, np.nextafter(f, np.float32(np.inf)), f)


def eps_ball_stats(queries, anchor_ids, table, radii=None, *, k: int = 1, block_size: int = 1024,
                   progress: bool = False, backend: str = "auto", device: str | None = None,
                   vocab_chunk: int | None = None) -> dict[str, np.ndarray]:
    """ε-ball statistics of `queries` [Q, d] around `anchor_ids` [Q] in `table` [V, d] (or a PreparedTable).

    `radii` [Q] or [Q, R] (≥ 0, may be inf): count the tokens within each radius of the query. Returns a dict of
    numpy arrays: dist_anchor, cos_anchor, anchor_rank, nearest_is_anchor [Q]; nearest_ids, nearest_dists [Q, k];
    counts [Q, R] (only when radii is given).

    `backend`: "numba" (CPU: BLAS tiles + the fused kernels), "torch" (the same decisions as torch ops on `device`,
    default CUDA when present), "auto" (torch on a GPU when one is there, else numba). Both give the same ids,
    ranks and counts (tested). `vocab_chunk`: tokens per tile (default: a ~4 MB tile with `block_size` rows)."""
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be auto, numba or torch; got {backend!r}")
    tab = prepare_table(table)
    V, d = tab.shape
    q = _as_queries(queries, d)
    Q = q.shape[0]
    anchors = np.ascontiguousarray(np.asarray(anchor_ids, dtype=np.int64).reshape(-1))
    if anchors.shape[0] != Q:
        raise ValueError(f"anchor_ids has {anchors.shape[0]} entries for {Q} queries")
    if Q and (anchors.min() < 0 or anchors.max() >= V):
        raise ValueError(f"anchor_ids must lie in [0, {V}); got {anchors.min()}..{anchors.max()}")
    if not 1 <= k <= V:
        raise ValueError(f"k must be in [1, {V}]; got {k}")
    r = np.zeros((Q, 0)) if radii is None else np.asarray(radii, dtype=np.float64)
    r = r.reshape(Q, -1) if r.ndim == 1 else r
    if r.shape[0] != Q:
        raise ValueError(f"radii must be [Q] or [Q, R] with Q = {Q}; got shape {np.shape(radii)}")
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("radii must be ≥ 0 (inf allowed), without NaN")

    q64 = q.astype(np.float64)
    a64 = tab.weights[anchors].astype(np.float64)
    qn = np.einsum("ij,ij->i", q64, q64)
    q_norm = np.sqrt(qn)
    diff = q64 - a64
    d2a = np.einsum("ij,ij->i", diff, diff)
    a_norm = np.sqrt(np.einsum("ij,ij->i", a64, a64))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.einsum("ij,ij->i", q64, a64) / (q_norm * a_norm)

    # Thresholds in x units (x = d² − |q|²): column 0 = the anchor's distance (rank: strictly closer), then radii.
    gamma = d * U32 / (1 - d * U32)
    tol = 2.0 * (2 * U32 * tab.max_sq_norm + (2 * gamma + 2 * U32) * q_norm * tab.max_norm)
    target = np.ascontiguousarray(r * r)  # exact squared radii (inf stays inf)
    centre = np.concatenate([d2a[:, None], target], axis=1) - qn[:, None]
    thr_lo = np.ascontiguousarray(_round_out(centre - tol[:, None], down=True))
    thr_hi = np.ascontiguousarray(_round_out(centre + tol[:, None], down=False))

    kk = min(V, k + EXTRA_CANDIDATES)
    out_ids = np.empty((Q, k), np.int64)
    out_d2 = np.empty((Q, k), np.float64)
    counts = np.empty((Q, 1 + target.shape[1]), np.int64)
    if _use_torch(backend):
        from visual_words.eps_ball.search_torch import scan_torch

        scan_torch(q, anchors, tab, qn, tol, thr_lo, thr_hi, target, k, kk, out_ids, out_d2, counts,
                   block_size=block_size, device=device, progress=progress)
    else:
        _scan_numba(q, anchors, tab, qn, tol, thr_lo, thr_hi, target, k, kk, out_ids, out_d2, counts,
                    block_size=block_size, vocab_chunk=vocab_chunk, progress=progress)
    out = {
        "dist_anchor": np.sqrt(d2a),
        "cos_anchor": cos,
        "anchor_rank": counts[:, 0],
        "nearest_is_anchor": counts[:, 0] == 0,
        "nearest_ids": out_ids,
        "nearest_dists": np.sqrt(np.maximum(out_d2, 0.0)),
    }
    if radii is not None:
        out["counts"] = counts[:, 1:]
    return out


TILE_BYTES = 2 << 20  # one fp32 GEMM tile per thread (256 × 2,048): stays in cache between BLAS and the scan
TILE_ROWS = 256  # queries per tile
BAND_SLOTS = 128  # band tokens kept per (query, threshold; a far vector's rank band holds ~50); more → the exact row


def _use_torch(backend: str) -> bool:
    return backend == "torch" or (backend == "auto" and torch.cuda.is_available())


def _scan_numba(q, anchors, tab: PreparedTable, qn, tol, thr_lo, thr_hi, target, k, kk, out_ids, out_d2, counts,
                block_size: int, vocab_chunk: int | None, progress: bool) -> None:
    """One worker thread per core, each with its own rows: a single-threaded fp32 GEMM tile (TILE_ROWS queries ×
    a chunk of tokens, ≤ TILE_BYTES: it stays in that core's cache) goes straight into the serial fused scan, and the
    per-row state (top-kk, counts, band tokens) carries over the chunks of a row. Both BLAS (torch, intra-op threads
    set to 1 meanwhile) and the Numba kernels release the GIL, so the threads run in parallel without handing the
    tile between two thread pools (measured: that hand-off cost more than the tiling saved)."""
    from concurrent.futures import ThreadPoolExecutor

    Q = q.shape[0]
    V = tab.shape[0]
    T = thr_lo.shape[1]
    rows = max(1, min(TILE_ROWS, block_size, Q))
    chunk = vocab_chunk or max(64, (TILE_BYTES // 4 // rows) // 16 * 16)
    chunk = max(1, min(chunk, V))
    weights_t = torch.from_numpy(tab.weights)
    starts = list(range(0, Q, rows))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(starts), desc="ε-ball stats", unit="tile-row")

    def run(s: int) -> None:
        e = min(Q, s + rows)
        n = e - s
        tile = np.empty(n * chunk, np.float32)
        qt = torch.from_numpy(q[s:e])
        cx = np.full((n, kk), FLT_MAX, np.float32)
        ci = np.full((n, kk), -1, np.int64)
        c_lo = np.zeros((n, T), np.int64)
        band_ids = np.empty((n, T, BAND_SLOTS), np.int64)
        band_n = np.zeros((n, T), np.int64)
        for j0 in range(0, V, chunk):
            c = min(V, j0 + chunk) - j0
            G = tile[: n * c].reshape(n, c)  # contiguous whatever c is
            torch.mm(qt, weights_t[j0 : j0 + c].T, out=torch.from_numpy(G))
            _kernels.scan_chunk(G, j0, tab.sq_norms[j0 : j0 + c], anchors[s:e], thr_lo[s:e], thr_hi[s:e],
                                cx, ci, c_lo, band_ids, band_n)
        _kernels.finish_rows(q[s:e], tab.weights, qn[s:e], anchors[s:e], tol[s:e], target[s:e], k, cx, ci,
                             c_lo, band_ids, band_n, out_ids[s:e], out_d2[s:e], counts[s:e])
        if bar is not None:
            bar.update(1)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run, starts))
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()

