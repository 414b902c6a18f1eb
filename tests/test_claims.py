"""The claims' one definition (claims/claims.yaml) and its point check on every profile: a synthetic evaluation
table built from the paper's own numbers passes every claim; one change per claim, built to break it, makes that
claim fail; every claim id used anywhere (checkers, params.yaml, ARTIFACT.md, the code) is defined in the file."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from visual_words.claims import ClaimSpecError, load_claims, parse_claims
from visual_words.claims.point import RULES, evaluate_claims, transfer_shares
from visual_words.evaluate.stats import summarize
from visual_words.paper import paper_table

TOL = 0.1
TRIALS = 3  # trials per cell: all at the cell's value, so our CI is the value itself
COMPUTED = ["C1", "C2", "C3", "C4a", "C4b", "C4c", "C4d", "C5", "C6", "C7", "C8", "C9", "C10", "C11"]


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
    assert [r.id for r in results] == list(load_claims())
    assert {c: status[c] for c in COMPUTED} == {c: "agrees" for c in COMPUTED}, \
        {r.id: (r.failed, r.detail) for r in results if r.status != "agrees"}
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
    "C4a": lambda v: _set(v, [(d, "detection", "generation", INF) for d in DS], 0.9),
    "C4b": lambda v: _set(v, [(d, "classification", "detection", INF) for d in DS], 0.02),
    "C4c": lambda v: _set(v, [(d, "generation", "detection", INF) for d in DS], 0.6),
    "C4d": lambda v: _set(v, [(d, "detection", "classification", INF) for d in DS], 0.01),
    "C5": lambda v: _set(v, [(d, "detection", e, INF) for d in DS for e in ("generation", "classification")], 0.9),
    "C6": lambda v: _set(v, [("coco", "detection", "classification", INF)], 0.9),
    "C7": lambda v: _set(v, [("imagenet", "generation", "generation", 0.1)], 0.5),
    "C8": lambda v: _set(v, [("imagenet", "generation", "generation", 0.5)], 0.6),
    "C9": lambda v: _set(v, [("coco", "generation", "detection", 0.2)], 0.5),
    "C10": lambda v: _set(v, [("pascal", "detection", "detection", 1.0)], 0.3),
}


@pytest.mark.parametrize("claim", list(BREAKS))
def test_a_table_built_to_fail_a_claim_fails_it(claim):
    results = {r.id: r for r in evaluate_claims(_cells(BREAKS[claim](_paper_values())), _eps(), TOL)}
    assert results[claim].status == "differs" and results[claim].failed, results[claim]


def test_c11_fails_when_one_in_domain_vector_inside_half_delta_misses_its_anchor():
    results = {r.id: r for r in evaluate_claims(_cells(_paper_values()), _eps(all_anchor=False), TOL)}
    assert results["C11"].status == "differs" and results["C11"].failed == ["δ=0.5: 0.7500"]


def test_nothing_run_is_not_run_never_pass():
    results = evaluate_claims(None, None, TOL)
    assert {c: s for c, s in _status(results).items() if c in COMPUTED} == {c: "not run" for c in COMPUTED}


def test_partial_runs_judge_what_ran():
    """Two datasets (as the smoke profile has): per-cell claims are judged on their cells, the ordering claim
    needs three datasets and is not run."""
    values = {k: v for k, v in _paper_values().items() if k[0] in ("coco", "pascal")}
    status = _status(evaluate_claims(_cells(values), _eps(), TOL))
    assert status["C1"] == status["C10"] == "agrees" and status["C5"] == "not run"


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
    assert set(claims) == set(load_claims())
    assert {c: claims[c]["status"] for c in COMPUTED if c != "C11"} == {c: "agrees" for c in COMPUTED if c != "C11"}
    assert claims["C11"]["status"] == "not run"  # no ε-ball table in this run
    assert claims["C8"]["tolerance"] == "max − min ≤ 0.1" and claims["C1"]["tolerance"] == "paper CI, else ±0.1"
    assert metrics["claims_summary"]["differs"] == 0
    html = page.read_text()
    assert "described cell by cell" in html and "Verdicts on the paper" in html
    verdicts = metrics["verdicts"]  # the smoke design decides every claim with parts; none can be "contradicted"
    assert "C11" not in verdicts and set(metrics["sanity"]) == {"C11"}  # by a table of the paper's own values
    assert {v["status"] for v in verdicts.values()} <= {"supported", "inconclusive", "not run"}
    comp = pd.read_csv(page.parent / "comparison.csv", comment="#")
    assert (comp["metric"] == "ap50").sum() == 12 + 48  # every detection cell of Fig. 3 and Fig. 6, by AP50 too



# ---- one definition per claim ------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
CLAIM_ID = re.compile(r"\b[CA]\d{1,2}[a-z]?(?:-[a-z]+)*\b")  # C1 … C13, C4a, A1, and dashed (old sub-claim) ids
NOT_A_CLAIM = {"C99"}  # test_claims_profile's deliberately unknown id


def _first_column_ids(text: str, heading: str) -> list[str]:
    """The claim ids in the first column of the first table after `heading`."""
    ids, started = [], False
    for line in text.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            started = True
            m = CLAIM_ID.match(line.split("|")[1].strip())
            ids += [m.group(0)] if m else []
        elif started:
            break
    return ids


def test_every_claim_id_used_anywhere_is_in_the_definition_file():
    """The point check, the interval check (a profile's `report.claims`), ARTIFACT.md's tables and every claim id
    written in the code, params, docs and tests all use claims.yaml's ids, and nothing else."""
    from visual_words.claims import claims_of
    from visual_words.config import load_config

    defined = load_claims()
    assert [r.id for r in evaluate_claims(None, None, TOL)] == list(defined)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    named = {"base": raw["report"]["claims"]} | {
        name: (body.get("report") or {}).get("claims", []) for name, body in raw["profiles"].items()}
    with_parts = [cid for cid, c in defined.items() if c.parts]
    for profile, ids in named.items():
        assert set(ids) <= set(with_parts), (profile, ids)
    claims_profile = named["claims"]
    assert [c.id for c in claims_of(load_config("claims", REPO / "params.yaml"))] == claims_profile
    artifact = (REPO / "ARTIFACT.md").read_text()
    assert _first_column_ids(artifact, "## 5. Claims") == list(defined)
    assert _first_column_ids(artifact, "**What it checks**") == claims_profile  # §3b
    files = [*(REPO / "src").rglob("*.py"), *(REPO / "src").rglob("*.yaml"), *(REPO / "src").rglob("*.html"),
             *(REPO / "tests").glob("*.py"), *(REPO / "docs").glob("*.md"), REPO / "params.yaml",
             REPO / "ARTIFACT.md", REPO / "README.md"]
    unknown = sorted({f"{f.relative_to(REPO)}: {m}" for f in files for m in CLAIM_ID.findall(f.read_text())
                      if m not in defined and m not in NOT_A_CLAIM})
    assert not unknown


def _point_reads(claim, trained: str, evaluated: str, delta: float) -> bool:
    """Whether the claim's point rule reads the paper cell (trained, evaluated, δ): what claims.yaml's header says
    each rule selects."""
    args, in_domain = claim.point.args, trained == evaluated
    if claim.point.rule in ("cells", "range"):
        sel = args["select"]
        return (sel.get("figure", "fig3" if math.isinf(delta) else "fig6") == ("fig3" if math.isinf(delta) else "fig6")
                and sel.get("in_domain", in_domain) == in_domain and delta <= sel.get("max_delta", INF)
                and delta == sel.get("delta", delta))
    if claim.point.rule == "share":
        return math.isinf(delta) and (trained, evaluated) in (tuple(args["pair"]), (args["pair"][1],) * 2)
    if claim.point.rule == "ordering":
        return math.isinf(delta)
    if claim.point.rule == "spread":
        return in_domain and delta in [float(d) for d in args["deltas"]]
    return False


def _part_reads(part) -> list[tuple]:
    """The cells (trained, evaluated, δ) an interval part reads, as claims/design.py groups them."""
    from visual_words.claims import TASKS

    if part.rule == "order":
        return [(s, t, d) for s in (part.low, part.high, *TASKS) for t in TASKS for d in part.deltas
                if s in (part.low, part.high) or s == t]  # the two tasks' transfers, every in-domain cell
    cells = [c for c in (part.cell, part.versus) if c is not None]
    if part.rule == "share":  # the transferred cell and the evaluated task's in-domain one
        cells += [type(part.cell)(part.cell.eval, part.cell.eval, part.cell.deltas)]
    return [(c.trained, c.eval, d) for c in cells for d in c.deltas]


def test_every_interval_part_reads_only_cells_its_claims_point_rule_reads():
    """A claim's two rules are about the same cells: the interval check pools a subset of what the point rule
    judges one by one (so a pass of one and a fail of the other disagree about the same data)."""
    for claim in load_claims().values():
        for part in claim.parts:
            if part.rule == "exact":
                assert claim.point.rule == "eps_share" and part.max_delta == claim.point.args["max_delta"]
                continue
            outside = [c for c in _part_reads(part) if not _point_reads(claim, *c)]
            assert not outside, (claim.id, part.name, outside)


def test_each_point_rule_has_its_function():
    from visual_words.claims import POINT_RULES

    assert set(RULES) == set(POINT_RULES)


@pytest.mark.parametrize("text, message", [
    ("C1: {text: a, point: {rule: reported}}\nC1: {text: b, point: {rule: reported}}", r"`C1` is defined twice"),
    ("C1: {text: a, point: {rule: guess}}", r"`C1\.point\.rule` must be one of cells"),
    ("C1: {text: a, point: {rule: share}}", r"`C1\.point`: rule share needs `pair`"),
    ("C1: {text: a, point: {rule: reported}, parts: [{name: p, rule: at_most}]}",
     r"`C1\.parts\[0\]`: rule at_most needs `cell`"),
    ("C1: {text: a, point: {rule: reported}, parts: [{name: p, rule: at_most, cell: {trained: x, eval: y}}]}",
     r"`C1\.parts\[0\]\.cell` needs trained/eval tasks"),
    ("C1: {text: a, point: {rule: reported}, tolerence: 0.1}", r"`C1` needs `text` and `point`"),
])
def test_a_bad_definition_names_the_entry(text, message):
    with pytest.raises(ClaimSpecError, match=message):
        parse_claims(text)


def test_a_share_claim_without_the_papers_number_names_the_entry():
    (claim,) = parse_claims("C1: {text: a, point: {rule: share, pair: [generation, generation]}}").values()
    with pytest.raises(ClaimSpecError, match=r"`C1`: the paper gives no share for generation → generation"):
        evaluate_claims(None, None, 0.1, [claim])
