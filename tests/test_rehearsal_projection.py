"""The rehearsal's measured SD step rate and its per-stage projection of the paper profile
(visual_words.commands.rehearsal)."""

import json

import yaml

from visual_words.commands.rehearsal import measured_rates, stage_lines, write_measured
from visual_words.config import load_config
from visual_words.provenance import write_times
from visual_words.trials import embedding_path, trial_grid


def _rehearsal(repo_root, tmp_path):
    cfg = load_config("rehearsal", repo_root / "params.yaml", {"train.out_dir": str(tmp_path / "emb"),
                                                                "train.steps": 50})
    for i, t in enumerate(x for x in trial_grid(cfg) if x.task == "generation"):
        side = embedding_path(cfg, t)
        side.parent.mkdir(parents=True, exist_ok=True)
        # 50 steps in 6 s: 0.12 s per step (the rehearsal has one generation trial)
        (side.parent / (side.name + ".json")).write_text(json.dumps({"trials_in_batch": 1, "steps": 50}))
        write_times(side.parent / (side.name + ".json"), {"started_ms": 1000,
                                                          "finished_ms": 1000 + (6000 if i == 0 else 8000)})
    return cfg


def test_the_sd_step_rate_is_read_from_the_generation_sidecars(repo_root, tmp_path):
    cfg = _rehearsal(repo_root, tmp_path)
    assert measured_rates(cfg) == {"sd_train_step_s": 0.12}


def test_the_rate_is_filed_for_the_card_and_drives_the_projection(repo_root, tmp_path):
    cfg = _rehearsal(repo_root, tmp_path)
    rates_file = tmp_path / "rates.yaml"
    assert write_measured(cfg, "h200", rates_file) == {"sd_train_step_s": 0.12}
    entry = yaml.safe_load(rates_file.read_text())["measured"]["h200"]
    assert entry["rates"]["sd_train_step_s"] == 0.12 and "gpu_rehearsal" in entry["basis"]
    assert entry["rates"]["clip_trial_steps_per_s"] > 0  # the card's other measured rates are kept
    paper = load_config("paper", repo_root / "params.yaml")
    lines = stage_lines({"train": 12.5, "models": 3.0}, paper, "h200", rates_file)
    sd_trials = sum(t.task == "generation" for t in trial_grid(paper))
    sd_hours = sd_trials * paper.train.steps * 0.12 / 3600
    train = next(line for line in lines if " train " in line)
    assert "12.5 s here" in train
    hours = float(train.split("paper profile on one h200: ")[1].split(" GPU-hours")[0].replace(",", ""))
    assert sd_hours < hours < sd_hours + 10  # the SD trials dominate; OWL/CLIP training adds little
    assert "not part of a paper run" in next(line for line in lines if " models " in line)
    assert lines[-1].startswith("[gpu-rehearsal] paper profile in all:")
