"""The claims profile: it validates, its power is computed (and agrees with a simulation of the paper's numbers),
and the checker decides pass / fail / inconclusive / not run on evaluation tables."""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from visual_words.claims import ClaimSpecError, claims_of
from visual_words.claims.design import paper_cells
from visual_words.claims.interval import check_claims, power_table
from visual_words.config import ConfigError, load_config
from visual_words.trials import TASKS, trial_grid

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


@pytest.fixture(scope="module")
def claims_cfg():
    return load_config("claims", PARAMS)


def _with_claims(cfg, ids):
    return replace(cfg, report=replace(cfg.report, claims=list(ids)))


def test_claims_profile_validates_and_narrows_only_the_sd_grid(claims_cfg):
    grid = trial_grid(claims_cfg)
    sd = [t for t in grid if t.task == "generation"]
    assert len(sd) == 30 and {t.dataset for t in sd} == {"pascal"} and len({t.anchor for t in sd}) == 1
    assert {t.delta for t in sd} == {0.1, 0.5, math.inf}
    for task in ("detection", "classification"):
        assert len([t for t in grid if t.task == task]) == 3 * 10 * 10 * 3
    # 10 concepts x the dataset's first anchors: 1 in 10 words starts at its own concept's anchor, as in the paper
    # (the ≈ 0.10 floor at δ = 0.1 depends on it)
    own = sum(1 for t in sd if t.anchor == t.concept) / len(sd)
    assert own == pytest.approx(0.1)


def _params_with(tmp_path, grid_by_task):
    raw = yaml.safe_load(PARAMS.read_text())
    raw["profiles"]["claims"]["study"]["grid_by_task"] = grid_by_task
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize("grid, message", [
    ({"generation": {"anchorz": 1}}, r"unknown key `study\.grid_by_task\.generation\.anchorz`"),
    ({"painting": {"anchors_per_concept": 1}}, r"study\.grid_by_task\.painting`: unknown task"),
    ({"generation": {"datasets": ["imagenet"]}}, r"imagenet is not in study\.datasets"),
    ({"generation": {"anchors_per_concept": 11}}, r"exceeds study\.anchors_per_concept"),
    ({"generation": {"deltas": ["x"]}}, r"study\.grid_by_task\.generation\.deltas\[0\]"),
])
def test_bad_grid_by_task_names_the_key(tmp_path, grid, message):
    with pytest.raises(ConfigError, match=message):
        load_config("claims", _params_with(tmp_path, grid))


def test_unknown_claim_id_names_params(claims_cfg):
    with pytest.raises(ClaimSpecError, match=r"report\.claims`: unknown claim `C99`"):
        claims_of(_with_claims(claims_cfg, ["C99"]))


def test_a_claim_without_parts_cannot_be_named_by_a_profile(claims_cfg):
    """C6 (every Fig. 3 transferred cell) has only a point rule: there is nothing to pool, so no power to state."""
    with pytest.raises(ClaimSpecError, match=r"claim `C6` has no interval check .* these have one: C1, C2, C3, C4a"):
        claims_of(_with_claims(claims_cfg, ["C1", "C6"]))


def test_every_checked_claim_has_power_of_at_least_0_9(claims_cfg):
    table = {c.id: c for c in power_table(claims_cfg)}
    assert set(table) == set(claims_cfg.report.claims)
    for c in table.values():
        assert c.power >= 0.9, (c.id, c.power)
        for p in c.parts:
            assert not math.isnan(p.reference) and p.cells
    # the references come from the paper's numbers, not typed in: cls→gen on PASCAL = 0.84 / 1.00
    assert table["C2"].parts[0].reference == pytest.approx(0.84)
    assert table["C2"].parts[0].method == "exact binomial"
    assert table["C4b"].parts[0].method.startswith("simulation")


def test_claims_left_out_lack_power_at_this_budget(claims_cfg):
    """gen→cls and gen→det shares rest on 10 SD words: the profile cannot decide them (why they are left out)."""
    table = {c.id: c.power for c in power_table(_with_claims(claims_cfg, ["C3", "C4c"]))}
    assert table["C3"] < 0.6 and table["C4c"] < 0.6


def test_exact_binomial_power_by_hand(claims_cfg):
    """C7's generation part: 10 SD words at δ = 0.1, paper 0.10, tolerance 0.10: P(X <= 2), X ~ Bin(10, 0.1)."""
    from scipy.stats import binom

    c7 = next(c for c in power_table(_with_claims(claims_cfg, ["C7"])))
    gen = next(p for p in c7.parts if p.name == "generation")
    assert gen.power == pytest.approx(binom.cdf(2, 10, 0.1))
    assert gen.method == "exact binomial"


