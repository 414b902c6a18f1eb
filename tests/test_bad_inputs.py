"""Every bad input is one clear line: the table of bad inputs a careful user or a fault injector tries.

Each case runs the real `vw` command line in process (`cli.main`) in a private workspace (a copy of params.yaml,
its own user cache) and asserts: exit code 2; exactly one line on stderr that names the file or key at fault and
the problem; no traceback; and nothing in the workspace created, changed or removed (run lock included). No case
needs a model's weights (the checks run before any model is loaded, which is the point of most of them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from visual_words.cli import main
from visual_words.embeddings import write_embedding

V32 = torch.arange(64, dtype=torch.float32).reshape(2, 32) / 64


class Evil:
    """A pickle payload that would run a command when loaded (it never is: the file only has to exist)."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


# ---- files the cases read -----------------------------------------------------------------------------------------


def _token(ws: Path) -> Path:
    return write_embedding(ws / "tok.safetensors", "<tok>", V32, {"anchor": "cat"})


def _damaged_token(ws: Path) -> Path:
    p = _token(ws)
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF  # one byte of the vectors, in place
    p.write_bytes(bytes(data))
    return p


def _clip_folder(ws: Path, name: str, weights: bool) -> Path:
    from transformers import CLIPConfig

    d = ws / name
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    CLIPConfig(text_config={**small, "vocab_size": 49408}, vision_config={**small, "image_size": 32, "patch_size": 8},
               projection_dim=16).save_pretrained(d)
    if weights:
        with open(d / "pytorch_model.bin", "wb") as f:
            pickle.dump({"text_model.embeddings.token_embedding.weight": Evil()}, f)
    return d


def _coco(ws: Path, name: str, dup: str) -> Path:
    gt = {"images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
          "categories": [{"id": 1, "name": "cup"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                          {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10]}]}
    if dup == "annotation":
        gt["annotations"][1]["id"] = 1
    elif dup == "image":
        gt["images"][1]["id"] = 1
    p = ws / name
    p.write_text(json.dumps(gt))
    (ws / "dets.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                                                "score": 0.9}]))
    return p


def _write(name: str, data: bytes):
    def make(ws: Path) -> Path:
        p = ws / name
        p.write_bytes(data)
        return p
    return make


def _save(name: str, tensors: dict):
    def make(ws: Path) -> Path:
        save_file(tensors, str(ws / name))
        return ws / name
    return make


def _sparse_safetensors(path: Path, rows: int, width: int) -> Path:
    """A valid safetensors header declaring a float32 [rows, width] tensor, the data a hole (a sparse file: no disk
    space used, zeros when read)."""
    header = json.dumps({"<x>": {"dtype": "F32", "shape": [rows, width], "data_offsets": [0, rows * width * 4]}})
    header += " " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header.encode())
        f.truncate(8 + len(header) + rows * width * 4)
    return path


def _pickle(name: str, obj):
    def make(ws: Path) -> Path:
        with open(ws / name, "wb") as f:
            pickle.dump(obj, f)
        return ws / name
    return make


def _params(text: str | bytes):
    def make(ws: Path) -> Path:
        p = ws / "bad-params.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return p
    return make


def _manifests(ws: Path) -> Path:
    """The manifests `vw data prepare` writes for the smoke grid's COCO (3 concepts), in a folder of the workspace."""
    from visual_words.config import load_config
    from visual_words.data.prepare import prepare

    sets = {"prepare.manifests_dir": str(ws / "manifests"), "prepare.synthetic_root": str(ws / "synthetic"),
            "prepare.precompute_features": False, "study.datasets": ["coco"]}
    prepare(load_config("smoke", ws / "params.yaml", sets), progress=False)
    return ws / "manifests"


# ---- the table: id -> (files to make, argv ({P}: params file, {F}: the made file, {W}: the workspace),
#      substrings the one line must hold) ---------------------------------------------------------------------------

def _set(override: str, *expect: str):
    return (None, ["train", "--params", "{P}", "--set", override], ["--set", *expect])


