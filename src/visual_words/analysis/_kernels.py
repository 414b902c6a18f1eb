"""Numba kernels behind `eps_ball.eps_ball_stats`: one fused, parallel pass over a block of GEMM output.

The block `G[i, j] = q_i · w_j` comes from BLAS (fp32). For each query row the kernel
  1. keeps the `kk` smallest x_j = |w_j|² − 2 q_i·w_j (= d²(q_i, w_j) − |q_i|², so the ordering is the distance
     ordering) — a scalar loop whose insertion branch is almost never taken;
  2. counts, per threshold t, how many x_j fall below its lower band edge and at or below its upper band edge —
     branch-free loops LLVM vectorises, four thresholds per pass;
  3. resolves everything the fp32 product cannot decide on its own in fp64: the top-k by exact distance, and every
     token whose x lies inside a threshold's error band (|x_fp32 − x_exact| ≤ tol, a rigorous bound computed by the
     caller), by recomputing Σ(q − w)² in fp64 from the fp32 inputs. Rows whose band holds more than the one token
     we know about (the anchor) are rescanned; that is rare, because the band is narrow.

No fastmath: the thresholds may be ±FLT_MAX and we rely on IEEE comparisons; the count loops vectorise without it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


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


@njit(cache=True, inline="always")
def _put(c_lo, c_hi, t, T, a, b):
    if t < T:
        c_lo[t] = a
        c_hi[t] = b


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


@njit(parallel=True, cache=True)
def scan_block(G, tn, queries, table, qn, anchors, tol, thr_lo, thr_hi, target_d2, k, kk,
               out_ids, out_d2, out_counts):
    """One block of queries. Shapes: G [n, V] fp32; tn [V] fp32 (|w|²); queries [n, d] fp32; table [V, d] fp32;
    qn [n] fp64 (|q|²); anchors [n] int64; tol [n] fp64; thr_lo / thr_hi [n, T] fp32 (band edges in x units).
    Threshold 0 is the anchor's own distance: it counts the *other* tokens strictly closer than the anchor (the
    rank), against the anchor's fp64 distance computed here, so the anchor is never compared with a differently
    rounded copy of itself. Thresholds t ≥ 1 are radii: they count tokens with d² ≤ target_d2[:, t − 1] (fp64).
    Writes out_ids [n, k] int64, out_d2 [n, k] fp64 (exact squared distances), out_counts [n, T] int64."""
    n, V = G.shape
    T = thr_lo.shape[1]
    big = np.float32(3.4028234663852886e38)
    for i in prange(n):
        g = G[i]
        q = queries[i]
        a = anchors[i]

        # 1. approximate top-kk (the branch is taken ~kk·log(V) times per row)
        cx = np.full(kk, big, np.float32)
        ci = np.full(kk, -1, np.int64)
        worst = big
        for j in range(V):
            x = tn[j] - np.float32(2.0) * g[j]
            if x < worst:
                p = kk - 1
                while p > 0 and cx[p - 1] > x:
                    cx[p] = cx[p - 1]
                    ci[p] = ci[p - 1]
                    p -= 1
                cx[p] = x
                ci[p] = j
                worst = cx[kk - 1]

        # 2. band counts, four thresholds per pass over the row (vectorised; unused slots compare against -FLT_MAX)
        c_lo = np.zeros(T, np.int64)
        c_hi = np.zeros(T, np.int64)
        for t0 in range(0, T, 4):
            l0, h0 = _edges(thr_lo, thr_hi, i, t0, T)
            l1, h1 = _edges(thr_lo, thr_hi, i, t0 + 1, T)
            l2, h2 = _edges(thr_lo, thr_hi, i, t0 + 2, T)
            l3, h3 = _edges(thr_lo, thr_hi, i, t0 + 3, T)
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0
            for j in range(V):
                x = tn[j] - np.float32(2.0) * g[j]
                a0 += x < l0
                b0 += x <= h0
                a1 += x < l1
                b1 += x <= h1
                a2 += x < l2
                b2 += x <= h2
                a3 += x < l3
                b3 += x <= h3
            _put(c_lo, c_hi, t0, T, a0, b0)
            _put(c_lo, c_hi, t0 + 1, T, a1, b1)
            _put(c_lo, c_hi, t0 + 2, T, a2, b2)
            _put(c_lo, c_hi, t0 + 3, T, a3, b3)

        # 3a. thresholds: decide the band in fp64. The anchor is the one band member we can resolve without a scan.
        xa = tn[a] - np.float32(2.0) * g[a]
        d2a = _exact_d2(q, table[a])
        need_scan = False
        for t in range(T):
            band = c_hi[t] - c_lo[t]
            if band == 0:
                out_counts[i, t] = c_lo[t]
            elif band == 1 and xa >= thr_lo[i, t] and xa <= thr_hi[i, t]:
                # the anchor is the band's only token; for the rank it never counts (not closer than itself)
                inside = False if t == 0 else d2a <= target_d2[i, t - 1]
                out_counts[i, t] = c_lo[t] + (1 if inside else 0)
            else:
                need_scan = True
                out_counts[i, t] = -1
        if need_scan:  # one cheap pass per undecided threshold; the branch is taken only for band tokens
            for t in range(T):
                if out_counts[i, t] >= 0:
                    continue
                lo = thr_lo[i, t]
                hi = thr_hi[i, t]
                # `lo <= x <= hi` as written branches on `x >= lo`, a coin flip when the threshold sits mid-table
                # (a far vector's anchor rank is in the thousands); one compare against a slightly wider window is
                # predictable, and the exact test runs only inside it.
                mid = np.float32(0.5) * lo + np.float32(0.5) * hi
                half = (np.float32(0.5) * hi - np.float32(0.5) * lo) * np.float32(1.001) \
                    + np.float32(4.8e-7) * max(abs(lo), abs(hi)) + np.float32(1e-30)  # + 8 ulp: rounding of mid, x − mid
                extra = 0
                for j in range(V):
                    x = tn[j] - np.float32(2.0) * g[j]
                    if abs(x - mid) <= half and x >= lo and x <= hi:
                        if t == 0:
                            if j != a and _exact_d2(q, table[j]) < d2a:
                                extra += 1
                        elif (d2a if j == a else _exact_d2(q, table[j])) <= target_d2[i, t - 1]:
                            extra += 1
                out_counts[i, t] = c_lo[t] + extra

        # 3b. exact top-k: re-rank the kk candidates in fp64; every token left out has x ≥ worst, so its exact
        # x is ≥ worst − tol. If the k-th exact candidate is below that, the top-k is certain; else rescan.
        ed = np.empty(kk, np.float64)
        for p in range(kk):
            ed[p] = _exact_d2(q, table[ci[p]])
        _sort_pairs(ed, ci, kk)
        certain = kk == V or (ed[k - 1] - qn[i]) < (np.float64(worst) - tol[i])
        if certain:
            for p in range(k):
                out_ids[i, p] = ci[p]
                out_d2[i, p] = ed[p]
        else:
            lim64 = ed[k - 1] - qn[i] + tol[i]
            limit = np.float32(lim64 + abs(lim64) * 1e-6 + 1e-30)  # rounded outward to fp32
            m = 0
            for j in range(V):
                if tn[j] - np.float32(2.0) * g[j] <= limit:
                    m += 1
            fd = np.empty(m, np.float64)
            fi = np.empty(m, np.int64)
            m = 0
            for j in range(V):
                if tn[j] - np.float32(2.0) * g[j] <= limit:
                    fd[m] = _exact_d2(q, table[j])
                    fi[m] = j
                    m += 1
            order = np.argsort(fd, kind="mergesort")  # stable: ties keep id order (fi is increasing)
            for p in range(k):
                out_ids[i, p] = fi[order[p]]
                out_d2[i, p] = fd[order[p]]
