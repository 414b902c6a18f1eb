"""Fault cases: damage in place, a full disk, two runs at once, a kill mid-run, a sweep's open sockets.

Each test injects the fault for real (bytes flipped in a written file, a small tmpfs, a second process, SIGKILL, a
running local Ray cluster) and checks what the user gets: the damage detected and the output rebuilt byte for
byte, never used; "disk full: PATH" and the earlier outputs intact; a clear refusal of the second run; a resumed
run equal to an uninterrupted one; loopback-only listeners.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import prepared_coco_workspace
from visual_words.cli import main
from visual_words.embeddings import damage, read_embedding, sidecar_path, write_embedding
from visual_words.errors import DiskFullError, UserError
from visual_words.io import sha256_file

V = torch.linspace(-1, 1, 2 * 32).reshape(2, 32)


def _flip(path: Path, offset: int = -5) -> None:
    """Damage a file in place (same inode, same size), as a bad disk or a stray editor would."""
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}


# ---- identical retrains write identical bytes ------------------------------------------------------------------


def test_identical_writes_are_identical_bytes_across_processes(tmp_path):
    """safetensors writes its header metadata in a per-process random order; ours sorts it, so a retrain that
    learns the same vectors writes the same file (DVC sees no change). Checked in this process and another."""
    for i in range(6):
        write_embedding(tmp_path / f"a{i}.safetensors", "<cup>", V, {"anchor": "dog"})
    code = ("import torch, sys; from visual_words.embeddings import write_embedding\n"
            "V = torch.linspace(-1, 1, 2 * 32).reshape(2, 32)\n"
            "for i in range(6): write_embedding(f'{sys.argv[1]}/b{i}.safetensors', '<cup>', V, {'anchor': 'dog'})\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=_env())
    blobs = {p.read_bytes() for p in tmp_path.glob("*.safetensors")}
    assert len(list(tmp_path.glob("*.safetensors"))) == 12 and len(blobs) == 1
    side = json.loads(sidecar_path(tmp_path / "a0.safetensors").read_text())
    assert side["file_sha256"] == sha256_file(tmp_path / "b3.safetensors")


# ---- damage in place: detected, rebuilt, never used --------------------------------------------------------------


def test_a_damaged_token_is_detected_by_every_reader(tmp_path):
    p = write_embedding(tmp_path / "t.safetensors", "<cup>", V, {"anchor": "dog"})
    assert damage(p) is None
    _flip(p)
    assert "damaged" in damage(p)
    with pytest.raises(Exception, match="damaged"):
        read_embedding(p)


@pytest.fixture(scope="module")
def workspace(repo_root, tmp_path_factory):
    """A smoke workspace with the COCO manifest (features computed on demand, so only the CLIP ones are)."""
    ws = tmp_path_factory.mktemp("faults")
    sets = prepared_coco_workspace(repo_root, ws)
    return ws, sets


def _argv(sets: dict, *extra: str) -> list[str]:
    out = []
    for k, v in sets.items():
        out += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    return [*out, *extra]


def test_a_damaged_token_is_retrained_to_the_same_bytes(workspace, capsys):
    ws, sets = workspace
    argv = ["train", "--params", str(ws / "params.yaml"), *_argv(sets), "--task", "classification", "--limit", "2",
            "--no-progress"]
    assert main(argv) == 0
    files = sorted((ws / "emb" / "classification").glob("*.safetensors"))
    assert len(files) == 2
    good = files[0].read_bytes()
    _flip(files[0])
    capsys.readouterr()
    assert main(argv) == 0  # "re-run to resume" repairs it
    out, err = capsys.readouterr()
    assert f"{files[0]}: damaged" in err and "training it again" in err
    assert "1 trained, 1 already done" in out
    assert files[0].read_bytes() == good and damage(files[0]) is None


def test_a_damaged_map_is_refused_then_refitted_to_the_same_bytes(tmp_path, smoke_config, tiny_clip, tiny_sd, capsys):
    from visual_words.config import load_config
    from visual_words.transfer import MapFileError, load_map, map_between, map_path

    cfg = load_config("smoke", smoke_config.source, {"maps.out_dir": str(tmp_path / "maps")})
    map_between(cfg, tiny_clip, tiny_sd)
    path = map_path(cfg, "tiny-clip", "tiny-sd")
    good = path.read_bytes()
    _flip(path, -9)
    with pytest.raises(MapFileError, match="damaged"):
        load_map(path)
    with pytest.raises(MapFileError, match="damaged"):
        map_between(cfg, tiny_clip, tiny_sd, fit_missing=False)  # the evaluation never uses it
    capsys.readouterr()
    lmap = map_between(cfg, tiny_clip, tiny_sd)
    assert "damaged" in capsys.readouterr().err
    assert path.read_bytes() == good and np.isfinite(lmap.weight).all()


def test_a_damaged_feature_cache_entry_is_recomputed(tmp_path, repo_root, tiny_clip, capsys):
    from PIL import Image

    from visual_words.data.features import FeatureCache

    img = tmp_path / "img.png"
    Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)).save(img)
    cache = FeatureCache(tmp_path / "cache")
    first = cache.get_files("clip_image_embeds", tiny_clip, [img])
    [entry] = list((tmp_path / "cache").rglob("*.safetensors"))
    good = entry.read_bytes()
    _flip(entry, -3)
    again = FeatureCache(tmp_path / "cache")
    capsys.readouterr()
    second = again.get_files("clip_image_embeds", tiny_clip, [img])
    assert again.misses == 1 and "damaged" in capsys.readouterr().err
    torch.testing.assert_close(second, first)
    assert entry.read_bytes() == good


def test_a_damaged_evaluation_row_is_evaluated_again(tmp_path, capsys):
    from visual_words.evaluate.runner import _stored
    from visual_words.io import json_digest, write_json

    row = {"trial_id": "classification/coco/cup/anchor=dog/delta=0.5", "value": 0.85}
    path = write_json(tmp_path / "row.json", {"key": "k1", "row": row, "row_sha256": json_digest(row)})
    assert _stored(path, "k1") == row and _stored(path, "k2") is None
    path.write_text(path.read_text().replace("0.85", "0.35"))  # a plausible value, silently wrong
    assert _stored(path, "k1") is None and "damaged" in capsys.readouterr().err


def test_dvc_push_and_pull_deliver_only_good_files(tmp_path, repo_root):
    """With the project's cache type a token damaged in place in the workspace leaves the cached copy intact;
    the rebuilt token is the same bytes; a fresh clone pulls a token that verifies."""
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**_env(), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    cache_type = subprocess.run([dvc, "config", "cache.type"], cwd=repo_root, capture_output=True, text=True,
                                env=env, check=True).stdout.strip()
    assert "hardlink" not in cache_type and "symlink" not in cache_type  # the aliasing this test guards against
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    repo.mkdir()

    def run(*cmd, cwd=repo):
        subprocess.run(list(cmd), cwd=cwd, env=env, check=True, capture_output=True)

    run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "config", "cache.type", cache_type)
    run(dvc, "remote", "add", "-d", "r", str(remote))
    tok = write_embedding(repo / "tok.safetensors", "<cup>", V, {"anchor": "dog"})
    good = tok.read_bytes()
    run(dvc, "add", "-q", "tok.safetensors")
    md5 = json.dumps(__import__("yaml").safe_load((repo / "tok.safetensors.dvc").read_text())["outs"][0]["md5"])[1:-1]
    cached = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    run("git", "add", "-A")
    run("git", "commit", "-qm", "token")
    _flip(tok)
    assert damage(tok) is not None and cached.read_bytes() == good  # the cache is not an alias of the workspace
    write_embedding(tok, "<cup>", V, {"anchor": "dog"})  # what retraining does: same bytes, new file
    assert tok.read_bytes() == good
    run(dvc, "push", "-q")
    run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    run(dvc, "remote", "add", "-f", "-d", "r", str(remote), cwd=clone)
    run(dvc, "pull", "-q", cwd=clone)
    pulled = clone / "tok.safetensors"
    shutil.copy(repo / "tok.safetensors.json", clone / "tok.safetensors.json")  # the sidecar rides with git here
    assert pulled.read_bytes() == good and damage(pulled) is None


# ---- a full disk ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs on this machine ({r.stderr.decode().strip() or r.returncode}); "
                    "the disk-full cases need one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> None:
    with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)


def test_disk_full_is_named_and_earlier_outputs_survive(tmp_path):
    from visual_words.train.checkpoint import save_checkpoint

    with _tmpfs(tmp_path / "small", "256k") as small:
        tok = write_embedding(small / "t.safetensors", "<cup>", V, {"anchor": "dog"})
        before = tok.read_bytes()
        _fill(small)
        with pytest.raises(DiskFullError, match=f"disk full: {small}/t.safetensors"):
            write_embedding(tok, "<cup>", V * 2, {"anchor": "dog"})
        assert tok.read_bytes() == before and damage(tok) is None  # the old token is intact, no temp file left
        assert sorted(p.name for p in small.iterdir()) == ["filler", "t.safetensors", "t.safetensors.json"]
        # torch's own writer says "unexpected pos …" on a full disk: the checkpoint names the disk instead
        with pytest.raises(DiskFullError, match="disk full: .*ckpt.pt"):
            save_checkpoint(small / "ckpt.pt", {"vectors": torch.zeros(64, 1024)})


def test_disk_full_in_a_stage_is_one_line(tmp_path, repo_root, capsys):
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    with _tmpfs(tmp_path / "small", "64k") as small:
        rc = main(["data", "prepare", "--params", str(tmp_path / "params.yaml"), "--set",
                   "prepare.precompute_features=false", "--set", f"prepare.synthetic_root={small}/synthetic",
                   "--set", f"prepare.manifests_dir={tmp_path}/manifests"])
        err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("vw data: error: disk full: ") and str(small) in err
    assert not (tmp_path / "manifests").exists()  # nothing half-written


def test_a_full_tracking_store_names_its_file(tmp_path, repo_root):
    """SQLite says only "database or disk is full"; the user needs to know which disk: the store's file."""
    from visual_words.config import load_config
    from visual_words.tracking import ensure_experiment, log_stage_run

    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    with _tmpfs(tmp_path / "small", "1m") as small:
        cfg = load_config("smoke", tmp_path / "params.yaml", {"sweep.tracking_uri": f"sqlite:///{small}/mlflow.db"})
        ensure_experiment(cfg, "report")  # the store exists; then the disk fills up
        _fill(small)
        with pytest.raises(DiskFullError, match=f"disk full: {small}/mlflow.db"):
            log_stage_run(cfg, "report", {f"m{i}": float(i) for i in range(2000)}, params={"x": "y" * 5000})


