"""`vw bench eps-stats`: ε-ball statistics for 24,000 vectors against a 49,408 × 768 token table (the size of
DFN CLIP's table), against the bare BLAS product on the same data, in the same run.

Ours = the whole `eps_ball_stats` call (one thread per core, each computing fp32 GEMM tiles of 256 queries × 2,048
tokens and reducing each with the fused Numba pass while it is in cache: top-5, the anchor's rank, 2 ball counts,
fp64 resolution of every undecided token). Baselines: the blocked torch.mm alone (1,024 queries × all tokens per
call, all cores, into a preallocated buffer: what any distance-based statistic must at least pay; `ratio`), and
the very same tiles as ours with nothing done to them (`ratio_vs_tiled_gemm`, the strictest: it isolates the
reduction's own cost, since tiles that stay in cache also make the product itself cheaper than writing 200 MB
blocks to memory). All three are interleaved chunk by
chunk (order alternating) so that load from other processes on a shared machine hits both alike.
Goal: ratio ≤ 1.15.

    vw bench eps-stats                          # CPU: Numba path vs torch.mm on the CPU (~2-4 min on 2 cores)
    VW_BENCH_DEVICE=cuda vw bench eps-stats     # GPU: the torch path (what `vw analyze` runs on a GPU) vs the
                                                # same blocked fp32 product on the GPU (TF32 off, as the path uses)
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from visual_words.eps_ball.search import eps_ball_stats, prepare_table
from visual_words.models.token_table import TokenTable

V, D, Q = 49_408, 768, 24_000
BLOCK = 1024  # analyze.block_size
CHUNK = 4096  # queries per interleaved timing chunk (4 blocks: amortises the workspace allocation)
K = 5  # analyze.nearest_k


def make_data(seed: int = 0):
    """A CLIP-like table (token norms vary) and trained-like vectors: on, inside, at and beyond their anchor's
    ε-ball, plus a quarter far from the anchor as transferred vectors are."""
    rng = np.random.default_rng(seed)
    table = (rng.standard_normal((V, D), dtype=np.float32) * 0.015
             * rng.lognormal(0, 0.25, (V, 1)).astype(np.float32))
    anchors = rng.integers(0, V, Q)
    dnn_scale = float(np.median(TokenTable(table).d_nn(anchors[:256])))  # typical d_nn
    rel = rng.choice(np.array([0.1, 0.2, 0.5, 1.0, 3.0]), Q)
    direction = rng.standard_normal((Q, D), dtype=np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    queries = table[anchors] + direction * (rel * dnn_scale)[:, None].astype(np.float32)
    far = rng.random(Q) < 0.25
    queries[far] = rng.standard_normal((int(far.sum()), D), dtype=np.float32) * 0.015
    radii = np.stack([rel * dnn_scale, np.full(Q, dnn_scale)], axis=1)
    return table, anchors, np.ascontiguousarray(queries), radii


def test_eps_stats(benchmark, report_ratio):
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device(os.environ.get("VW_BENCH_DEVICE", "cpu"))
    backend = "torch" if device.type == "cuda" else "numba"
    torch.backends.cuda.matmul.allow_tf32 = False
    table, anchors, queries, radii = make_data()
    tab = prepare_table(table)
    weights = torch.from_numpy(tab.weights).to(device)
    buf = torch.empty(BLOCK, V, device=device)
    # load the Numba kernels (cache=True) / warm the GPU
    eps_ball_stats(queries[:8], anchors[:8], tab, radii[:8], k=K, backend=backend)

    def bare(s, e):
        for b in range(s, e, BLOCK):
            c = min(e, b + BLOCK)
            torch.mm(torch.from_numpy(queries[b:c]).to(device), weights.T, out=buf[: c - b])
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare_tiled(s, e):
        """The strictest baseline: the very GEMM tiles ours computes (one thread per core, each tile in cache), with
        nothing done to them."""
        from concurrent.futures import ThreadPoolExecutor

        from visual_words.eps_ball.search import TILE_BYTES, TILE_ROWS

        rows = TILE_ROWS
        chunk = max(64, (TILE_BYTES // 4 // rows) // 16 * 16)

        def run(b):
            c_end = min(e, b + rows)
            qt = torch.from_numpy(queries[b:c_end])
            tile = torch.empty((c_end - b) * chunk)
            for j0 in range(0, V, chunk):
                c = min(V, j0 + chunk) - j0
                torch.mm(qt, weights[j0 : j0 + c].T, out=tile[: (c_end - b) * c].view(c_end - b, c))

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(run, range(s, e, rows)))
        finally:
            torch.set_num_threads(threads)

    def ours(s, e):
        return eps_ball_stats(queries[s:e], anchors[s:e], tab, radii[s:e], k=K, block_size=BLOCK, backend=backend)

    times = {"stats": 0.0, "bare": 0.0, "bare_tiled": 0.0}
    snapped = []
    order = ("bare", "stats") if device.type == "cuda" else ("bare", "bare_tiled", "stats")

    def run():
        for n, s in enumerate(range(0, Q, CHUNK)):
            e = min(Q, s + CHUNK)
            for which in (order if n % 2 == 0 else order[::-1]):
                t = time.perf_counter()
                if which == "bare":
                    bare(s, e)
                elif which == "bare_tiled":
                    bare_tiled(s, e)
                else:
                    snapped.append(ours(s, e)["nearest_is_anchor"])
                times[which] += time.perf_counter() - t

    benchmark.pedantic(run, rounds=1, iterations=1)
    snapped = np.concatenate(snapped)
    assert snapped.shape == (Q,)
    tiled = {"ratio_vs_tiled_gemm": times["stats"] / times["bare_tiled"], "bare_tiled_s": times["bare_tiled"]} \
        if times["bare_tiled"] else {}
    report_ratio("eps-stats", times["stats"] / times["bare"], stats_s=times["stats"], bare_s=times["bare"], **tiled,
                 queries=Q, vocab=V, dim=D, k=K, radii=radii.shape[1], threads=torch.get_num_threads(),
                 device=str(device), load_avg=round(os.getloadavg()[0], 1),
                 snapped_share=float(snapped.mean()))