def _simulated_tables(cfg, reps, rng):
    """Evaluation tables drawn from the paper's numbers (a world in which the paper is right): each trial of the
    design, evaluated on every task; accuracies Bernoulli, AP Beta with the spread of the paper's CI."""
    grid = trial_grid(cfg)
    cells = paper_cells()
    rows = [(t.dataset, t.task, ev, t.delta) for t in grid for ev in TASKS]
    base = pd.DataFrame(rows, columns=["dataset", "trained_task", "eval_task", "delta"])
    keys = [(d, tr, ev, d_) for d, tr, ev, d_ in rows]
    mean = np.array([cells[k].mean if k in cells else 0.5 for k in keys])
    sd = np.array([cells[k].sd if k in cells else 0.5 for k in keys])
    acc = np.array([ev in ("generation", "classification") for _, _, ev, _ in rows])
    for _ in range(reps):
        u = rng.random(len(rows))
        values = (u < mean).astype(float)  # Bernoulli; also AP cells whose spread is the largest possible
        var = sd ** 2
        beta = ~acc & (var < mean * (1 - mean) - 1e-12) & (mean > 0) & (mean < 1)
        common = np.where(beta, mean * (1 - mean) / np.where(beta, var, 1) - 1, 1)
        draws = rng.beta(np.where(beta, mean * common, 1), np.where(beta, (1 - mean) * common, 1))
        values = np.where(beta, draws, values)
        yield base.assign(value=values)


def test_power_agrees_with_a_simulation_of_the_papers_numbers(claims_cfg):
    """Run the real checker on tables simulated from the paper's numbers: the share of passes is the power."""
    cfg = _with_claims(claims_cfg, ["C3", "C4c", "C7", "C8", "C9", "C4d"])
    powers = power_table(cfg)
    reps = 300
    passes = {c.id: 0 for c in powers}
    for table in _simulated_tables(cfg, reps, np.random.default_rng(1)):
        for r in check_claims(cfg, table, None, resamples=0, powers=powers):
            passes[r.id] += r.status == "pass"
    for c in powers:
        rate = passes[c.id] / reps
        se = math.sqrt(max(c.power * (1 - c.power), 0.01) / reps)
        assert abs(rate - c.power) <= 4 * se + 0.01, (c.id, rate, c.power)


def _table(cfg, value_of):
    rows = [(t.dataset, t.task, ev, t.delta, value_of(t, ev)) for t in trial_grid(cfg) for ev in TASKS]
    return pd.DataFrame(rows, columns=["dataset", "trained_task", "eval_task", "delta", "value"])


def test_checker_fails_a_world_where_words_do_not_transfer_down_to_the_floor(claims_cfg):
    """Transferred words as good as in-domain ones at δ <= 0.5: C9 must fail (its CI excludes the floor)."""
    cfg = _with_claims(claims_cfg, ["C9", "C1"])
    table = _table(cfg, lambda t, ev: 1.0 if t.delta != math.inf or t.task == ev else 0.5)
    res = {r.id: r for r in check_claims(cfg, table, None)}
    assert res["C9"].status == "fail" and all(p.status == "fail" for p in res["C9"].parts)
    assert res["C1"].status == "pass"
    assert res["C9"].to_dict()["parts"][0]["ci"][0] > res["C9"].to_dict()["parts"][0]["accept"][1]


def test_checker_says_inconclusive_and_not_run(claims_cfg):
    cfg = _with_claims(claims_cfg, ["C7", "C11"])
    # generation words at δ = 0.1 slightly above the floor + tolerance, with a wide CI: inconclusive
    rng = np.random.default_rng(0)
    table = _table(cfg, lambda t, ev: float(rng.random() < (0.3 if t.task == "generation" else 0.08)))
    sd = table[(table.trained_task == "generation") & (table.eval_task == "generation") & (table.delta == 0.1)]
    table.loc[sd.index, "value"] = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # 0.3 > 0.2, but 10 words cannot exclude 0.2
    res = {r.id: r for r in check_claims(cfg, table, None)}
    assert res["C7"].status == "inconclusive"
    assert res["C11"].status == "not run"  # no analysis table
    eps = pd.DataFrame({"transferred": [False, False, True], "delta": [0.1, 0.5, 0.5],
                        "nearest_is_anchor": [True, True, False]})
    assert {r.id: r for r in check_claims(cfg, table, eps)}["C11"].status == "pass"
    missing = table[table.trained_task != "generation"]
    assert {r.id: r for r in check_claims(cfg, missing, eps)}["C7"].status == "not run"