# ---- two runs in one checkout ----------------------------------------------------------------------------------


def test_a_second_run_on_the_same_outputs_is_refused(tmp_path, repo_root, capsys):
    from visual_words.config import load_config
    from visual_words.runlock import lock_path

    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    params = str(tmp_path / "params.yaml")
    code = ("import sys, time\nfrom visual_words.config import load_config\nfrom visual_words.runlock import run_lock\n"
            "with run_lock(load_config('smoke', sys.argv[1]), 'vw sweep'):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, params], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["sweep", "--params", params, "--concept", "unicorn"]) == 2  # refused before any work
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ".vw-run-" in err and "another run is writing these outputs" in err
        assert f"pid {holder.pid}" in err and "`vw sweep`" in err
        # a run whose outputs are elsewhere does not wait for it
        assert main(["train", "--params", params, "--set", f"train.out_dir={tmp_path / 'other'}", "--concept",
                     "unicorn"]) == 2
        assert "no trial" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)  # even a killed holder leaves no stale lock behind
        holder.wait()
    assert main(["train", "--params", params, "--concept", "unicorn"]) == 2
    assert "no trial" in capsys.readouterr().err  # got past the lock: the killed holder's file is free
    assert lock_path(load_config("smoke", params)).parent == tmp_path


# ---- kill mid-run, resume --------------------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter importing torch, twice
def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(workspace, tmp_path):
    ws, sets = workspace
    run = {**sets, "train.steps": 60, "train.checkpoint_every": 5}
    sel = ["--task", "classification", "--limit", "2", "--no-progress"]
    clean = {**run, "train.out_dir": str(tmp_path / "clean")}
    assert main(["train", "--params", str(ws / "params.yaml"), *_argv(clean), *sel]) == 0
    killed = {**run, "train.out_dir": str(tmp_path / "killed")}
    argv = [sys.executable, "-m", "visual_words", "train", "--params", str(ws / "params.yaml"), *_argv(killed), *sel]
    p = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "classification" / ".checkpoints"
    deadline = time.time() + 120
    while p.poll() is None and not list(ckpts.glob("*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert list(ckpts.glob("*.pt")), "the run ended before its first checkpoint; nothing was interrupted"
    assert not list((tmp_path / "killed").rglob("*.safetensors"))
    assert main(["train", "--params", str(ws / "params.yaml"), *_argv(killed), *sel]) == 0  # resume
    a = sorted((tmp_path / "clean" / "classification").glob("*.safetensors"))
    b = sorted((tmp_path / "killed" / "classification").glob("*.safetensors"))
    assert [x.name for x in a] == [x.name for x in b] and len(a) == 2
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


# ---- the sweep's local Ray cluster listens on loopback only ----------------------------------------------------


def test_local_ray_cluster_listens_on_loopback_only(smoke_config, monkeypatch):
    import ipaddress

    import psutil

    from visual_words.ray_tasks import start_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = start_ray(smoke_config)
    try:
        @ray.remote
        def pid():
            return os.getpid()

        worker = ray.get(pid.remote())  # a worker is running: its listeners count too
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
        assert worker in {p.pid for p in procs}
        listening = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                listening += [(proc.name(), c.laddr.ip) for c in proc.net_connections(kind="inet")
                              if c.status == psutil.CONN_LISTEN]
    finally:
        ray.shutdown()
    assert len(listening) >= 3  # GCS, raylet, workers
    exposed = [(name, ip) for name, ip in listening
               if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback]
    assert not exposed, exposed


# ---- user caches: never in the checkout, nothing left in the temp folder -----------------------------------------


def test_bpe_files_live_in_the_user_cache_and_no_temp_folder_is_left(tmp_path, monkeypatch):
    import tempfile

    from visual_words.tokenizer import build_tokenizer

    monkeypatch.delenv("VW_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tok = build_tokenizer(77)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert not [p for p in (tmp_path / "tmp").iterdir() if "bpe" in p.name or p.name.startswith("vw")]
    [folder] = list((tmp_path / "xdg" / "visual-words" / "clip-bpe").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["merges.txt", "vocab.json"]
    assert build_tokenizer(16).model_max_length == 16 and len(list(folder.parent.iterdir())) == 1  # reused


def test_a_damaged_manifest_is_refused(workspace):
    from visual_words.data.manifest import read_manifest


    ws, _ = workspace
    path = ws / "manifests" / "coco.json"
    m = read_manifest(path)
    text = path.read_text()
    box = next(iter(m.concepts.values())).train[0]
    assert json.loads(text)["content_sha256"]
    damaged = ws / "damaged.json"
    damaged.write_text(text.replace('"' + box.file + '"', '"' + box.file.replace(".", "x.", 1) + '"', 1))
    assert damaged.read_text() != text
    with pytest.raises(UserError, match="damaged.json: damaged"):
        read_manifest(damaged)


def test_a_damaged_stage_table_is_refused_by_its_readers_and_rebuilt_by_its_stage(tmp_path, smoke_config, capsys):
    """A stage records the sha256 of the tables it writes in provenance.json; the report and every reader of the
    evaluation table refuse a damaged one with one line naming it and the command that rebuilds it."""
    from visual_words.evaluate.runner import COLUMNS, read_table
    from visual_words.provenance import record_output, verify_output, write_provenance
    from visual_words.report.stage import read_stage_csv

    table = tmp_path / "evaluation.csv"
    table.write_text(",".join(COLUMNS) + "\n" + ",".join(["t", "coco", "cup", "dog", "0.5", "classification",
                                                         "classification", "False", "cls_acc", "0.85", "",
                                                         "tiny-clip", "tiny-clip"]) + "\n")
    eps = tmp_path / "eps_stats.csv"
    eps.write_text("trial_id,rel_dist\nt,0.25\n")
    write_provenance(tmp_path, smoke_config, "evaluate", files=[table, eps])
    assert read_table(table)["value"].tolist() == [0.85] and read_stage_csv(eps)["rel_dist"].tolist() == [0.25]
    table.write_text(table.read_text().replace("0.85", "0.35"))  # plausible, silently wrong
    with pytest.raises(UserError, match=r"evaluation.csv: damaged .*`vw evaluate run` again"):
        read_table(table)
    _flip(eps, offset=-3)
    with pytest.raises(UserError, match="eps_stats.csv: damaged"):
        read_stage_csv(eps)
    record_output(table)  # the stage (or `vw evaluate summarize`) rewrote it: trusted again
    assert verify_output(table) == table and read_table(table)["value"].tolist() == [0.35]
