"""Transfer maps: estimators recover known maps, agree with lstsq/QR, quality metrics are right, files round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from visual_words.models.token_table import TokenTable
from visual_words.transfer import (
    LinearMap,
    MapFileError,
    check_tables,
    fit_map,
    fit_pairs,
    holdout_split,
    load_map,
    map_quality,
    r2,
    retrieval_at_1,
    save_map,
    shared_rows,
)
from visual_words.transfer.estimators import fit_from_moments, moments


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------------------
# Estimators


def test_ols_recovers_a_known_linear_transform():
    rng = _rng()
    x = rng.normal(size=(3000, 24))
    w = rng.normal(size=(24, 16))
    lm = fit_map(x, x @ w, "ols")
    assert lm.weight.shape == (24, 16) and lm.bias is None
    np.testing.assert_allclose(lm.weight, w, atol=1e-10)
    np.testing.assert_allclose(lm.matrix, w.T, atol=1e-10)  # the paper's T = Wᵀ


def test_affine_recovers_weight_and_bias():
    rng = _rng(1)
    x = rng.normal(size=(2000, 10)) + 3.0  # off-centre inputs: a bias-free fit could not match
    w, b = rng.normal(size=(10, 7)), rng.normal(size=7)
    lm = fit_map(x, x @ w + b, "affine")
    np.testing.assert_allclose(lm.weight, w, atol=1e-9)
    np.testing.assert_allclose(lm.bias, b, atol=1e-9)
    assert not np.allclose(fit_map(x, x @ w + b, "ols").weight, w, atol=1e-3)


@pytest.mark.parametrize("estimator", ["ols", "procrustes", "affine", "ridge"])
def test_identical_tables_give_the_identity(estimator):
    x = _rng(2).normal(size=(1500, 12)).astype(np.float32)
    lm = fit_map(torch.from_numpy(x), torch.from_numpy(x), estimator, ridge_alpha=0.0)
    np.testing.assert_allclose(lm.weight, np.eye(12), atol=1e-9)
    if lm.bias is not None:
        np.testing.assert_allclose(lm.bias, 0.0, atol=1e-9)


def test_normal_equations_agree_with_lstsq_and_qr():
    rng = _rng(3)
    x = rng.normal(size=(4000, 32)).astype(np.float32) * rng.uniform(0.1, 3.0, size=32).astype(np.float32)
    y = (x @ rng.normal(size=(32, 20)) + 0.3 * rng.normal(size=(4000, 20))).astype(np.float32)
    ours = fit_map(x, y, "ols").weight
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    ref_lstsq = np.linalg.lstsq(x64, y64, rcond=None)[0]
    q, r = scipy.linalg.qr(x64, mode="economic")
    ref_qr = scipy.linalg.solve_triangular(r, q.T @ y64)
    np.testing.assert_allclose(ours, ref_lstsq, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours, ref_qr, rtol=0, atol=1e-10)


def test_ridge_shrinks_and_matches_its_closed_form():
    rng = _rng(4)
    x, y = rng.normal(size=(500, 8)), rng.normal(size=(500, 5))
    lm = fit_map(x, y, "ridge", ridge_alpha=50.0)
    np.testing.assert_allclose(lm.weight, np.linalg.solve(x.T @ x + 50.0 * np.eye(8), x.T @ y), atol=1e-12)
    assert np.linalg.norm(lm.weight) < np.linalg.norm(fit_map(x, y, "ols").weight)
    np.testing.assert_allclose(fit_map(x, y, "ridge", ridge_alpha=0.0).weight, fit_map(x, y, "ols").weight,
                               atol=1e-12)


def test_procrustes_recovers_a_rotation_and_zero_pads_unequal_widths():
    rng = _rng(5)
    q = scipy.stats.ortho_group.rvs(16, random_state=5)
    x = rng.normal(size=(1000, 16))
    np.testing.assert_allclose(fit_map(x, x @ q, "procrustes").weight, q, atol=1e-9)
    # Narrower target: Y = X Q[:, :12]. With an isotropic X (XᵀX ∝ I) the padded problem's solution keeps Q's columns.
    xo = scipy.linalg.qr(rng.normal(size=(1000, 16)), mode="economic")[0] * 5.0
    np.testing.assert_allclose(fit_map(xo, xo @ q[:, :12], "procrustes").weight, q[:, :12], atol=1e-9)
    # Wider target: X [n, 12], Y = X P with P [12, 16] of orthonormal rows.
    p = q[:12, :]
    xn = scipy.linalg.qr(rng.normal(size=(1000, 12)), mode="economic")[0]
    lm = fit_map(xn, xn @ p, "procrustes")
    assert lm.weight.shape == (12, 16)
    np.testing.assert_allclose(lm.weight, p, atol=1e-9)


def test_moments_of_disjoint_rows_add_up_to_the_full_fit():
    rng = _rng(6)
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(300, 4))
    whole = fit_from_moments(moments(x, y), "affine")
    parts = fit_from_moments(moments(x[:100], y[:100]) + moments(x[100:], y[100:]), "affine")
    np.testing.assert_allclose(parts.weight, whole.weight, atol=1e-12)
    np.testing.assert_allclose(parts.bias, whole.bias, atol=1e-12)


def test_estimator_errors_are_clear():
    x = np.zeros((50, 4))
    with pytest.raises(ValueError, match="singular"):
        fit_map(x, np.ones((50, 3)), "ols")
    with pytest.raises(ValueError, match="unknown maps.estimator `lasso`"):
        fit_map(np.eye(4), np.eye(4), "lasso")
    with pytest.raises(ValueError, match=r"\[n, d_src\] and \[n, d_dst\]"):
        fit_map(np.ones((5, 2)), np.ones((6, 2)))


def test_apply_keeps_type_dtype_and_checks_width():
    lm = LinearMap(np.arange(6, dtype=np.float64).reshape(3, 2), np.array([1.0, -1.0]), "affine")
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float32)
    out = lm(v)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (1, 2)
    assert out.tolist() == [[1 * 0 + 2 * 2 + 3 * 4 + 1, 1 * 1 + 2 * 3 + 3 * 5 - 1]]
    arr = lm(np.ones((2, 4, 3), dtype=np.float32))  # any leading shape: trials × vectors × d
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == (2, 4, 2)
    with pytest.raises(ValueError, match="width 3; got width 5"):
        lm(torch.ones(2, 5))


# ---------------------------------------------------------------------------------------------------------------
# Quality


def test_holdout_split_is_seeded_disjoint_and_sized():
    fit, held = holdout_split(1000, 0.1, seed=7)
    assert len(held) == 100 and len(fit) == 900
    assert set(fit).isdisjoint(held) and set(fit) | set(held) == set(range(1000))
    f2, h2 = holdout_split(1000, 0.1, seed=7)
    assert (h2 == held).all() and (f2 == fit).all()
    assert not (holdout_split(1000, 0.1, seed=8)[1] == held).all()
    assert len(holdout_split(49406, 0.1, 0)[1]) == 4941  # ceil(0.1 × 49,406)
    with pytest.raises(ValueError, match="holdout_fraction"):
        holdout_split(10, 1.0, 0)


def test_r2_and_retrieval_on_a_constructed_case():
    # Target table: 6 well-separated points; held-out tokens 0..3 with predictions hand-placed.
    table = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10], [20, 0], [0, 20]])
    ids = np.array([0, 1, 2, 3])
    # Predictions: 0 and 1 land on themselves; 2 lands next to token 5; 3 lands next to token 4.
    pred = np.array([[0.5, 0.0], [10, 0.5], [0, 19], [19, 0]], dtype=np.float32)
    assert retrieval_at_1(pred, TokenTable(table), ids) == pytest.approx(0.5)
    y = table[ids].numpy().astype(np.float64)
    ss_res = ((y - pred) ** 2).sum()
    ss_tot = ((y - y.mean(0)) ** 2).sum()
    assert r2(y, pred) == pytest.approx(1 - ss_res / ss_tot, rel=1e-12)
    assert r2(y, y) == 1.0


def test_map_quality_is_perfect_for_an_exact_map_and_chance_for_noise():
    rng = _rng(8)
    src = rng.normal(size=(400, 8))
    w = rng.normal(size=(8, 6))
    dst = torch.from_numpy(src @ w).float()
    held = np.arange(350, 400)
    q = map_quality(LinearMap(w), src[held], dst[held].numpy(), TokenTable(dst), held)
    assert q == {"r2": pytest.approx(1.0, abs=1e-6), "retrieval_at_1": 1.0, "n_heldout": 50}
    noise = map_quality(fit_map(src[:350], rng.normal(size=(350, 6))), src[held], dst[held].numpy(), TokenTable(dst),
                        held)
    assert noise["r2"] < 0.05 and noise["retrieval_at_1"] < 0.1


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary pairing and all-pairs fitting


def _vocab(n, specials=True):
    v = {f"tok{i}</w>": i for i in range(n - 2)}
    if specials:
        v |= {"<|startoftext|>": n - 2, "<|endoftext|>": n - 1}
    return v


def test_shared_rows_exclude_specials_and_pair_by_string():
    src_ids, dst_ids = shared_rows(_vocab(10), _vocab(10), 10, 10)
    assert src_ids.tolist() == dst_ids.tolist() == list(range(8))
    other = {"tok3</w>": 0, "tok1</w>": 1, "zzz": 2, "<|endoftext|>": 3}
    s, d = shared_rows(_vocab(10), other, 10, 4)
    assert s.tolist() == [1, 3] and d.tolist() == [1, 0]
    with pytest.raises(ValueError, match="share no vocabulary"):
        shared_rows({"a": 0}, {"b": 0}, 1, 1)


def test_fit_pairs_shares_products_and_matches_independent_fits():
    rng = _rng(9)
    n = 600
    vocab = _vocab(n)
    a = torch.from_numpy(rng.normal(size=(n, 12))).float()
    b = a @ torch.from_numpy(rng.normal(size=(12, 8))).float() + 0.01 * torch.randn(n, 8)
    c = torch.from_numpy(rng.normal(size=(n, 5))).float()
    tables = [TokenTable(t, identity=k * 3, vocab=vocab, key=k) for k, t in zip("abc", (a, b, c))]
    maps = fit_pairs(tables, holdout_fraction=0.1, seed=0)
    assert set(maps) == {(s, d) for s in "abc" for d in "abc" if s != d}
    rows = np.arange(n - 2)  # every non-special token
    for (s, d), lm in maps.items():
        x, y = dict(zip("abc", (a, b, c)))[s], dict(zip("abc", (a, b, c)))[d]
        np.testing.assert_allclose(lm.weight, fit_map(x[rows], y[rows]).weight, atol=1e-9)
        assert lm.meta["n_fit_tokens"] == n - 2 and lm.meta["quality"]["n_heldout"] == 60
        assert lm.meta["src_table_hash"] == s * 3 and lm.meta["dst_table_hash"] == d * 3  # identity carried through
        assert lm.meta["src_width"] == x.shape[1] and lm.meta["dst_width"] == y.shape[1]
    assert maps[("a", "b")].meta["quality"]["r2"] > 0.99
    assert maps[("a", "b")].meta["quality"]["retrieval_at_1"] > 0.9
    assert maps[("a", "c")].meta["quality"]["r2"] < 0.1


# ---------------------------------------------------------------------------------------------------------------
# Files


def test_map_file_round_trip_and_errors(tmp_path):
    lm = LinearMap(np.arange(12, dtype=np.float64).reshape(4, 3) / 7, np.array([0.5, 1.5, -2.0]), "affine",
                   {"src_key": "a", "dst_key": "b", "src_table_hash": "h1", "dst_table_hash": "h2",
                    "quality": {"r2": 0.5, "retrieval_at_1": 0.25, "n_heldout": 4}})
    path = save_map(tmp_path / "a__to__b.affine.safetensors", lm)
    back = load_map(path)
    np.testing.assert_array_equal(back.weight, lm.weight)  # fp64 kept exactly
    np.testing.assert_array_equal(back.bias, lm.bias)
    assert back.estimator == "affine" and back.meta["quality"]["retrieval_at_1"] == 0.25
    side = json.loads((tmp_path / "a__to__b.affine.safetensors.json").read_text())
    assert side["src_dim"] == 4 and side["dst_dim"] == 3 and side["src_table_hash"] == "h1"

    check_tables(back, "h1", "h2")
    with pytest.raises(MapFileError, match="src token table with hash h1.*hash other"):
        check_tables(back, "other", "h2")
    with pytest.raises(FileNotFoundError, match="vw maps"):
        load_map(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "bad.safetensors.json").write_text("{}")
    with pytest.raises(MapFileError, match="not a readable safetensors"):
        load_map(tmp_path / "bad.safetensors")
    (tmp_path / "nosidecar.safetensors").write_bytes(path.read_bytes())
    with pytest.raises(MapFileError, match="sidecar"):
        load_map(tmp_path / "nosidecar.safetensors")
