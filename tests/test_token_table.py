"""The token-table type (models/token_table.py): its searches against brute-force fp64 references on small random
tables, both d_nn methods, and the identity and names it carries from a loaded model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visual_words.embeddings import table_hash
from visual_words.models.token_table import TokenTable, is_special, vocabulary


def _table(seed=0, V=900, d=40):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((V, d)) * rng.lognormal(0, 0.3, (V, 1))).astype(np.float32)
    return TokenTable(w), w.astype(np.float64), rng


def _d2(q64, t64):
    return ((q64[:, None, :] - t64[None, :, :]) ** 2).sum(-1)


def test_nearest_l2_equals_fp64_brute_force():
    table, t64, rng = _table(0)
    q = (t64[rng.integers(0, len(table), 60)] + rng.standard_normal((60, t64.shape[1])) * 0.3).astype(np.float32)
    found = table.nearest(q, k=4)
    d2 = _d2(q.astype(np.float64), t64)
    order = np.argsort(d2, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(found.ids, order)
    np.testing.assert_allclose(found.values, np.sqrt(np.take_along_axis(d2, order, 1)), rtol=1e-12)
    assert found.ids.dtype == np.int64 and found.values.dtype == np.float64


def test_nearest_ties_break_by_id():
    w = np.eye(6, dtype=np.float32)
    w[4] = w[1]  # an exact duplicate of row 1
    found = TokenTable(w).nearest(w[[4]], k=3)
    assert found.ids[0, :2].tolist() == [1, 4] and found.values[0, 0] == found.values[0, 1] == 0


def test_nearest_cosine_equals_fp64_brute_force():
    table, t64, rng = _table(1)
    q = rng.standard_normal((30, t64.shape[1]))
    found = table.nearest(torch.from_numpy(q).float(), k=3, metric="cosine")
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (t64 / np.linalg.norm(t64, axis=1, keepdims=True)).T
    order = np.argsort(-cos, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(found.ids, order)
    np.testing.assert_allclose(found.values, np.take_along_axis(cos, order, 1), atol=1e-6)


def test_fast_nearest_agrees_with_exact_away_from_ties():
    table, t64, rng = _table(2)
    q = (t64[rng.integers(0, len(table), 1100)] + rng.standard_normal((1100, t64.shape[1])) * 0.05)  # > one block
    fast = table.nearest(torch.from_numpy(q).float(), exact=False)
    assert fast.values is None and fast.ids.shape == (1100, 1)
    np.testing.assert_array_equal(fast.ids[:, 0], np.argmin(_d2(q, t64), axis=1))
    assert table.nearest(q[:0], exact=False).ids.shape == (0, 1)
    with pytest.raises(ValueError, match="k = 1"):
        table.nearest(q, k=2, exact=False)
    with pytest.raises(ValueError, match="metric"):
        table.nearest(q, metric="dot")


@pytest.mark.parametrize("method", ["screened", "direct"])
def test_d_nn_equals_fp64_brute_force(method):
    table, t64, _ = _table(3)
    ids = np.arange(0, len(table), 11)
    d2 = _d2(t64[ids], t64)
    d2[np.arange(len(ids)), ids] = np.inf  # the nearest *other* row
    np.testing.assert_allclose(table.d_nn(ids, method=method), np.sqrt(d2.min(1)), rtol=1e-12)


def test_d_nn_methods_agree_and_handle_duplicates():
    table, _, _ = _table(4, V=300)
    ids = list(range(0, 300, 3))
    screened, direct = table.d_nn(ids), table.d_nn(ids, method="direct")
    np.testing.assert_allclose(screened, direct, rtol=1e-14)
    w = table.weights.clone()
    w[7] = w[3]
    dup = TokenTable(w)
    assert dup.d_nn([3, 7, 5]).tolist()[:2] == [0.0, 0.0] == dup.d_nn([3, 7], method="direct").tolist()
    with pytest.raises(ValueError, match="method"):
        table.d_nn(ids, method="gemm")
    with pytest.raises(ValueError, match="at least 2"):
        TokenTable(w[:1]).d_nn([0])


def test_ball_counts_equal_fp64_brute_force():
    table, t64, rng = _table(5)
    anchors = rng.integers(0, len(table), 40)
    d_nn = table.d_nn(anchors)
    q = (t64[anchors] + rng.standard_normal((40, t64.shape[1])) * 0.2).astype(np.float32)
    radii = np.stack([0.5 * d_nn, 3 * d_nn, np.full(40, np.inf)], axis=1)
    st = table.ball(q, anchors, radii, k=2)
    d2 = _d2(q.astype(np.float64), t64)
    np.testing.assert_array_equal(st["counts"], (d2[:, :, None] <= radii[:, None, :] ** 2).sum(1))
    np.testing.assert_array_equal(st["anchor_rank"], (d2 < d2[np.arange(40), anchors][:, None]).sum(1))
    assert (st["counts"][:, 2] == len(table)).all()


def test_a_table_built_in_memory():
    w = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    t = TokenTable(w, vocab={"cat</w>": 2, "dog": 1})
    assert t.weights.dtype == torch.float32 and t.shape == (4, 3) and len(t) == 4 and t.width == 3
    assert t.identity is None and t.name(2) == "cat" and t.name(3) == "#3"
    assert t.token_id("cat") == 2 and t.token_id("dog") == 1 and t.token_id("cow") is None
    with pytest.raises(ValueError, match=r"\[V, d\]"):
        TokenTable(torch.zeros(3))


def test_of_a_loaded_model_carries_its_identity_and_vocabulary(tiny_clip):
    from visual_words.models.adapters import adapter_for

    table = TokenTable.of(tiny_clip)
    adapter = adapter_for(tiny_clip)
    assert table.identity == tiny_clip.table_identity == table_hash(table.weights)  # stored in fp32: equal
    assert TokenTable.of(adapter).identity == table.identity
    assert table.key == "tiny-clip" and table.meta == {"model_id": tiny_clip.entry.id,
                                                       "model_revision": tiny_clip.entry.revision,
                                                       "table_hash": table.identity, "width": table.width}
    torch.testing.assert_close(table.weights, adapter.embedding.weight.detach().float(), rtol=0, atol=0)
    assert table.weights.data_ptr() != adapter.embedding.weight.data_ptr()  # a copy, never the live parameter
    assert table.vocab == vocabulary(tiny_clip) and not any(is_special(t) for t in table.vocab)
    cat = adapter.anchor_id("cat")
    assert table.token_id("cat") == cat and table.name(cat) == adapter.token_name(cat) == "cat"
