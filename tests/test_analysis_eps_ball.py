"""ε-ball statistics against a plain fp64 NumPy reference.

Indices and ranks must be equal exactly. Distances agree to 1e-12 relative (fp64 summation order). Counts agree
exactly except for tokens whose squared distance lies within 1e-9 (relative) of the squared radius — points on the
ball's edge, where the rounding of the radius itself decides — and there ours must lie between the counts that
exclude and include every such edge point.
"""

from __future__ import annotations

import numpy as np
import pytest

from visual_words.eps_ball.search import eps_ball_stats, prepare_table
from visual_words.models.token_table import TokenTable

EDGE_REL = 1e-9


def reference(q, anchors, table, radii, k):
    q64, t64 = q.astype(np.float64), table.astype(np.float64)
    d2 = ((q64[:, None, :] - t64[None, :, :]) ** 2).sum(-1)
    n = np.arange(len(q))
    d2a = d2[n, anchors]
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    r2 = np.asarray(radii, dtype=np.float64) ** 2
    inside = d2[:, :, None] <= r2[:, None, :]
    low = (d2[:, :, None] <= r2[:, None, :] * (1 - EDGE_REL)).sum(1)
    high = (d2[:, :, None] <= r2[:, None, :] * (1 + EDGE_REL)).sum(1)
    a64 = t64[anchors]
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero vector has no cosine (nan, as ours)
        cos = (q64 * a64).sum(1) / np.linalg.norm(q64, axis=1) / np.linalg.norm(a64, axis=1)
    return {
        "nearest_ids": order,
        "nearest_dists": np.sqrt(np.take_along_axis(d2, order, 1)),
        "anchor_rank": (d2 < d2a[:, None]).sum(1),
        "dist_anchor": np.sqrt(d2a),
        "cos_anchor": cos,
        "counts": inside.sum(1), "counts_low": low, "counts_high": high,
    }


