"""Numba kernels behind `eps_ball.search.eps_ball_stats`: fused passes over the GEMM's output while it is in cache.

The product `G[i, j] = q_i · w_j` comes from BLAS (fp32) one cache-sized tile at a time (256 queries × 2,048
tokens, 2 MB; each worker thread computes and reduces its own tiles: search._scan_numba), and `scan_chunk` reduces
each tile right after BLAS wrote it — no [queries × 49,408] block ever goes to memory and back. Both kernels are
serial and release the GIL. Per query row the kernel carries, across the chunks of its row:
  1. the `kk` smallest x_j = |w_j|² − 2 q_i·w_j (= d²(q_i, w_j) − |q_i|², so the ordering is the distance
     ordering) — a scalar loop whose insertion branch is almost never taken;
  2. per threshold t, how many x_j fall below its lower band edge (certainly inside), counted branch-free, four
     thresholds per pass (LLVM vectorises it); and the ids of the few tokens inside a threshold's error band
     (|x_fp32 − x_exact| ≤ tol, a rigorous bound computed by the caller): the anchor is recorded without a scan,
     anything else by one scalar pass over that chunk, still in cache. A band is almost always empty or the anchor.
`finish_rows` then decides everything fp32 cannot, in fp64 from the fp32 inputs: each band token against its
threshold, the top-k by exact distance (the kk candidates re-ranked; certain when the k-th exact candidate is below
every left-out token's bound), and — for the rare row whose band overflowed its buffer or whose top-k is not certain
— the whole row's exact distances.

No fastmath: the thresholds may be ±FLT_MAX and we rely on IEEE comparisons; the count loops vectorise without it.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _exact_d2(q, w):
    """Σ (q − w)² in fp64 from fp32 inputs. Four independent partial sums: one dependent chain of fp64 adds is
    latency-bound (~4 cycles each), and band rows need this for dozens of tokens."""
    n = q.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m = n - n % 4
    for t in range(0, m, 4):
        d0 = np.float64(q[t]) - np.float64(w[t])
        d1 = np.float64(q[t + 1]) - np.float64(w[t + 1])
        d2 = np.float64(q[t + 2]) - np.float64(w[t + 2])
        d3 = np.float64(q[t + 3]) - np.float64(w[t + 3])
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
    for t in range(m, n):
        d0 = np.float64(q[t]) - np.float64(w[t])
        s0 += d0 * d0
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, inline="always")
def _edges(thr_lo, thr_hi, i, t, T):
    if t < T:
        return thr_lo[i, t], thr_hi[i, t]
    none = np.float32(-3.4028234663852886e38)
    return none, none


@njit(cache=True)
def _sort_pairs(d2, ids, n):
    """Insertion sort of the first n (d2, id) pairs by distance, then id (the fp64 reference's stable order)."""
    for a in range(1, n):
        dv = d2[a]
        iv = ids[a]
        b = a - 1
        while b >= 0 and (d2[b] > dv or (d2[b] == dv and ids[b] > iv)):
            d2[b + 1] = d2[b]
            ids[b + 1] = ids[b]
            b -= 1
        d2[b + 1] = dv
        ids[b + 1] = iv


@njit(cache=True, nogil=True)
def scan_chunk(G, j0, tn, anchors, thr_lo, thr_hi, cx, ci, c_lo, band_ids, band_n):
    """One tile: queries block × tokens j0 … j0 + c − 1. Shapes: G [n, c] fp32 (the tile of q·w); tn [c] fp32 (|w|²
    of the chunk); anchors [n] int64; thr_lo / thr_hi [n, T] fp32 (band edges in x units). Running state, updated
    in place: cx [n, kk] fp32 / ci [n, kk] int64 (approximate top-kk, sorted), c_lo [n, T] int64 (tokens with
    x < lo), band_ids [n, T, B] int64 and band_n [n, T] int64 (band tokens seen; > B means the buffer overflowed)."""
    n, c = G.shape
    T = thr_lo.shape[1]
    kk = cx.shape[1]
    B = band_ids.shape[2]
    for i in range(n):  # serial: each worker thread runs its own rows (search._scan_numba)
        g = G[i]
        a = anchors[i]

        # 1. approximate top-kk (the branch is taken ~kk·log(V) times per row over the whole vocabulary)
        worst = cx[i, kk - 1]
        for j in range(c):
            x = tn[j] - np.float32(2.0) * g[j]
            if x < worst:
                p = kk - 1
                while p > 0 and cx[i, p - 1] > x:
                    cx[i, p] = cx[i, p - 1]
                    ci[i, p] = ci[i, p - 1]
                    p -= 1
                cx[i, p] = x
                ci[i, p] = j0 + j
                worst = cx[i, kk - 1]

        # 2. band counts, four thresholds per pass (vectorised; unused slots compare against -FLT_MAX)
        c_band = np.zeros(T, np.int64)
        for t0 in range(0, T, 4):
            l0, h0 = _edges(thr_lo, thr_hi, i, t0, T)
            l1, h1 = _edges(thr_lo, thr_hi, i, t0 + 1, T)
            l2, h2 = _edges(thr_lo, thr_hi, i, t0 + 2, T)
            l3, h3 = _edges(thr_lo, thr_hi, i, t0 + 3, T)
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0
            for j in range(c):
                x = tn[j] - np.float32(2.0) * g[j]
                a0 += x < l0
                b0 += x <= h0
                a1 += x < l1
                b1 += x <= h1
                a2 += x < l2
                b2 += x <= h2
                a3 += x < l3
                b3 += x <= h3
            _accumulate(c_lo[i], c_band, t0, T, a0, b0 - a0)
            _accumulate(c_lo[i], c_band, t0 + 1, T, a1, b1 - a1)
            _accumulate(c_lo[i], c_band, t0 + 2, T, a2, b2 - a2)
            _accumulate(c_lo[i], c_band, t0 + 3, T, a3, b3 - a3)

        # 2b. record the band's tokens (rare): the anchor without a scan, anything else by one pass over the tile
        for t in range(T):
            m = c_band[t]
            if m == 0:
                continue
            lo = thr_lo[i, t]
            hi = thr_hi[i, t]
            if m == 1 and j0 <= a < j0 + c:
                xa = tn[a - j0] - np.float32(2.0) * g[a - j0]
                if xa >= lo and xa <= hi:
                    _record(band_ids, band_n, i, t, B, a)
                    continue
            for j in range(c):
                x = tn[j] - np.float32(2.0) * g[j]
                if x >= lo and x <= hi:
                    _record(band_ids, band_n, i, t, B, j0 + j)


@njit(cache=True, inline="always")
def _accumulate(c_lo_row, c_band, t, T, a, b):
    if t < T:
        c_lo_row[t] += a
        c_band[t] = b


@njit(cache=True, inline="always")
def _record(band_ids, band_n, i, t, B, j):
    m = band_n[i, t]
    if m < B:
        band_ids[i, t, m] = j
    band_n[i, t] = m + 1


@njit(cache=True)
def _exact_row(q, table):
    V = table.shape[0]
    out = np.empty(V, np.float64)
    for j in range(V):
        out[j] = _exact_d2(q, table[j])
    return out


@njit(cache=True, nogil=True)
def finish_rows(queries, table, qn, anchors, tol, target_d2, k, cx, ci, c_lo, band_ids, band_n,
                out_ids, out_d2, out_counts):
    """Decide in fp64 what the tiles left open. Threshold 0 is the anchor's own distance: it counts the *other*
    tokens strictly closer than the anchor (the rank), against the anchor's fp64 distance computed here, so the
    anchor is never compared with a differently rounded copy of itself. Thresholds t ≥ 1 are radii: they count
    tokens with d² ≤ target_d2[:, t − 1] (fp64). Writes out_ids [n, k] int64, out_d2 [n, k] fp64 (exact squared
    distances), out_counts [n, T] int64."""
    n = queries.shape[0]
    V = table.shape[0]
    T = c_lo.shape[1]
    kk = cx.shape[1]
    B = band_ids.shape[2]
    for i in range(n):
        q = queries[i]
        a = anchors[i]
        d2a = _exact_d2(q, table[a])
        full = np.empty(0, np.float64)  # the whole row in fp64, computed only when needed

        # thresholds
        for t in range(T):
            m = band_n[i, t]
            extra = 0
            if m <= B:
                for p in range(m):
                    j = band_ids[i, t, p]
                    if t == 0:
                        if j != a and _exact_d2(q, table[j]) < d2a:
                            extra += 1
                    elif (d2a if j == a else _exact_d2(q, table[j])) <= target_d2[i, t - 1]:
                        extra += 1
                out_counts[i, t] = c_lo[i, t] + extra
            else:  # a crowded band: count the whole row exactly
                if full.shape[0] == 0:
                    full = _exact_row(q, table)
                cnt = 0
                for j in range(V):
                    if t == 0:
                        if j != a and full[j] < d2a:
                            cnt += 1
                    elif (d2a if j == a else full[j]) <= target_d2[i, t - 1]:
                        cnt += 1
                out_counts[i, t] = cnt

        # exact top-k: re-rank the kk candidates in fp64; every token left out has x ≥ worst, so its exact x is
        # ≥ worst − tol. If the k-th exact candidate is below that, the top-k is certain; else the whole row.
        worst = cx[i, kk - 1]
        ids = ci[i].copy()
        ed = np.empty(kk, np.float64)
        for p in range(kk):
            ed[p] = _exact_d2(q, table[ids[p]])
        _sort_pairs(ed, ids, kk)
        if kk == V or (ed[k - 1] - qn[i]) < (np.float64(worst) - tol[i]):
            for p in range(k):
                out_ids[i, p] = ids[p]
                out_d2[i, p] = ed[p]
        else:
            if full.shape[0] == 0:
                full = _exact_row(q, table)
            order = np.argsort(full, kind="mergesort")  # stable: ties keep id order
            for p in range(k):
                out_ids[i, p] = order[p]
                out_d2[i, p] = full[order[p]]