CASES: dict[str, tuple] = {
    # --set parsing and the schema's ranges and allowed values
    "set-unclosed-list": _set("train.steps=[1", "train.steps=[1", "not valid YAML"),
    "set-key-under-a-value": _set("train.steps.x=1", "`train.steps` is a value"),
    "set-device-tpu": _set("study.device=tpu", "`study.device`", "auto, cpu, cuda, cuda:N or mps", "'tpu'"),
    "set-device-cuda-x": _set("study.device=cuda:x", "`study.device`", "'cuda:x'"),
    "set-batch-size-0": _set("train.batch_size=0", "`train.batch_size`", "≥ 1", "got 0"),
    "set-steps-negative": _set("train.steps=-5", "`train.steps`", "≥ 1", "got -5"),
    "set-steps-text": _set("train.steps=abc", "`train.steps`", "must be int"),
    "set-precision-fp4": _set("train.precision=fp4", "`train.precision`", "one of auto, fp32, fp16, bf16, fp8",
                              "'fp4'"),
    "set-eval-precision": _set("evaluate.precision=int4", "`evaluate.precision`", "one of auto, fp32"),
    "set-unknown-section": (None, ["train", "--params", "{P}", "--set", "nosuch.key=1"], ["nosuch.key", "`nosuch`"]),
    "set-unknown-key": (None, ["train", "--params", "{P}", "--set", "train.stepz=5"], ["train.stepz", "`stepz`",
                                                                                     "steps"]),
    "set-no-equals": (None, ["train", "--params", "{P}", "--set", "trainsteps5"], ["trainsteps5", "section.key=value"]),
    "set-empty-key": (None, ["train", "--params", "{P}", "--set", "=5"], ["`=5`", "section.key"]),
    "set-lr-zero": _set("train.lr=0", "`train.lr`", "> 0"),
    "set-estimator": _set("maps.estimator=lasso", "`maps.estimator`", "ols, ridge, procrustes, affine"),
    "set-holdout-fraction": _set("maps.holdout_fraction=1.5", "`maps.holdout_fraction`", "[0.0, 1.0)"),
    "set-negative-delta": _set("study.deltas=[0.5, -1]", "`study.deltas`", "> 0"),
    "set-ci-level": _set("evaluate.ci_level=2", "`evaluate.ci_level`", "(0.0, 1.0)"),
    "set-no-workers": _set("sweep.num_workers=0", "`sweep.num_workers`", "≥ 1"),
    "set-engine": _set("sweep.engine=dask", "`sweep.engine`", "one of ray"),
    "set-source": _set("prepare.source=web", "`prepare.source`", "real, synthetic"),
    "set-no-vectors": _set("train.num_vectors=0", "`train.num_vectors`", "≥ 1"),
    "set-betas-length": _set("train.betas=[0.9]", "`train.betas`", "2 values"),
    "set-no-images": _set("evaluate.images_per_trial=0", "`evaluate.images_per_trial`", "≥ 1"),
    "set-task-batch-0": _set("train.trials_per_batch_by_task={generation: 0}", "`train.trials_per_batch_by_task`"),
    "set-section-to-scalar": (None, ["train", "--params", "{P}", "--set", "train=5"], ["section `train`",
                                                                                     "must be a mapping"]),
    # the params file itself
    "profile-unknown": (None, ["train", "--params", "{P}", "--profile", "nosuch"], ["unknown profile `nosuch`"]),
    "params-binary": (_params(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), ["train", "--params", "{F}"],
                      ["bad-params.yaml", "not a text file"]),
    "params-empty": (_params(""), ["train", "--params", "{F}"], ["bad-params.yaml", "empty file"]),
    "params-a-list": (_params("- a\n- b\n"), ["train", "--params", "{F}"], ["bad-params.yaml", "mapping of sections"]),
    "params-bad-yaml": (_params("study: [\n"), ["train", "--params", "{F}"], ["bad-params.yaml", "not valid YAML"]),
    "params-missing": (None, ["train", "--params", "{W}/nope.yaml"], ["nope.yaml", "file not found"]),
    "params-a-folder": (None, ["train", "--params", "{W}"], ["is a folder"]),
    "train-no-such-concept": (None, ["train", "--params", "{P}", "--concept", "unicorn"], ["concept=unicorn",
                                                                                         "no trial"]),
    "train-delta-not-a-number": (None, ["train", "--params", "{P}", "--delta", "big"], ["--delta", "'big'"]),
    # embedding files: empty, text, wrong magic, foreign, damaged
    "emb-empty-bin": (_write("e.bin", b""), ["inspect", "{F}"], ["e.bin", "empty file"]),
    "emb-empty-pt": (_write("e.pt", b""), ["inspect", "{F}"], ["e.pt", "empty file"]),
    "emb-empty-safetensors": (_write("e.safetensors", b""), ["inspect", "{F}"], ["e.safetensors", "empty file"]),
    "emb-text-as-bin": (_write("t.bin", b"hello, this is text\n"), ["inspect", "{F}"], ["t.bin", "not a torch file",
                                                                                       "text file"]),
    "emb-text-as-pt": (_write("t.pt", b"not really a pickle\n"), ["inspect", "{F}"], ["t.pt", "text file"]),
    "emb-text-as-safetensors": (_write("t.safetensors", b"{\"a\": 1}\n"), ["inspect", "{F}"],
                                ["t.safetensors", "not a safetensors file"]),
    "emb-png-as-pt": (_write("img.pt", b"\x89PNG\r\n\x1a\n" + bytes(64)), ["inspect", "{F}"], ["img.pt", "image"]),
    "emb-unknown-suffix": (_write("x.txt", b"abc"), ["inspect", "{F}"], ["x.txt", "unknown embedding format"]),
    "emb-missing": (None, ["inspect", "{W}/nope.bin"], ["nope.bin", "no such file"]),
    "emb-a-folder": (None, ["inspect", "{W}"], ["is a folder"]),
    # special files are named for what they are (a FIFO would block a reader forever)
    "emb-fifo": (lambda ws: (os.mkfifo(ws / "pipe.safetensors"), ws / "pipe.safetensors")[1], ["inspect", "{F}"],
                 ["pipe.safetensors", "is a FIFO (named pipe), not an embedding file"]),
    "emb-symlink-loop": (lambda ws: (os.symlink("loop.pt", ws / "loop.pt"), ws / "loop.pt")[1], ["inspect", "{F}"],
                         ["loop.pt", "is a symbolic link loop"]),
    "emb-dangling-symlink": (lambda ws: (os.symlink(ws / "gone.pt", ws / "link.pt"), ws / "link.pt")[1],
                             ["inspect", "{F}"], ["link.pt", "is a symbolic link to", "gone.pt, which does not exist"]),
    "emb-huge-with-a-model": (lambda ws: _sparse_safetensors(ws / "huge.safetensors", 699050, 768),
                              ["inspect", "{F}", "--model", "tiny-clip"],
                              ["huge.safetensors", "declares shape [699050, 768] (536,870,400 values)",
                               "more than an embedding holds"]),
    "transfer-huge": (lambda ws: _sparse_safetensors(ws / "huge.safetensors", 699050, 768),
                      ["transfer", "{F}", "--from", "tiny-clip", "--to", "tiny-sd", "-o", "{W}/out.safetensors",
                       "--params", "{P}"], ["huge.safetensors", "declares shape [699050, 768]"]),
    "emb-malicious-pickle": (_pickle("evil.bin", {"<x>": Evil()}), ["inspect", "{F}"], ["evil.bin", "refused",
                                                                                       "run code"]),
    "emb-nan": (_save("nan.safetensors", {"<x>": torch.tensor([[float("nan"), 1.0]])}), ["inspect", "{F}"],
                ["nan.safetensors", "NaN"]),
    "emb-integer-tensor": (_save("int.safetensors", {"<x>": torch.ones(2, 4, dtype=torch.int64)}), ["inspect", "{F}"],
                           ["int.safetensors", "floating point"]),
    "emb-damaged-in-place": (_damaged_token, ["inspect", "{F}"], ["tok.safetensors", "damaged", "content hash"]),
    "emb-sidecar-not-json": (lambda ws: (_token(ws), (ws / "tok.safetensors.json").write_text("{oops"))[0],
                             ["inspect", "{F}"], ["tok.safetensors.json", "not valid JSON"]),
    "inspect-k-zero": (_token, ["inspect", "{F}", "-k", "0"], ["-k must be ≥ 1"]),
    # model resolution
    "model-weights-not-local": (_save("l14.safetensors", {"<x>": torch.zeros(1, 768)}),
                                ["inspect", "{F}", "--model", "dfn-clip"],
                                ["`dfn-clip`", "weights not found locally: looked in", "models--apple--DFN2B-CLIP",
                                 "vw bake-models dfn-clip"]),
    "model-no-such-folder": (_token, ["inspect", "{F}", "--model", "{W}/no-model"], ["no-model",
                                                                                    "neither a registry key"]),
    "model-foreign-folder": (lambda ws: (_token(ws), (ws / "bert").mkdir(),
                                         (ws / "bert" / "config.json").write_text('{"model_type": "bert"}'))[0],
                             ["inspect", "{F}", "--model", "{W}/bert"], ["config.json", "model_type 'bert'"]),
    "model-malicious-folder": (lambda ws: (_clip_folder(ws, "evil-model", weights=True), _token(ws))[1],
                               ["inspect", "{F}", "--model", "{W}/evil-model"], ["evil-model", "refused",
                                                                                "run code"]),
    # vw transfer: checks before any model is loaded
    "transfer-read-only-folder": (_token, ["transfer", "{F}", "--from", "tiny-clip", "--to", "tiny-sd", "-o",
                                           "{RO}/out.safetensors", "--params", "{P}"], ["read-only"]),
    "transfer-not-safetensors": (_token, ["transfer", "{F}", "--from", "tiny-clip", "--to", "tiny-sd", "-o",
                                          "{W}/out.txt", "--params", "{P}"], ["out.txt", ".safetensors name"]),
    "transfer-same-model": (_token, ["transfer", "{F}", "--from", "tiny-clip", "--to", "tiny-clip", "-o",
                                     "{W}/out.safetensors", "--params", "{P}"], ["same model `tiny-clip`"]),
    "transfer-output-exists": (lambda ws: (_token(ws), _token(ws).rename(ws / "out.safetensors"),
                                           (ws / "tok.safetensors.json").rename(ws / "out.safetensors.json"),
                                           _token(ws))[0],
                               ["transfer", "{F}", "--from", "tiny-clip", "--to", "tiny-sd", "-o",
                                "{W}/out.safetensors", "--params", "{P}"], ["out.safetensors", "already exists",
                                                                            "--force"]),
    # stage output folders are checked when the config is read, before any model is loaded
    "train-out-dir-read-only": (None, ["train", "--params", "{P}", "--set", "train.out_dir={RO}/emb"],
                                ["`train.out_dir`", "read-only"]),
    "maps-out-dir-under-a-file": (_write("afile", b"x"), ["maps", "--params", "{P}", "--set", "maps.out_dir={F}/m"],
                                  ["`maps.out_dir`", "afile", "cannot be written"]),
    # a run that cannot succeed does not start: every stage that loads models checks the model lock first (no Ray
    # cluster, no data pass), and the line names the profile asked for; the GPU-hour question is asked of every
    # profile, tiny models included
    "sweep-paper-without-weights": (None, ["sweep", "--params", "{P}", "--profile", "paper", "--yes"],
                                    ["no model lock at", "profile `paper` (sd21, owlv2", "vw bake-models"]),
    "train-claims-without-weights": (None, ["train", "--params", "{P}", "--profile", "claims"],
                                     ["no model lock at", "profile `claims` (sd21", "BAKE_MODELS=1"]),
    "prepare-claims-without-weights": (None, ["data", "prepare", "--params", "{P}", "--profile", "claims"],
                                       ["vw data: error: no model lock at", "profile `claims`"]),
    "maps-paper-without-weights": (None, ["maps", "--params", "{P}", "--profile", "paper"],
                                   ["vw maps: error: no model lock at", "profile `paper`"]),
    "evaluate-claims-without-weights": (None, ["evaluate", "run", "--params", "{P}", "--profile", "claims"],
                                        ["vw evaluate: error: no model lock at", "profile `claims`"]),
    "analyze-claims-without-weights": (None, ["analyze", "--params", "{P}", "--profile", "claims"],
                                       ["vw analyze: error: no model lock at", "profile `claims`"]),
    # values the grid or a model cannot honour are errors, not caps or quiet substitutes
    "set-concepts-beyond-the-registry": _set("study.concepts_per_dataset=100000",
                                             "`study.concepts_per_dataset` = 100000 exceeds the 10 concepts",
                                             "registry/concepts.yaml", "use at most 10"),
    "set-anchors-beyond-the-registry": _set("study.anchors_per_concept=11", "`study.anchors_per_concept` = 11",
                                            "use at most 10"),
    "set-unknown-dataset": _set("study.datasets=[coco, flickr]", "`study.datasets`", "unknown dataset `flickr`"),
    "train-fp8-on-clip": (None, ["train", "--params", "{P}", "--set", "train.precision=fp8", "--task",
                                 "classification"], ["`train.precision` = fp8", "`tiny-clip` (family open-clip",
                                                     "cannot honour it", "--task generation"]),
    "sweep-fp8-on-owl": (None, ["sweep", "--params", "{P}", "--set", "train.precision=fp8", "--yes"],
                         ["`train.precision` = fp8", "`tiny-owlv2`", "cannot honour it"]),
    "evaluate-fp8": (None, ["evaluate", "run", "--params", "{P}", "--set", "evaluate.precision=fp8"],
                     ["`evaluate.precision` = fp8", "cannot honour it", "stable-diffusion only"]),
    "sweep-manifests-of-another-grid": (_manifests, ["sweep", "--params", "{P}", "--set", "prepare.manifests_dir={F}",
                                                     "--set", "study.datasets=[coco]", "--set",
                                                     "study.concepts_per_dataset=4", "--yes"],
                                        ["manifests/coco.json", "prepared for another grid", "(bear)",
                                         "run `vw data prepare`"]),
    "train-no-manifest": (None, ["train", "--params", "{P}", "--set", "prepare.manifests_dir={W}/none"],
                          ["none/coco.json: manifest not found", "run `vw data prepare`"]),
    "sweep-smoke-beyond-any-budget": (None, ["sweep", "--params", "{P}", "--set", "train.steps=1000000000000"],
                                      ["vw sweep: projected", "exceeds sweep.confirm_above_gpu_hours",
                                       "pass --yes"]),
    # COCO ground truth
    "coco-duplicate-annotation-ids": (lambda ws: _coco(ws, "gt.json", "annotation"),
                                      ["evaluate", "coco-ap", "{F}", "{W}/dets.json"],
                                      ["gt.json", "annotations[1] repeats id 1"]),
    "coco-duplicate-image-ids": (lambda ws: _coco(ws, "gt.json", "image"),
                                 ["evaluate", "coco-ap", "{F}", "{W}/dets.json"], ["gt.json", "images[1] repeats id"]),
    "coco-not-json": (_write("gt.json", b"{not json"), ["evaluate", "coco-ap", "{F}", "{F}"], ["gt.json", "JSON"]),
}