def check(ours, ref):
    np.testing.assert_array_equal(ours["nearest_ids"], ref["nearest_ids"])
    np.testing.assert_array_equal(ours["anchor_rank"], ref["anchor_rank"])
    np.testing.assert_array_equal(ours["nearest_is_anchor"], ref["anchor_rank"] == 0)
    np.testing.assert_allclose(ours["nearest_dists"], ref["nearest_dists"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours["dist_anchor"], ref["dist_anchor"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours["cos_anchor"], ref["cos_anchor"], rtol=1e-12, atol=1e-12)
    c = ours["counts"]
    assert ((ref["counts_low"] <= c) & (c <= ref["counts_high"])).all()
    sure = ref["counts_low"] == ref["counts_high"]
    np.testing.assert_array_equal(c[sure], ref["counts"][sure])


def random_case(seed, V=1500, d=48, Q=300):
    rng = np.random.default_rng(seed)
    table = (rng.standard_normal((V, d)) * rng.lognormal(0, 0.3, (V, 1))).astype(np.float32)
    anchors = rng.integers(0, V, Q)
    dnn = TokenTable(table).d_nn(anchors)
    direction = rng.standard_normal((Q, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    rel = rng.choice([0.0, 0.1, 0.5, 1.0, 2.0], Q)  # on the anchor, inside, at, beyond the ε-ball
    q = (table[anchors] + direction * (rel * dnn)[:, None]).astype(np.float32)
    far = Q // 10
    q[-far:] = rng.standard_normal((far, d)) * 3  # far away, like a transferred vector
    # radii: each vector's own ε-ball (δ·d_nn; its anchor sits on the rim), d_nn, a wide ball and an infinite one
    radii = np.stack([rel * dnn, dnn, 5 * dnn, np.full(Q, np.inf)], axis=1)
    return table, anchors, q, radii


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_fp64_reference_on_random_tables(seed):
    table, anchors, q, radii = random_case(seed)
    ours = eps_ball_stats(q, anchors, table, radii, k=5, block_size=64)
    check(ours, reference(q, anchors, table, radii, k=5))
    assert (ours["counts"][:, 3] == len(table)).all()  # an infinite ball holds every token
    at_anchor = np.linalg.norm(q - table[anchors], axis=1) == 0
    assert at_anchor.any() and (ours["anchor_rank"][at_anchor] == 0).all()


def test_block_size_does_not_change_results():
    table, anchors, q, radii = random_case(2, Q=50)
    a = eps_ball_stats(q, anchors, table, radii, k=3, block_size=1)
    b = eps_ball_stats(q, anchors, table, radii, k=3, block_size=7)
    c = eps_ball_stats(q, anchors, prepare_table(table), radii, k=3, block_size=1000)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(a[key], c[key])


def test_crowded_shell_forces_fp64_resolution():
    """Hundreds of tokens at almost the same distance (differences far below fp32 resolution): the fp32 product
    cannot order them, so ranks, counts and the top-k must come from the fp64 rescans."""
    rng = np.random.default_rng(3)
    V, d = 400, 32
    u = rng.standard_normal((V, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    centre = rng.standard_normal(d)
    table = (centre + u * (1 + rng.uniform(-1e-6, 1e-6, (V, 1)))).astype(np.float32)
    q = np.repeat(centre[None].astype(np.float32), 8, axis=0)
    anchors = rng.integers(0, V, 8)
    exact = np.sqrt(((q[:1].astype(np.float64) - table.astype(np.float64)) ** 2).sum(1))
    radii = np.tile(np.median(exact), (8, 1))  # half the shell inside
    ours = eps_ball_stats(q, anchors, table, radii, k=6)
    ref = reference(q, anchors, table, radii, k=6)
    check(ours, ref)
    assert 0 < ref["anchor_rank"].max() and ref["counts"].min() > 100


def test_duplicate_tokens_tie_by_id_and_d_nn_zero():
    rng = np.random.default_rng(4)
    table = rng.standard_normal((200, 16)).astype(np.float32)
    table[150] = table[20]  # an exact duplicate
    q = table[[20, 150, 7]] + np.float32(1e-3)
    ours = eps_ball_stats(q, [150, 20, 7], table, k=2)
    check(ours | {"counts": np.zeros((3, 0))},
          reference(q, np.array([150, 20, 7]), table, np.zeros((3, 0)), k=2) | {"counts": np.zeros((3, 0))})
    assert list(ours["nearest_ids"][0]) == [20, 150]  # equal distances: lower id first
    assert ours["anchor_rank"][0] == 0 and ours["anchor_rank"][1] == 0  # a tie is not "closer"
    dnn = TokenTable(table).d_nn([20, 150, 7])
    assert dnn[0] == 0 and dnn[1] == 0 and dnn[2] > 0


def test_d_nn_equals_reference():
    rng = np.random.default_rng(5)
    table = rng.standard_normal((700, 24)).astype(np.float32)
    ids = np.arange(0, 700, 7)
    t64 = table.astype(np.float64)
    d2 = ((t64[ids, None] - t64[None]) ** 2).sum(-1)
    d2[np.arange(len(ids)), ids] = np.inf
    np.testing.assert_allclose(TokenTable(table).d_nn(ids), np.sqrt(d2.min(1)), rtol=1e-12)


def test_accepts_torch_tensors():
    import torch

    table, anchors, q, radii = random_case(6, Q=20)
    a = eps_ball_stats(torch.from_numpy(q), torch.from_numpy(anchors), torch.from_numpy(table).double(), radii[:, 1])
    b = eps_ball_stats(q, anchors, table, radii[:, 1:2])
    np.testing.assert_array_equal(a["nearest_ids"], b["nearest_ids"])
    np.testing.assert_array_equal(a["counts"], b["counts"])


@pytest.mark.parametrize("bad, message", [
    (dict(q=np.zeros((3, 5), np.float32)), "queries must be"),
    (dict(anchors=[0, 1]), "anchor_ids has 2 entries"),
    (dict(anchors=[0, 1, 99]), "anchor_ids must lie in"),
    (dict(radii=[1.0, -1.0, 1.0]), "radii must be"),
    (dict(radii=[1.0, np.nan, 1.0]), "radii must be"),
    (dict(q=np.full((3, 4), np.nan, np.float32)), "NaN"),
    (dict(k=11), "k must be"),
])
def test_bad_input_is_a_clear_error(bad, message):
    table = np.eye(10, 4, dtype=np.float32)
    args = dict(q=np.zeros((3, 4), np.float32), anchors=[0, 1, 2], radii=None, k=1) | bad
    with pytest.raises(ValueError, match=message):
        eps_ball_stats(args["q"], args["anchors"], table, args["radii"], k=args["k"])


def test_exact_ties_tiny_tables_and_large_norms():
    """Integer-valued vectors: many distances tie exactly (ids must then follow the reference's stable order, a tie
    is not "closer", a token exactly on an integer radius is inside); tables smaller than k + 4; huge queries."""
    for seed in range(60):
        rng = np.random.default_rng(seed)
        V, d, Q = int(rng.integers(2, 40)), int(rng.integers(1, 6)), int(rng.integers(1, 20))
        table = rng.integers(-3, 4, (V, d)).astype(np.float32)
        anchors = rng.integers(0, V, Q)
        q = rng.integers(-3, 4, (Q, d)).astype(np.float32) * np.float32(1000 if seed % 3 == 0 else 1)
        radii = rng.integers(0, 5, (Q, 2)).astype(np.float64)
        k = int(rng.integers(1, V + 1))
        ours = eps_ball_stats(q, anchors, table, radii, k=k, block_size=int(rng.integers(1, 8)))
        ref = reference(q, anchors, table, radii, k)
        np.testing.assert_array_equal(ours["nearest_ids"], ref["nearest_ids"])
        np.testing.assert_array_equal(ours["anchor_rank"], ref["anchor_rank"])
        np.testing.assert_array_equal(ours["counts"], ref["counts"])  # integer radii: no rounding at the edge
        np.testing.assert_allclose(ours["nearest_dists"], ref["nearest_dists"], rtol=1e-12)


def _crowded_shell(seed=3, V=400, d=32, Q=8):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((V, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    centre = rng.standard_normal(d)
    table = (centre + u * (1 + rng.uniform(-1e-6, 1e-6, (V, 1)))).astype(np.float32)
    q = np.repeat(centre[None].astype(np.float32), Q, axis=0)
    anchors = rng.integers(0, V, Q)
    exact = np.sqrt(((q[:1].astype(np.float64) - table.astype(np.float64)) ** 2).sum(1))
    return table, anchors, q, np.tile(np.median(exact), (Q, 1))


def test_vocab_chunks_do_not_change_results():
    """The tiles' state (top-k candidates, counts, band tokens) carries across the chunks of a row: any chunking
    gives the same arrays, also when a crowded band overflows its slots and the exact row decides."""
    table, anchors, q, radii = random_case(7, Q=60)
    whole = eps_ball_stats(q, anchors, table, radii, k=5, block_size=16, backend="numba", vocab_chunk=len(table))
    for chunk in (1, 7, 256):
        got = eps_ball_stats(q, anchors, table, radii, k=5, block_size=16, backend="numba", vocab_chunk=chunk)
        for key in whole:
            np.testing.assert_array_equal(got[key], whole[key], err_msg=f"{key}, chunk {chunk}")
    table, anchors, q, radii = _crowded_shell()
    ref = reference(q, anchors, table, radii, k=6)
    for chunk in (13, 400):
        check(eps_ball_stats(q, anchors, table, radii, k=6, backend="numba", vocab_chunk=chunk), ref)


@pytest.mark.parametrize("case", ["random", "crowded", "duplicates", "integer-ties"])
def test_torch_path_equals_the_numba_path(case):
    """What runs on a GPU (torch ops), run here on the CPU: the same ids, ranks and counts as the Numba kernels,
    distances equal to 1e-12 (fp64 summation order)."""
    if case == "random":
        table, anchors, q, radii = random_case(8, Q=120)
    elif case == "crowded":
        table, anchors, q, radii = _crowded_shell(seed=9)
    elif case == "duplicates":
        rng = np.random.default_rng(4)
        table = rng.standard_normal((200, 16)).astype(np.float32)
        table[150] = table[20]
        q, anchors, radii = table[[20, 150, 7]] + np.float32(1e-3), np.array([150, 20, 7]), np.ones((3, 1))
    else:
        rng = np.random.default_rng(10)
        table = rng.integers(-3, 4, (30, 4)).astype(np.float32)
        anchors = rng.integers(0, 30, 12)
        q = rng.integers(-3, 4, (12, 4)).astype(np.float32)
        radii = rng.integers(0, 5, (12, 2)).astype(np.float64)
    for k in (1, 5):
        a = eps_ball_stats(q, anchors, table, radii, k=k, block_size=32, backend="numba")
        b = eps_ball_stats(q, anchors, table, radii, k=k, block_size=32, backend="torch", device="cpu")
        for key in ("nearest_ids", "anchor_rank", "nearest_is_anchor", "counts"):
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
        for key in ("nearest_dists", "dist_anchor", "cos_anchor"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=1e-12, err_msg=key)
