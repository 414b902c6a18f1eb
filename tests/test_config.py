from pathlib import Path

import pytest
import yaml

from visual_words.config import ConfigError, load_config, parse_override

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_profiles_resolve_and_override_only_what_differs():
    smoke = load_config("smoke", REPO / "params.yaml")
    paper = load_config("paper", REPO / "params.yaml")
    assert smoke.study.models["generation"] == "tiny-sd" and paper.study.models["generation"] == "sd21"
    # a role the smoke profile does not mention would keep the base value; here all four are swapped
    assert paper.train.steps == 1000 and paper.train.lr == 1e-4 and paper.train.batch_size == 8
    assert paper.study.deltas == [0.1, 0.2, 0.5, 1.0]
    assert smoke.train.steps < 100
    assert smoke.train.betas == paper.train.betas  # not overridden -> inherited from the base section
    assert paper.train.num_vectors == 4


def test_default_profile_comes_from_file():
    assert load_config(params_file=REPO / "params.yaml").profile == "smoke"


def test_unknown_key_names_key_and_file(tmp_path):
    p = _write(tmp_path, lambda r: r["train"].__setitem__("stepz", 3))
    with pytest.raises(ConfigError, match=r"params\.yaml.*train\.stepz"):
        load_config("paper", p)


def test_unknown_key_in_profile_is_an_error(tmp_path):
    p = _write(tmp_path, lambda r: r["profiles"]["smoke"]["train"].__setitem__("lr_typo", 1.0))
    with pytest.raises(ConfigError, match=r"train\.lr_typo"):
        load_config("smoke", p)


def test_wrong_type_names_key(tmp_path):
    p = _write(tmp_path, lambda r: r["train"].__setitem__("steps", "many"))
    with pytest.raises(ConfigError, match=r"train\.steps.*must be int"):
        load_config("paper", p)
    p = _write(tmp_path, lambda r: r["study"].__setitem__("deltas", [0.1, "x"]))
    with pytest.raises(ConfigError, match=r"study\.deltas\[1\]"):
        load_config("paper", p)


def test_missing_value_names_key(tmp_path):
    p = _write(tmp_path, lambda r: r["maps"].pop("estimator"))
    with pytest.raises(ConfigError, match=r"missing value for `maps\.estimator`"):
        load_config("paper", p)


def test_unknown_profile_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile `nope`"):
        load_config("nope", REPO / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("smoke", bad)


def test_cli_overrides():
    cfg = load_config("smoke", REPO / "params.yaml", overrides=dict([parse_override("train.steps=3")]))
    assert cfg.train.steps == 3
    with pytest.raises(ConfigError, match="unknown key `nosuch`"):
        load_config("smoke", REPO / "params.yaml", overrides={"train.nosuch": 1})
    with pytest.raises(ConfigError, match="must look like"):
        parse_override("train.steps")
