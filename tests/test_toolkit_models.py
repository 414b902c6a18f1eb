"""`--model` folders: the family and sizes are read from each library's own files (no weights needed to detect);
the paper's transfer findings quoted by `vw transfer`."""

from __future__ import annotations

import json
import shutil

import pytest

from visual_words.registry import model
from visual_words.toolkit.facts import kept_share, paper_finding
from visual_words.toolkit.models import entry_for_folder, folder_key, resolve_model


def _configs_only(src, dst):
    """Copy a checkpoint folder's JSON files (not its weights): enough to tell what it is."""
    for f in src.rglob("*.json"):
        (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst / f.relative_to(src))
    return dst


@pytest.mark.parametrize("key", ["tiny-sd", "tiny-owlv2", "tiny-clip", "tiny-clip-eval", "tiny-clip-w48"])
def test_folder_entries_match_the_registry_facts(key, repo_root, tmp_path):
    from visual_words.models.location import local_path

    reg = model(key)
    folder = _configs_only(local_path(reg, repo_root), tmp_path / key)
    e = entry_for_folder(folder)
    assert (e.family, e.library, e.text_width, e.text_layers, e.context_length, e.image_size, e.prediction_type) == \
        (reg.family, reg.library, reg.text_width, reg.text_layers, reg.context_length, reg.image_size,
         reg.prediction_type)
    assert e.key == folder_key(folder.resolve()) and e.local_dir is not None and e.tiny is None
    # The registered folder itself resolves to its registry entry (so cached maps keep their names).
    assert resolve_model(str(local_path(reg, repo_root)), repo_root) == reg


def test_unsupported_folders_are_clear_errors(tmp_path):
    xl = tmp_path / "sdxl"
    xl.mkdir()
    (xl / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline",
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}))
    with pytest.raises(ValueError, match=r"sdxl: a StableDiffusionXLPipeline pipeline"):
        entry_for_folder(xl)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"bert: config.json has model_type 'bert'"):
        entry_for_folder(bert)
    oc = tmp_path / "oc-hf"
    oc.mkdir()
    (oc / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"text_cfg": {"hf_model_name": "xlm-roberta"}}}))
    with pytest.raises(ValueError, match="Hugging Face text tower"):
        entry_for_folder(oc)
    with pytest.raises(ValueError, match="not a model folder"):
        entry_for_folder(tmp_path)
    with pytest.raises(ValueError, match="neither a registry key"):
        resolve_model(str(tmp_path / "missing"))


def test_paper_findings_quote_fig3():
    lo, hi = kept_share("generation", "classification")
    assert (round(lo, 2), hi) == (0.31, 0.84)  # cls→gen: "up to 84 %" (PASCAL .84 / 1.00)
    assert round(kept_share("detection", "classification")[1], 2) == 0.28  # cls→det: "up to 28 %"
    text = paper_finding("open-clip", "stable-diffusion")
    assert "snap to the nearest word" in text and "0.30–0.84 transferred against 0.97–1.00 in-domain" in text
    other = paper_finding("stable-diffusion", "stable-diffusion")
    assert "did not test this pair (generation → generation)" in other and "9%–84%" in other
