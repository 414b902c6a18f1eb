"""A rehearsal of the claims profile on tiny random-weight models: the profile's structure (3 datasets, every word
unconstrained, SD words in every dataset from rotated anchors, the claims it names) through every stage, with
the smoke models, images and step counts substituted and fewer concepts and anchors. It proves the claims machinery
end to end, not the claims."""

import json
from pathlib import Path

import pandas as pd
import pytest

from visual_words.cli import main
from visual_words.config import load_config
from visual_words.report.banner import SMOKE_BANNER

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def rehearsal_overrides(tmp: Path) -> dict:
    return {
        "study.models.generation": "tiny-sd", "study.models.detection": "tiny-owlv2",
        "study.models.classification": "tiny-clip", "study.models.evaluator": "tiny-clip-eval",
        "study.device": "cpu", "study.concepts_per_dataset": 2, "study.anchors_per_concept": 2,
        "prepare.source": "synthetic", "prepare.train_per_concept": 4, "prepare.eval_per_concept": 2,
        "prepare.synthetic_root": str(tmp / "synthetic"), "prepare.manifests_dir": str(tmp / "manifests"),
        "prepare.cache_dir": str(tmp / "cache"), "maps.out_dir": str(tmp / "maps"),
        "train.num_vectors": 2, "train.steps": 4, "train.batch_size": 4, "train.lr": 1.0e-2, "train.log_every": 2,
        "train.checkpoint_every": 0, "train.trials_per_batch_by_task": {"generation": 100},
        "train.out_dir": str(tmp / "emb"), "evaluate.inference_steps": 2, "evaluate.bootstrap_resamples": 200,
        "evaluate.out_dir": str(tmp / "ev"), "analyze.tsne_perplexity": 3.0, "analyze.truncation_word": "",
        "analyze.out_dir": str(tmp / "an"), "report.out_dir": str(tmp / "reports"),
        "sweep.tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
    }


def test_claims_profile_rehearsal_on_tiny_models(tmp_path, capsys):
    import yaml

    overrides = rehearsal_overrides(tmp_path)
    cfg = load_config("claims", REPO / "params.yaml", overrides)
    argv = ["reproduce", "--no-dvc", "--params", str(REPO / "params.yaml"), "--profile", "claims", "--yes"]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[plan] profile claims: 36 trials (generation 12, detection 12, classification 12)" in out

    rep = tmp_path / "reports" / "claims"
    metrics = json.loads((rep / "metrics.json").read_text())
    assert metrics["note"] == SMOKE_BANNER  # tiny models: the smoke banner, whatever the profile
    checked = metrics["verdicts"]
    assert set(checked) | set(metrics["sanity"]) == set(cfg.report.claims)
    assert all(c["status"] in ("supported", "contradicted", "inconclusive") for c in checked.values())  # all ran
    assert set(checked) == {"C1", "C2", "C5"} and metrics["sanity"] == {}  # no δ = 0.5 words: no C11 to check
    assert all(p["level"] in (0.965, 0.97, 0.975, 0.99) for c in checked.values() for p in c["parts"])
    table = pd.read_csv(rep / "claims.csv", comment="#")
    assert set(table["claim"]) == set(cfg.report.claims) and (table["supported_low"] <= table["supported_high"]).all()
    assert {c["id"] for c in metrics["calibration"]} >= set(checked)
    assert (rep / "claims.csv").read_text().splitlines()[0] == f"# {SMOKE_BANNER}"
    page = (rep / "index.html").read_text()
    assert "Verdicts on the paper" in page and page.index('id="claims-profile"') < page.index('id="paper"')