@contextlib.contextmanager
def _read_only_folder(ws: Path):
    """A read-only folder, also for root (who may write anywhere a permission bit forbids): a read-only tmpfs."""
    ro = ws / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True,
                       check=False)
    if r.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs here ({r.stderr.decode().strip()})")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root`: a folder, a special file (a FIFO, a link: never opened) or a file's hash and time."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel, st = str(p.relative_to(root)), p.lstat()
        if stat.S_ISDIR(st.st_mode):
            out[rel] = "dir"
        elif not stat.S_ISREG(st.st_mode):
            out[rel] = f"special {stat.S_IFMT(st.st_mode):o}" + (f" -> {os.readlink(p)}" if p.is_symlink() else "")
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() + f"@{st.st_mtime_ns}"
    return out


@pytest.fixture
def ws(tmp_path, repo_root, monkeypatch):
    w = tmp_path / "ws"
    w.mkdir()
    shutil.copy(repo_root / "params.yaml", w / "params.yaml")
    monkeypatch.chdir(w)
    monkeypatch.setenv("VW_CACHE_DIR", str(w / "user-cache"))
    monkeypatch.delenv("VW_DEBUG", raising=False)
    for name in ("VW_MODELS_LOCK", "VW_YES", "VW_PLAN_SHOWN", "VW_MODELS_CHECKED", "VW_MODEL_OVERRIDES"):
        monkeypatch.delenv(name, raising=False)  # the defaults: no lock beside the copied params.yaml, nothing agreed
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # no weights here
    return w


