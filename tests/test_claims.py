"""Every claim of ARTIFACT.md §5 is computed and flagged: a synthetic evaluation table built from the paper's own
numbers passes every claim; one change per claim, built to break it, makes exactly that claim fail."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from visual_words.evaluate.stats import summarize
from visual_words.report.claims import definitions, evaluate_claims, transfer_shares
from visual_words.report.paper import paper_table

TOL = 0.1
TRIALS = 3  # trials per cell: all at the cell's value, so our CI is the value itself
COMPUTED = ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10", "C11"]


def _paper_values() -> dict[tuple, float]:
    p = paper_table()
    return {(r.dataset, r.trained_task, r.eval_task, float(r.delta)): float(r.paper) for r in p.itertuples()}


def _evaluation(values: dict[tuple, float]) -> pd.DataFrame:
    """An evaluation table (evaluation.csv's columns) with TRIALS rows per cell."""
    metric = {"generation": "gen_acc", "detection": "map", "classification": "cls_acc"}
    rows = []
    for (ds, tr, ev, d), v in values.items():
        for i in range(TRIALS):
            rows.append({"trial_id": f"{tr}/{ds}/c{i}/anchor=a/delta={d}", "dataset": ds, "concept": f"c{i}",
                         "anchor": "a", "delta": d, "trained_task": tr, "eval_task": ev, "transferred": tr != ev,
                         "metric": metric[ev], "value": v, "ap50": v if ev == "detection" else math.nan})
    return pd.DataFrame(rows)


def _cells(values):
    return summarize(_evaluation(values), 50, 0, 0.95)


def _eps(all_anchor: bool = True) -> pd.DataFrame:
    rows = [{"delta": d, "transferred": t, "nearest_is_anchor": (d <= 0.5 and not t) or (t and d == 0.1)}
            for d in (0.1, 0.2, 0.5, 1.0, math.inf) for t in (False, True) for _ in range(4)]
    if not all_anchor:
        rows[16]["nearest_is_anchor"] = False  # the first in-domain vector at δ = 0.5 (after 2 × 8 rows)
    return pd.DataFrame(rows)


def _status(results) -> dict[str, str]:
    return {r.id: r.status for r in results}


def test_the_paper_numbers_pass_every_computed_claim():
    results = evaluate_claims(_cells(_paper_values()), _eps(), TOL)
    status = _status(results)
    assert [r.id for r in results] == [d["id"] for d in definitions()]
    assert {c: status[c] for c in COMPUTED} == {c: "pass" for c in COMPUTED}, \
        {r.id: (r.failed, r.detail) for r in results if r.status != "pass"}
    assert status["C12"] == status["C13"] == "not judged" and status["A1"] == "not run"
    by = {r.id: r for r in results}
    assert by["C7"].expected.startswith("0.04–0.12")  # the δ = 0.1 range read from paper_numbers.yaml
    assert by["C1"].checks == 12 and by["C10"].checks == 144 and by["C6"].checks == 24
    assert by["C11"].value == {"0.1": 1.0, "0.2": 1.0, "0.5": 1.0}  # per δ, never pooled
    assert set(by["C5"].value) == {"imagenet", "dreambooth", "coco", "pascal"}


def _set(values, cells: list[tuple], v: float):
    out = dict(values)
    for c in cells:
        assert c in out, c
        out[c] = v
    return out


INF = math.inf
DS = ("imagenet", "dreambooth", "coco", "pascal")
BREAKS = {  # claim -> a change of the paper's table that breaks it
    "C1": lambda v: _set(v, [("imagenet", "generation", "generation", INF)], 0.5),
    "C2": lambda v: _set(v, [(d, "classification", "generation", INF) for d in DS], 0.2),
    "C3": lambda v: _set(v, [(d, "generation", "classification", INF) for d in DS], 0.05),
    "C4": lambda v: _set(v, [(d, "detection", "generation", INF) for d in DS], 0.9),
    "C5": lambda v: _set(v, [(d, "detection", e, INF) for d in DS for e in ("generation", "classification")], 0.9),
    "C6": lambda v: _set(v, [("coco", "detection", "classification", INF)], 0.9),
    "C7": lambda v: _set(v, [("imagenet", "generation", "generation", 0.1)], 0.5),
    "C8": lambda v: _set(v, [("imagenet", "generation", "generation", 0.5)], 0.6),
    "C9": lambda v: _set(v, [("coco", "generation", "detection", 0.2)], 0.5),
    "C10": lambda v: _set(v, [("pascal", "detection", "detection", 1.0)], 0.3),
}


@pytest.mark.parametrize("claim", sorted(BREAKS, key=lambda c: int(c[1:])))
def test_a_table_built_to_fail_a_claim_fails_it(claim):
    results = {r.id: r for r in evaluate_claims(_cells(BREAKS[claim](_paper_values())), _eps(), TOL)}
    assert results[claim].status == "fail" and results[claim].failed, results[claim]


def test_c11_fails_when_one_in_domain_vector_inside_half_delta_misses_its_anchor():
    results = {r.id: r for r in evaluate_claims(_cells(_paper_values()), _eps(all_anchor=False), TOL)}
    assert results["C11"].status == "fail" and results["C11"].failed == ["δ=0.5: 0.7500"]


def test_nothing_run_is_not_run_never_pass():
    results = evaluate_claims(None, None, TOL)
    assert {c: s for c, s in _status(results).items() if c in COMPUTED} == {c: "not run" for c in COMPUTED}


def test_partial_runs_judge_what_ran():
    """Two datasets (as the smoke profile has): per-cell claims are judged on their cells, the ordering claim
    needs three datasets and is not run."""
    values = {k: v for k, v in _paper_values().items() if k[0] in ("coco", "pascal")}
    status = _status(evaluate_claims(_cells(values), _eps(), TOL))
    assert status["C1"] == status["C10"] == "pass" and status["C5"] == "not run"


def test_transfer_shares_of_the_paper_match_its_headline_claims():
    shares = transfer_shares(_cells(_paper_values()))
    best = shares.loc[shares[(shares.trained_task == "classification") & (shares.eval_task == "generation")]
                      ["share"].idxmax()]
    assert best["dataset"] == "pascal" and best["share"] == pytest.approx(0.84)


def test_the_report_computes_and_flags_every_claim(repo_root, tmp_path):
    """The report stage on a synthetic evaluation table built to pass: metrics.json and the page carry every
    claim with its status and tolerance; AP50 rows are compared too."""
    from visual_words.config import load_config
    from visual_words.evaluate.runner import write_table
    from visual_words.report.stage import run as run_report

    cfg = load_config("smoke", repo_root / "params.yaml", {
        "evaluate.out_dir": str(tmp_path / "evaluation"), "analyze.out_dir": str(tmp_path / "analysis"),
        "report.out_dir": str(tmp_path / "reports"), "report.formats": ["png"], "report.dpi": 40,
        "train.out_dir": str(tmp_path / "emb"), "prepare.manifests_dir": str(tmp_path / "manifests"),
        "evaluate.bootstrap_resamples": 50})
    evaluation = _evaluation(_paper_values())
    rows = evaluation.assign(ap50=evaluation["ap50"].fillna(""), source_model="m", eval_model="m")
    write_table(tmp_path / "evaluation" / "evaluation.csv", rows.to_dict("records"))
    page = run_report(cfg)
    metrics = json.loads((page.parent / "metrics.json").read_text())
    claims = metrics["claims"]
    assert set(claims) == {d["id"] for d in definitions()}
    assert {c: claims[c]["status"] for c in COMPUTED if c != "C11"} == {c: "pass" for c in COMPUTED if c != "C11"}
    assert claims["C11"]["status"] == "not run"  # no ε-ball table in this run
    assert claims["C8"]["tolerance"] == "max − min ≤ 0.1" and claims["C1"]["tolerance"] == "paper CI, else ±0.1"
    assert metrics["claims_summary"]["fail"] == 0
    html = page.read_text()
    assert "The paper&#39;s claims, computed" in html or "The paper's claims, computed" in html
    assert html.count('<tr class="ok"><td>C') == 10
    comp = pd.read_csv(page.parent / "comparison.csv", comment="#")
    assert (comp["metric"] == "ap50").sum() == 12 + 48  # every detection cell of Fig. 3 and Fig. 6, by AP50 too