def test_claims_profile_section_is_data(claims_cfg):
    """The section without a page: one table row and one CSV row per part, the verdict in the headline and
    metrics; a claim without its table is `not run` and coloured as such."""
    from visual_words.report.sections.claims_profile import claims_profile_section

    cfg = _with_claims(claims_cfg, ["C1", "C11"])
    sec = claims_profile_section(cfg, _table(cfg, lambda t, ev: 1.0 if t.task == ev else 0.0), None)
    parts = sec.csv["claims.csv"].frame
    assert list(parts["claim"]) == ["C1"] * 3 + ["C11"] and list(parts["status"]) == ["pass"] * 3 + ["not run"]
    (table,) = sec.tables
    assert [r["class"] for r in table.rows] == ["ok", "ok", "ok", "na"] and len(table.rows[0]["cells"]) == 11
    assert sec.headline == [{"value": "1 / 2", "label": "checked claims pass"}]
    assert sec.metrics["claims_profile"]["C11"]["status"] == "not run" and sec.id == "claims-profile"


def test_exact_and_simulated_power_agree_on_a_small_design(claims_cfg, monkeypatch):
    """A small design makes multi-dataset shares of accuracies exact; forcing the simulation path must agree."""
    from visual_words.claims import power as P

    cfg = _with_claims(load_config("claims", PARAMS, {"study.concepts_per_dataset": 2, "study.anchors_per_concept": 2}),
                       ["C4d", "C8", "C5"])
    exact = {c.id: c for c in power_table(cfg)}
    assert exact["C4d"].parts[0].method == "exact binomial"
    monkeypatch.setattr(P, "EXACT_LIMIT", 0)
    simulated = {c.id: c for c in power_table(cfg)}
    assert simulated["C4d"].parts[0].method.startswith("simulation")
    for cid in exact:
        assert simulated[cid].power == pytest.approx(exact[cid].power, abs=0.015), cid


def test_claims_banner_counts_the_profiles_trials(claims_cfg):
    from visual_words.report.banner import SMOKE_BANNER, banner_for

    assert banner_for(claims_cfg).startswith("CLAIMS PROFILE: 1,830 of the paper's 6,000 trials")
    assert banner_for(load_config("paper", PARAMS)) == ""
    tiny = load_config("claims", PARAMS, {"study.models.generation": "tiny-sd"})
    assert banner_for(tiny) == SMOKE_BANNER  # tiny models: the smoke banner wins


def test_report_of_the_claims_profile_shows_each_claim(claims_cfg, tmp_path):
    """The report stage on an evaluation table simulated from the paper's numbers: the claims section first,
    claims.csv with tolerance interval, cell sizes and power per part, metrics.json `claims_profile`."""
    import json

    from visual_words.evaluate.runner import write_table
    from visual_words.report.banner import banner_for
    from visual_words.report.stage import run as run_report

    cfg = load_config("claims", PARAMS, {"evaluate.out_dir": str(tmp_path / "ev"),
                                         "analyze.out_dir": str(tmp_path / "an"),
                                         "report.out_dir": str(tmp_path / "rep"),
                                         "train.out_dir": str(tmp_path / "emb"),
                                         "report.formats": ["png"], "evaluate.bootstrap_resamples": 200})
    table = next(_simulated_tables(cfg, 1, np.random.default_rng(3)))
    rows = [{"trial_id": f"{r.trained_task}/{r.dataset}/{i}", "dataset": r.dataset, "concept": "c", "anchor": "a",
             "delta": r.delta, "trained_task": r.trained_task, "eval_task": r.eval_task,
             "transferred": r.trained_task != r.eval_task, "metric": "m", "value": r.value, "ap50": "",
             "source_model": "s", "eval_model": "e"} for i, r in enumerate(table.itertuples())]
    write_table(tmp_path / "ev" / "evaluation.csv", rows)
    page = run_report(cfg).read_text()
    out = tmp_path / "rep" / "claims"
    text = (out / "claims.csv").read_text()
    assert text.splitlines()[0] == f"# {banner_for(cfg)}"
    parts = pd.read_csv(out / "claims.csv", comment="#")
    assert list(dict.fromkeys(parts["claim"])) == cfg.report.claims
    assert {"status", "ours", "ci_low", "ci_high", "paper", "accept_low", "accept_high", "cells", "power"} <= set(parts)
    assert parts.loc[parts["claim"] == "C11", "status"].item() == "not run"  # no analysis table given
    ran = parts[parts["claim"] != "C11"]
    assert (ran["status"] == "pass").mean() > 0.8  # a world where the paper is right mostly passes
    assert (parts["power"] >= 0.9).all()
    m = json.loads((out / "metrics.json").read_text())
    assert m["note"].startswith("CLAIMS PROFILE") and set(m["claims_profile"]) == set(cfg.report.claims)
    assert page.index('id="claims-profile"') < page.index('id="paper"') and "CLAIMS PROFILE: 1,830" in page