def test_the_table_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(case, ws, capsys):
    make, argv, expect = CASES[case]
    made = make(ws) if make else None
    with contextlib.ExitStack() as stack:
        ro = stack.enter_context(_read_only_folder(ws)) if any("{RO}" in a for a in argv) else None
        subs = {"{P}": str(ws / "params.yaml"), "{F}": str(made), "{W}": str(ws), "{RO}": str(ro)}
        argv = [_fill(a, subs) for a in argv]
        before = _snapshot(ws)
        capsys.readouterr()
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 2, (rc, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vw "), err
        assert "Traceback" not in err and "Traceback" not in out
        for s in expect:
            assert s in lines[0], (s, lines[0])
        assert _snapshot(ws) == before  # nothing created, changed or removed (no lock file left either)
    assert not (ws / "pwned").exists()


def _fill(arg: str, subs: dict[str, str]) -> str:
    for k, v in subs.items():
        arg = arg.replace(k, v)
    return arg


def test_vw_debug_shows_the_trace(ws, monkeypatch):
    from visual_words.config import ConfigError

    monkeypatch.setenv("VW_DEBUG", "1")
    with pytest.raises(ConfigError, match="train.steps"):
        main(["train", "--params", str(ws / "params.yaml"), "--set", "train.steps=-5"])


def test_printed_token_names_are_escaped(ws, capsys):
    """A name with an ANSI escape, a carriage return and a newline cannot recolour the terminal or fake a line."""
    p = ws / "ansi.safetensors"
    save_file({"<a\x1b[31mRED\nvw: all good\r>": V32}, str(p))
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\nvw: all good" not in out
    assert "token <a\\x1b[31mRED\\nvw: all good\\r>: 2 vectors" in out


# ---- the model overrides file ($VW_MODEL_OVERRIDES): read only by what resolves a model, and one line if bad ------

OVERRIDES = {
    "bad-yaml": (b"sd21: [1, 2\n", ["not valid YAML (line 2, column 1", "unset $VW_MODEL_OVERRIDES"]),
    "a-list": (b"- sd21\n- owlv2\n", ["must be a mapping of registry keys to sources", "got a list"]),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(256)), ["not a text file (not UTF-8)"]),
    "unknown-model": (b"sd99: {folder: x}\n", ["unknown model `sd99`"]),
}


