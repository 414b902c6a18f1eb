"""The ε-ball statistics' decisions as torch ops: what `eps_ball_stats(backend="torch")` runs, on a GPU by default.

The same algorithm as the Numba kernels (analysis._kernels), step for step, so the results are the same ids, ranks
and counts: x = |w|² − 2 q·w from one fp32 product per block (TF32 off: the error bound assumes fp32 products),
the approximate top-(k + 4) by `torch.topk`, counts below each threshold's lower band edge, every band token
decided in fp64 from the fp32 inputs, the top-k re-ranked in fp64 and certain when the k-th exact candidate is below
every left-out token's bound, else the whole row in fp64. The thresholds, bounds and |w|² come from the caller
(eps_ball.eps_ball_stats), computed once on the CPU for both paths.
"""

from __future__ import annotations

import torch

MAX_BAND_PAIRS = 1 << 20  # (query, token) band pairs resolved per fp64 batch


def _exact(q64: torch.Tensor, w64: torch.Tensor) -> torch.Tensor:
    """Σ (q − w)² per row pair in fp64 (the inputs are fp32 values widened), summed in exactly the order of the
    Numba kernel's `_exact_d2` (four running partial sums over positions t mod 4, then (s0 + s1) + (s2 + s3)), so
    both paths round alike and decide a token lying on a ball's rim the same way."""
    diff = q64 - w64
    sq = diff * diff
    d = sq.shape[-1]
    m = d - d % 4
    quads = sq[..., :m].unflatten(-1, (m // 4, 4))
    acc = torch.zeros(sq.shape[:-1] + (4,), dtype=sq.dtype, device=sq.device)
    for t in range(m // 4):
        acc += quads[..., t, :]
    s0 = acc[..., 0]
    for t in range(m, d):
        s0 = s0 + sq[..., t]
    return (s0 + acc[..., 1]) + (acc[..., 2] + acc[..., 3])


def scan_torch(q, anchors, tab, qn, tol, thr_lo, thr_hi, target, k, kk, out_ids, out_d2, counts, *,
               block_size: int = 1024, device: str | None = None, progress: bool = False) -> None:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    V = tab.shape[0]
    T = thr_lo.shape[1]
    w32 = torch.from_numpy(tab.weights).to(dev)
    w64 = w32.double()
    tn = torch.from_numpy(tab.sq_norms).to(dev)
    starts = range(0, q.shape[0], max(1, block_size))
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="ε-ball stats (torch)", unit="block")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            for s in starts:
                e = min(q.shape[0], s + block_size)
                qb = torch.from_numpy(q[s:e]).to(dev)
                q64 = qb.double()
                a = torch.from_numpy(anchors[s:e]).to(dev)
                lo = torch.from_numpy(thr_lo[s:e]).to(dev)
                hi = torch.from_numpy(thr_hi[s:e]).to(dev)
                tgt = torch.from_numpy(target[s:e]).to(dev)
                x = tn[None] - 2.0 * (qb @ w32.T)  # [n, V] fp32, the same rounding as the CPU path's x
                d2a = _exact(q64, w64[a])
                n = e - s
                full: dict[int, torch.Tensor] = {}

                def exact_row(i: int) -> torch.Tensor:
                    if i not in full:
                        full[i] = _exact(q64[i][None], w64)
                    return full[i]

                c = torch.empty(n, T, dtype=torch.int64, device=dev)
                for t in range(T):
                    c_lo = (x < lo[:, t : t + 1]).sum(1)
                    rows, cols = torch.nonzero((x >= lo[:, t : t + 1]) & (x <= hi[:, t : t + 1]), as_tuple=True)
                    extra = torch.zeros(n, dtype=torch.int64, device=dev)
                    for b in range(0, rows.numel(), MAX_BAND_PAIRS):
                        r, j = rows[b : b + MAX_BAND_PAIRS], cols[b : b + MAX_BAND_PAIRS]
                        d2 = torch.where(j == a[r], d2a[r], _exact(q64[r], w64[j]))
                        inside = ((j != a[r]) & (d2 < d2a[r])) if t == 0 else d2 <= tgt[r, t - 1]
                        extra.index_add_(0, r, inside.long())
                    c[:, t] = c_lo + extra
                # top-k: candidates re-ranked exactly (ties by id), certain unless a left-out token could beat them
                cx, ci = torch.topk(x, kk, dim=1, largest=False, sorted=True)
                worst = cx[:, -1].double()
                key = torch.sort(ci, dim=1).values  # ids ascending, then a stable sort by distance keeps id order
                ed_by_id = _exact(q64[:, None, :], w64[key])
                order = torch.sort(ed_by_id, dim=1, stable=True).indices
                ids = torch.gather(key, 1, order)
                ed = torch.gather(ed_by_id, 1, order)
                qn_t = torch.from_numpy(qn[s:e]).to(dev)
                tol_t = torch.from_numpy(tol[s:e]).to(dev)
                certain = (ed[:, k - 1] - qn_t) < (worst - tol_t) if kk < V else torch.ones(n, dtype=torch.bool,
                                                                                          device=dev)
                res_ids, res_d2 = ids[:, :k].clone(), ed[:, :k].clone()
                for i in torch.nonzero(~certain).flatten().tolist():
                    row = exact_row(i)
                    o = torch.sort(row, stable=True).indices[:k]
                    res_ids[i], res_d2[i] = o, row[o]
                out_ids[s:e] = res_ids.cpu().numpy()
                out_d2[s:e] = res_d2.cpu().numpy()
                counts[s:e] = c.cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
