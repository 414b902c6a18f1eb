"""`vw plan`: projections from a rates file, scaling by peak, write_rates, the confirmation rule."""

import io
import math
from pathlib import Path

import pytest
import yaml

from visual_words.cli import main
from visual_words.config import load_config
from visual_words.plan import (
    PlanError,
    PlanRefused,
    add_measured_rates,
    confirm,
    format_plan,
    load_rates_file,
    plan_for,
    rates_for,
    write_rates,
)

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def _rates(tmp_path, **sd) -> Path:
    """A rates file with round numbers: a hand-checkable projection."""
    raw = {
        "cards": {"x1": {"peak_bf16_tflops": 100}, "x2": {"peak_bf16_tflops": 200}},
        "measured": {"x1": {"date": "2026-01-01", "commit": "abc", "basis": "test card",
                            "rates": {"sd_train_step_s": 0.5, "sd_train_step_compiled_s": 0.4, "sd_compile_s": 10,
                                      "generate_image_s": 1.0, "clip_trial_steps_per_s": 1000,
                                      "owl_trial_steps_per_s": 500, "model_load_s": 10, **sd}}},
        "reference_card": "x1",
        "estimated": {k: {"device": dev, "value": v, "basis": "test"} for k, dev, v in [
            ("prepare_image_s", "gpu", 0.1), ("detect_eval_trial_s", "gpu", 0.2), ("classify_eval_trial_s", "gpu", 0.1),
            ("maps_s", "cpu", 60), ("analyze_query_s", "cpu", 0.001), ("analyze_fixed_s", "cpu", 30),
            ("report_s", "cpu", 20)]},
    }
    p = tmp_path / "rates.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_projection_counts_the_grid_and_prices_it_by_hand(tmp_path):
    cfg = load_config("paper", PARAMS, overrides={"study.datasets": ["pascal"], "study.concepts_per_dataset": 2,
                                                  "study.anchors_per_concept": 2, "study.deltas": [0.5],
                                                  "train.compile": False})  # eager: priced at the eager rate
    plan = plan_for(cfg, "x1", 1, _rates(tmp_path))
    rows = {r.stage: r for r in plan.rows}
    assert plan.trials == {"generation": 8, "detection": 8, "classification": 8}  # 2 x 2 x (0.5, inf) each
    assert rows["train (generation)"].seconds == pytest.approx(8 * 1000 * 0.5 + 10)  # + one model load
    assert rows["train (detection)"].seconds == pytest.approx(8 * 1000 / 500 + 10)
    assert rows["evaluate (generation)"].seconds == pytest.approx(24 * 1.0 + 2 * 10)
    assert rows["prepare"].seconds == pytest.approx(2 * (8 + 10) * 0.1 + 3 * 10)
    assert rows["train (generation)"].basis == "measured on x1"
    gpu = sum(r.seconds for r in plan.rows if r.device == "gpu") / 3600
    assert plan.gpu_hours == pytest.approx(gpu)
    assert "measured on x1" in format_plan(plan) and "test card" in format_plan(plan)


def test_an_unmeasured_card_is_scaled_by_its_peak_and_says_so(tmp_path):
    r1, r2 = rates_for("x1", _rates(tmp_path)), rates_for("x2", _rates(tmp_path))
    assert r2["sd_train_step_s"].value == pytest.approx(0.25)  # twice the peak: half the time
    assert r2["owl_trial_steps_per_s"].value == pytest.approx(1000)  # and twice the rate
    assert r2["prepare_image_s"].value == pytest.approx(0.05)  # GPU estimates scale like measured rates
    assert ("scaled by bf16 peak 200/100" in r2["sd_train_step_s"].basis
            and r1["sd_train_step_s"].basis == "measured on x1")
    cfg = load_config("claims", PARAMS)
    assert plan_for(cfg, "x2", 1, _rates(tmp_path)).gpu_hours < plan_for(cfg, "x1", 1, _rates(tmp_path)).gpu_hours


def test_more_gpus_shorten_the_sweep_not_the_gpu_hours(tmp_path):
    cfg = load_config("claims", PARAMS, overrides={"train.compile": False})
    one, four = plan_for(cfg, "x1", 1, _rates(tmp_path)), plan_for(cfg, "x1", 4, _rates(tmp_path))
    train = lambda p: next(r for r in p.rows if r.stage == "train (generation)")  # noqa: E731
    assert four.wall_hours_of(train(four)) == pytest.approx(train(four).seconds / 4 / 3600)
    assert four.wall_hours < one.wall_hours
    assert four.gpu_hours == pytest.approx(one.gpu_hours + 3 * 3 * 10 / 3600)  # 3 more model loads per train task