@pytest.fixture
def overrides(ws, monkeypatch):
    """Point $VW_MODEL_OVERRIDES at a file of the workspace; the registry re-reads it (it is cached per process)."""
    from visual_words import registry

    def use(data: bytes) -> Path:
        p = ws / "overrides.yaml"
        p.write_bytes(data)
        monkeypatch.setenv("VW_MODEL_OVERRIDES", str(p))
        registry.models.cache_clear()
        return p

    yield use
    monkeypatch.delenv("VW_MODEL_OVERRIDES", raising=False)
    registry.models.cache_clear()


@pytest.mark.parametrize("case", list(OVERRIDES))
def test_a_bad_overrides_file_is_one_line_naming_it(case, ws, overrides, capsys):
    data, expect = OVERRIDES[case]
    path, token = overrides(data), _token(ws)
    before = _snapshot(ws)
    for argv in (["models", "check"], ["inspect", str(token), "--model", "tiny-clip"]):
        capsys.readouterr()
        assert main(argv) == 2
        out, err = capsys.readouterr()
        [line] = err.strip().splitlines()
        assert line.startswith(f"vw {argv[0]}: error: {path}: ") and "Traceback" not in err + out
        assert all(s in line for s in expect), line
    assert _snapshot(ws) == before


def test_inspect_without_a_model_does_not_read_the_overrides(ws, overrides, capsys):
    overrides(OVERRIDES["bad-yaml"][0])
    assert main(["inspect", str(_token(ws))]) == 0  # widths come from models.yaml alone
    assert "width 32 fits: tiny-sd, tiny-owlv2, tiny-clip, tiny-clip-eval" in capsys.readouterr().out