def test_compile_uses_the_compiled_rate_plus_compiling(tmp_path):
    cfg = load_config("claims", PARAMS, overrides={"train.compile": True})
    row = next(r for r in plan_for(cfg, "x1", 1, _rates(tmp_path)).rows if r.stage == "train (generation)")
    assert row.seconds == pytest.approx(60 * 1000 * 0.4 + 10 + 10)


def test_write_rates_records_a_card_and_the_plan_reads_it(tmp_path):
    p = _rates(tmp_path)
    write_rates("x2", {"sd_train_step_s": 0.1, "generate_image_s": 0.3}, basis="bench on x2", path=p,
                commit="def", date="2026-02-02")
    raw = load_rates_file(p)
    assert raw["measured"]["x2"] == {"date": "2026-02-02", "commit": "def", "basis": "bench on x2",
                                     "rates": {"sd_train_step_s": 0.1, "generate_image_s": 0.3}}
    assert raw["measured"]["x1"]["rates"]["sd_train_step_s"] == 0.5  # the other card is kept
    r = rates_for("x2", p)
    assert r["sd_train_step_s"].value == 0.1 and r["sd_train_step_s"].basis == "measured on x2"
    # a rate x2 did not measure comes from the newest card that did, scaled
    assert r["owl_trial_steps_per_s"].value == pytest.approx(1000) and r["owl_trial_steps_per_s"].source == "x1"
    write_rates("h9", {"model_load_s": 5}, basis="new card", path=p, commit="x", peak_bf16_tflops=50)
    assert rates_for("h9", p)["model_load_s"].value == 5


def test_measurements_of_one_card_add_up_and_name_each_basis(tmp_path):
    """The SD step benchmark, the generation benchmark and a rehearsal each file their own keys for a card; none
    erases another's, and repeating one does not repeat its basis."""
    target = tmp_path / "bench" / "rates.yaml"  # absent: seeded from the packaged rates file
    add_measured_rates("h200", {"sd_train_step_s": 0.2, "sd_compile_s": 50}, basis="sd-step", path=target)
    add_measured_rates("h200", {"generate_image_s": 0.5}, basis="generate", path=target)
    add_measured_rates("h200", {"sd_train_step_s": 0.1}, basis="sd-step", path=target)
    entry = load_rates_file(target)["measured"]["h200"]
    packaged = load_rates_file(None)["measured"]["h200"]
    added = {"sd_train_step_s": 0.1, "sd_compile_s": 50.0, "generate_image_s": 0.5}
    assert entry["rates"] == {**packaged["rates"], **added}
    carried = f"{packaged['basis']} ({packaged['date']} @ {packaged['commit'][:12]})"  # its own date and commit
    assert entry["basis"] == f"{carried} + generate + sd-step"
    assert load_rates_file(target)["cards"] == load_rates_file(None)["cards"]
    r = rates_for("h200", target)
    assert r["generate_image_s"].value == 0.5 and r["generate_image_s"].basis == "measured on h200"


def test_write_rates_refuses_bad_input_and_writes_nothing(tmp_path):
    p = _rates(tmp_path)
    before = p.read_text()
    with pytest.raises(PlanError, match="unknown rate `sd_step`"):
        write_rates("x1", {"sd_step": 1.0}, basis="b", path=p, commit="c")
    with pytest.raises(PlanError, match="positive"):
        write_rates("x1", {"sd_train_step_s": -1}, basis="b", path=p, commit="c")
    with pytest.raises(PlanError, match="peak_bf16_tflops"):
        write_rates("nocard", {"sd_train_step_s": 1}, basis="b", path=p, commit="c")
    assert p.read_text() == before


def test_bad_rates_file_and_card_are_one_line_errors(tmp_path, capsys):
    p = _rates(tmp_path)
    raw = yaml.safe_load(p.read_text())
    del raw["measured"]["x1"]["commit"]
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanError, match=r"measured\.x1\.commit"):
        rates_for("x1", p)
    assert main(["plan", "--params", str(PARAMS), "--profile", "claims", "--gpu", "tpu9"]) == 2
    assert "unknown card `tpu9`" in capsys.readouterr().err


def test_confirm_asks_only_above_the_threshold_and_refuses_without_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("VW_YES", raising=False)
    plan = plan_for(load_config("paper", PARAMS), "x1", 1, _rates(tmp_path))
    assert plan.gpu_hours > 100
    confirm(plan, threshold_gpu_hours=1e6, stdin=io.StringIO(""))  # under the threshold: no question
    with pytest.raises(PlanRefused, match="--yes"):
        confirm(plan, 4.0, stdin=io.StringIO("y\n"))  # not a terminal: never reads an answer
    confirm(plan, 4.0, yes=True, stdin=io.StringIO(""))

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = io.StringIO()
    confirm(plan, 4.0, stdin=Tty("y\n"), out=out)
    assert "Run it? [y/N]" in out.getvalue()
    with pytest.raises(PlanRefused, match="not confirmed"):
        confirm(plan, 4.0, stdin=Tty("\n"), out=io.StringIO())
    monkeypatch.setenv("VW_YES", "1")
    confirm(plan, 4.0, stdin=io.StringIO(""))
    monkeypatch.delenv("VW_YES")
    tiny = plan_for(load_config("smoke", PARAMS, {"study.concepts_per_dataset": 10, "study.anchors_per_concept": 10,
                                                  "train.steps": 1000}), "x1", 1, _rates(tmp_path))
    assert tiny.tiny and tiny.gpu_hours > 4.0 and "tiny random-weight" in format_plan(tiny)
    with pytest.raises(PlanRefused, match="--yes"):  # tiny models are asked too: 10^12 steps never end on a CPU
        confirm(tiny, 4.0, stdin=io.StringIO(""))


def test_sweep_of_the_paper_profile_refuses_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VW_YES", raising=False)
    monkeypatch.delenv("VW_PLAN_SHOWN", raising=False)
    # the paper's grid on the tiny models (the real ones would stop at the model-lock check before the plan)
    tiny = [f"study.models.{role}={key}" for role, key in (("generation", "tiny-sd"), ("detection", "tiny-owlv2"),
                                                          ("classification", "tiny-clip"),
                                                          ("evaluator", "tiny-clip-eval"))]
    rc = main(["sweep", "--params", str(PARAMS), "--profile", "paper", "--rates", str(_rates(tmp_path)), "--gpu", "x1",
               "--set", f"train.out_dir={tmp_path / 'emb'}", *sum((["--set", s] for s in tiny), [])])
    out = capsys.readouterr()
    assert rc == 2 and "[plan] total:" in out.out and "pass --yes" in out.err
    assert not (tmp_path / "emb").exists()


def test_vw_plan_prints_the_table_and_json(capsys):
    import json

    assert main(["plan", "--params", str(PARAMS), "--profile", "claims", "--gpu", "h100", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["card"] == "h100" and d["trials"] == {"generation": 60, "detection": 300, "classification": 300}
    assert {s["stage"] for s in d["stages"]} >= {"prepare", "train (generation)", "evaluate (generation)", "report"}
    assert main(["plan", "--params", str(PARAMS), "--profile", "paper", "--gpu", "a100", "--gpus", "8"]) == 0
    text = capsys.readouterr().out
    assert "on 8 x a100" in text and "h200 scaled by bf16 peak 312/989" in text and "[claims]" not in text
    assert main(["plan", "--params", str(PARAMS), "--profile", "claims"]) == 0
    text = capsys.readouterr().out
    assert "[claims] C1 (claim): words trained in-domain solve their task" in text
    assert "at most 0.2 below the paper (25% of 0.80); level 0.975" in text  # C1 detection
    assert "(above 0; level 0.965)" in text and "[claims] C11" not in text  # C5; no δ = 0.5 words, no sanity check
    assert "[claims] calibration of the verdicts on profile claims" in text and "C5    claim    yes" in text
    assert "[claims] ρ = 0.3: coverage of the two-sided 95 % bootstrap interval" in text


@pytest.mark.parametrize("card", ["h100", "h200"])
def test_claims_profile_fits_three_gpu_hours_on_one_card(card):
    """The issue's budget, at the packaged (measured H200) rates."""
    plan = plan_for(load_config("claims", PARAMS), card, 1)
    assert plan.gpu_hours <= 3.0 and plan.wall_hours <= 3.5
    assert not math.isnan(plan.gpu_hours)