# ---- a huge file: summarized in bounded memory and output; every vector on request --------------------------------


def _inspect_in_a_process(*argv: str) -> tuple[subprocess.CompletedProcess, int]:
    """`vw inspect` in a fresh interpreter; returns the result and the process's peak memory (KiB)."""
    code = ("import resource, sys\nfrom visual_words.cli import main\nrc = main(sys.argv[1:])\n"
            "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code, "inspect", *argv], capture_output=True, text=True, env=env,
                       timeout=600)
    return r, int(r.stderr.split("maxrss")[-1])


@pytest.mark.slow  # three fresh interpreters; 2 GB of zeros read in chunks
def test_a_huge_file_is_summarized_in_bounded_memory(ws):
    small, base = _inspect_in_a_process(str(_token(ws)))
    huge, peak = _inspect_in_a_process(str(_sparse_safetensors(ws / "huge.safetensors", 699050, 768)))
    assert huge.returncode == 0 and small.returncode == 0, huge.stderr
    lines = huge.stdout.splitlines()
    assert len(lines) < 40  # not 699,054
    assert "token <x>: 699050 vectors × 768" in lines and "  vector 15: norm 0.0000" in lines
    assert "  norms of all 699,050 vectors: min 0.0000, mean 0.0000, max 0.0000" in lines
    assert lines[-1] == "  … 699,034 more vectors (--all-vectors lists every one)"
    assert peak - base < 512 * 1024, (peak, base)  # the 2 GB of data never in memory at once (was 7.3 GB)
    every, _ = _inspect_in_a_process(str(_sparse_safetensors(ws / "big.safetensors", 20000, 768)), "--all-vectors")
    assert every.returncode == 0 and every.stdout.count("\n  vector ") == 20000 and "more vectors" not in every.stdout
