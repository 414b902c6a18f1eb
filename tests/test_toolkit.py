"""`vw inspect` / `vw transfer` on the real community embedding (../shared/assets/ti-embeddings, SD-1.x, width 768)
and on our own files, through the real CLI (in-process `main([...])` and one subprocess), on the tiny models."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from visual_words.cli import main
from visual_words.embeddings import read_embedding, sidecar_path, table_hash, write_embedding
from visual_words.models.adapters import adapter_for
from visual_words.models.token_table import TokenTable
from visual_words.transfer import load_map

BIRB = "ti-embeddings/birb-style.learned_embeds.bin"


@pytest.fixture(autouse=True)
def _in_repo(repo_root, monkeypatch, tmp_path):
    monkeypatch.chdir(repo_root)  # registry keys of tiny models resolve against the repo root
    monkeypatch.setenv("VW_CACHE_DIR", str(tmp_path / "user-cache"))  # where `vw transfer` caches its maps


@pytest.fixture(scope="module")
def clip_table(tiny_clip):
    a = adapter_for(tiny_clip)
    return a, TokenTable.of(a).weights


def _inspect_json(capsys, *argv) -> dict:
    assert main(["inspect", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys, argv) -> str:
    assert main([*map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------------------------
# The real community file


def test_inspect_community_file_without_model(shared_assets, capsys):
    path = shared_assets / BIRB
    raw = torch.load(path, weights_only=True)["<birb-style>"]
    r = _inspect_json(capsys, path)
    assert r["format"] == "diffusers-bin" and "model" not in r
    [tok] = r["tokens"]
    assert tok["name"] == "<birb-style>" and tok["shape"] == [1, 768]
    assert tok["vectors"][0]["norm"] == pytest.approx(float(raw.double().norm()), rel=1e-6)
    # Width 768: the registry's ViT-L/14 text towers, and the text encoder SD-1.x files come from.
    assert tok["fits"]["registry"] == ["dfn-clip", "openai-clip-l14"]
    assert any("Stable Diffusion 1.x" in c for c in tok["fits"]["community"])
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "format: diffusers-bin" in text and "token <birb-style>: 1 vector × 768" in text


@pytest.mark.slow  # a fresh interpreter importing torch: ~5 s here
def test_community_file_width_mismatch_is_one_clear_line_in_a_real_process(shared_assets, repo_root):
    path = shared_assets / BIRB
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "visual_words", "inspect", str(path), "--model", "tiny-clip-w48"],
                       capture_output=True, text=True, cwd=repo_root, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert str(path) in r.stderr and "width 768" in r.stderr and "`tiny-clip-w48` has width 48" in r.stderr
    assert "fits: dfn-clip, openai-clip-l14" in r.stderr


def test_transfer_refuses_the_community_file_from_a_narrower_model(shared_assets, tmp_path, capsys):
    out = tmp_path / "birb.tiny-clip.safetensors"
    err = _error(capsys, ["transfer", shared_assets / BIRB, "--from", "tiny-sd", "--to", "tiny-clip", "-o", out,
                          "--set", f"maps.out_dir={tmp_path / 'maps'}"])
    assert "birb-style.learned_embeds.bin" in err and "width 768" in err and "`tiny-sd` has width 32" in err
    assert not out.exists() and not (tmp_path / "maps").exists()


# ---------------------------------------------------------------------------------------------------------------
# Our own files, inspected in a model


def _our_file(tmp_path, a, table, name="cat2.safetensors"):
    """v0 = the anchor `cat` itself; v1 = cat moved 0.3·d_nn(cat); v2 = the word `dog`; sidecar anchor: cat."""
    cat, dog = a.anchor_id("cat"), a.anchor_id("dog")
    d = torch.cdist(table[cat][None].double(), table.double())[0]
    d[cat] = float("inf")
    d_nn = float(d.min())
    step = torch.randn(table.shape[1], generator=torch.Generator().manual_seed(0))
    v = torch.stack([table[cat], table[cat] + 0.3 * d_nn * step / step.norm(), table[dog]])
    path = write_embedding(tmp_path / name, "<cat2>", v, {"anchor": "cat", "model_key": "tiny-clip",
                                                           "token_table_hash": table_hash(table)})
    return path, v, d_nn


def test_inspect_our_file_in_its_model(tmp_path, capsys, clip_table):
    a, table = clip_table
    path, v, d_nn = _our_file(tmp_path, a, table)
    r = _inspect_json(capsys, path, "--model", "tiny-clip", "-k", "4")
    assert r["model"]["key"] == "tiny-clip" and r["model"]["table_hash"] == table_hash(table)
    assert r["init"] == {"word": "cat", "id": a.anchor_id("cat"), "source": "sidecar"} and r["notes"] == []
    v0, v1, v2 = r["tokens"][0]["vectors"]
    # Neighbours agree with a brute-force fp64 computation, decoded through the model's tokenizer.
    dist = torch.cdist(v.double(), table.double())
    cos = torch.nn.functional.normalize(v.double(), dim=1) @ torch.nn.functional.normalize(table.double(), dim=1).T
    for i, row in enumerate((v0, v1, v2)):
        assert [n["id"] for n in row["nearest_l2"]] == dist[i].argsort()[:4].tolist()
        assert [n["id"] for n in row["nearest_cosine"]] == cos[i].argsort(descending=True)[:4].tolist()
        assert row["nearest_l2"][0]["distance"] == pytest.approx(float(dist[i].min()), abs=1e-5)
        assert row["norm"] == pytest.approx(float(v[i].double().norm()), rel=1e-6)
    assert v0["nearest_l2"][0]["token"] == "cat" and v0["nearest_l2"][0]["distance"] == pytest.approx(0, abs=1e-6)
    assert v0["init"]["relative"] == pytest.approx(0, abs=1e-6) and v0["init"]["rank"] == 0
    assert v0["init"]["d_nn"] == pytest.approx(d_nn, rel=1e-6)
    # 0.3 d_nn away: inside the 0.5 and 1.0 balls, not 0.1/0.2; below 0.5 the anchor must still be the nearest.
    assert v1["init"]["relative"] == pytest.approx(0.3, rel=1e-4)
    assert v1["init"]["inside"] == {"0.1": False, "0.2": False, "0.5": True, "1": True}
    assert v1["init"]["nearest_is_init"] and v1["nearest_l2"][0]["token"] == "cat"
    within = {f"{dl:g}": int((dist[1] <= dl * d_nn).sum()) for dl in (0.1, 0.2, 0.5, 1.0)}
    assert v1["init"]["tokens_within"] == within
    assert v2["nearest_l2"][0]["token"] == "dog" and v2["nearest_cosine"][0]["cosine"] == pytest.approx(1, abs=1e-6)
    assert (v2["init"]["rank"] == int((dist[2] < dist[2, a.anchor_id("cat")]).sum())
            and not v2["init"]["nearest_is_init"])
    # --init overrides the sidecar (text report: the vector that is `dog` sits inside the smallest ball).
    assert main(["inspect", str(path), "--model", "tiny-clip", "--init", "dog", "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert "init:   'dog' (id 1929, from --init)" in text and "(init is the nearest word)" in text
    assert "inside the δ = 0.1 ball" in text and "outside every ball up to δ = 1" in text


def test_inspect_in_a_model_folder_and_another_checkpoint(tmp_path, capsys, clip_table, repo_root):
    import shutil

    a, table = clip_table
    path, _, _ = _our_file(tmp_path, a, table)
    # A registered checkpoint named by its folder is that registry entry.
    r = _inspect_json(capsys, path, "--model", repo_root / "artifacts/tiny/tiny-owlv2", "-k", "1")
    assert r["model"]["key"] == "tiny-owlv2" and r["model"]["family"] == "owl-vit"
    assert "another checkpoint" in r["notes"][0]  # trained in tiny-clip: the table hash differs
    # A user's own open_clip folder: detected, loaded through the production loader.
    user = tmp_path / "my open_clip"
    shutil.copytree(repo_root / "artifacts/tiny/tiny-clip", user)
    r = _inspect_json(capsys, path, "--model", user, "-k", "1")
    assert r["model"]["key"].startswith("dir-my-open_clip-") and r["model"]["family"] == "open-clip"
    assert r["model"]["table_hash"] == table_hash(table) and r["notes"] == []


def test_a1111_file_without_model(tmp_path, capsys):
    p = tmp_path / "style.pt"
    v = torch.randn(2, 768)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": v}, "name": "mystyle", "step": 3000,
                "sd_checkpoint_name": "v1-5-pruned"}, p)
    r = _inspect_json(capsys, p)
    assert r["format"] == "a1111-pt" and r["meta"] == {"name": "mystyle", "step": 3000,
                                                        "sd_checkpoint_name": "v1-5-pruned"}
    assert [x["norm"] for x in r["tokens"][0]["vectors"]] == pytest.approx(v.double().norm(dim=1).tolist())


def test_sdxl_files_pick_the_part_of_the_model_width(tmp_path, capsys):
    p = tmp_path / "xl.safetensors"
    save_file({"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 48)}, str(p))
    r = _inspect_json(capsys, p)
    assert [(t["name"], t["width"]) for t in r["tokens"]] == [("clip_l", 32), ("clip_g", 48)]
    r = _inspect_json(capsys, p, "--model", "tiny-clip-w48", "-k", "1")
    assert [t["name"] for t in r["tokens"]] == ["clip_g"]
    err = _error(capsys, ["inspect", p, "--model", "tiny-clip-w48", "--token", "clip_l"])
    assert "xl.safetensors" in err and "`clip_l` has width 32" in err


# ---------------------------------------------------------------------------------------------------------------
# Transfer


def _transfer(tmp_path, *argv):
    return ["transfer", *map(str, argv), "--set", f"maps.out_dir={tmp_path / 'maps'}"]


@pytest.mark.slow
def test_transfer_into_sd_loads_with_diffusers_and_generates(tmp_path, capsys, clip_table, fresh_tiny_sd):
    a, table = clip_table
    src, v, _ = _our_file(tmp_path, a, table)
    out = tmp_path / "cat2.tiny-sd.safetensors"
    assert main(_transfer(tmp_path, src, "--from", "tiny-clip", "--to", "tiny-sd", "-o", out, "-k", "3")) == 0
    printed = capsys.readouterr().out
    assert "fitted and cached" in printed and "WARNING:" in printed and "snap to the nearest word" in printed
    side = json.loads(sidecar_path(out).read_text())
    sd_table = fresh_tiny_sd.pipeline.text_encoder.get_input_embeddings().weight.detach()
    m = side["map"]
    assert m["estimator"] == "ols" and not m["reused"]
    assert m["src_table_hash"] == table_hash(table) and m["dst_table_hash"] == table_hash(sd_table)
    assert m["quality"]["n_heldout"] == 4941 and -1 < m["quality"]["r2"] < 0.1  # unrelated random tables
    assert "share almost no linear structure" in side["warning"] and "0.97–1.00 in-domain" in side["warning"]
    assert (side["model_key"] == "tiny-sd" and side["anchor"] == "cat"
            and side["transferred_from"]["model_key"] == "tiny-clip")
    assert len(side["nearest_tokens"]) == 3 and all(len(row) == 3 for row in side["nearest_tokens"])
    mapped = read_embedding(out).tokens["<cat2>"]
    torch.testing.assert_close(mapped, load_map(m["file"]).apply(v))  # the cached map, applied to every vector
    # diffusers' own loader takes the file as it is, and the pipeline generates with the token.
    pipe = fresh_tiny_sd.pipeline
    n_before = len(pipe.tokenizer)
    pipe.load_textual_inversion(str(out))
    try:
        ids = pipe.tokenizer.convert_tokens_to_ids(["<cat2>", "<cat2>_1", "<cat2>_2"])
        assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids], mapped)
        img = pipe("a photo of a <cat2>", num_inference_steps=2, height=64, width=64, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images
        assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all()
    finally:
        pipe.unload_textual_inversion()
    assert len(pipe.tokenizer) == n_before
    # Inspected in the target model: where it came from, and the distance to its (recorded) anchor there.
    r = _inspect_json(capsys, out, "--model", "tiny-sd", "-k", "1")
    assert r["meta"]["transferred_from"]["model_key"] == "tiny-clip" and "a transferred token" in r["notes"][0]
    assert r["init"]["word"] == "cat" and len(r["tokens"][0]["vectors"]) == 3
    # Never overwritten without --force; with it, the cached map is reused; another estimator gets its own map.
    before = out.read_bytes()
    err = _error(capsys, _transfer(tmp_path, src, "--from", "tiny-clip", "--to", "tiny-sd", "-o", out))
    assert "already exists" in err and "--force" in err and out.read_bytes() == before
    assert main(_transfer(tmp_path, src, "--from", "tiny-clip", "--to", "tiny-sd", "-o", out, "--force")) == 0
    assert "map: ols reused" in capsys.readouterr().out
    assert main(_transfer(tmp_path, src, "--from", "tiny-clip", "--to", "tiny-sd", "-o", out, "--force",
                          "--estimator", "procrustes")) == 0
    capsys.readouterr()
    assert json.loads(sidecar_path(out).read_text())["map"]["estimator"] == "procrustes"
    # fitted maps go to the user cache, never into the DVC-tracked maps.out_dir
    assert (tmp_path / "user-cache" / "maps" / "tiny-clip__to__tiny-sd.procrustes.safetensors").is_file()
    assert not (tmp_path / "maps").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_transfer_sdxl_part_into_an_open_clip_folder(tmp_path, capsys, repo_root):
    import shutil

    user = tmp_path / "oc48"
    shutil.copytree(repo_root / "artifacts/tiny/tiny-clip-w48", user)
    p = tmp_path / "xl.safetensors"
    save_file({"clip_l": torch.randn(2, 32) * 0.1, "clip_g": torch.randn(2, 48)}, str(p))
    out = tmp_path / "xl.oc48.safetensors"
    assert main(_transfer(tmp_path, p, "--from", "tiny-clip-eval", "--to", user, "-o", out, "--set",
                          "maps.holdout_fraction=0.0")) == 0
    printed = capsys.readouterr().out
    assert "token clip_l [tiny-clip-eval, width 32]" in printed and "no held-out quality" in printed
    e = read_embedding(out)  # our format: the project's readers take it for every family
    assert e.format == "visual-words" and e.tokens["<xl>"].shape == (2, 48)
    assert e.meta["model_key"].startswith("dir-oc48-") and e.meta["transferred_from"]["token"] == "clip_l"
    assert "did not test this pair (classification → classification)" in e.meta["warning"]
    # A file with several tokens needs --token.
    multi = tmp_path / "two.safetensors"
    save_file({"<a>": torch.randn(1, 32), "<b>": torch.randn(1, 32)}, str(multi))
    err = _error(capsys, _transfer(tmp_path, multi, "--from", "tiny-clip", "--to", "tiny-clip-w48",
                                   "-o", tmp_path / "m.safetensors"))
    assert "two.safetensors: holds 2 tokens" in err and "--token" in err


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one clear line naming the file, exit 2, nothing written


class _Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_bad_files_give_clear_errors(tmp_path, capsys):
    unknown = tmp_path / "emb.npy"
    np.save(unknown, np.zeros(768, np.float32))
    assert "emb.npy: unknown embedding format" in _error(capsys, ["inspect", unknown])
    nan = tmp_path / "nan.safetensors"
    v = torch.randn(2, 32)
    v[1, 5] = float("nan")
    save_file({"<n>": v}, str(nan))
    assert "nan.safetensors: entry `<n>` has 1 NaN/inf values" in _error(
        capsys, ["inspect", nan, "--model", "tiny-clip"])
    evil = tmp_path / "evil.bin"
    with open(evil, "wb") as f:
        pickle.dump({"<e>": _Payload()}, f)
    for argv in (["inspect", evil], _transfer(tmp_path, evil, "--from", "tiny-clip", "--to", "tiny-sd",
                                              "-o", tmp_path / "e.safetensors")):
        assert "evil.bin: refused" in _error(capsys, argv)
    assert not (tmp_path / "e.safetensors").exists()
    ok = write_embedding(tmp_path / "ok.safetensors", "<t>", torch.randn(1, 32), {})
    assert "not a model folder" in _error(capsys, ["inspect", ok, "--model", tmp_path])
    assert "neither a registry key" in _error(capsys, ["inspect", ok, "--model", "no-such-model"])
    assert "same model" in _error(capsys, _transfer(tmp_path, ok, "--from", "tiny-clip", "--to", "tiny-clip",
                                                    "-o", tmp_path / "same.safetensors"))
    assert "is not a single token" in _error(capsys, ["inspect", ok, "--model", "tiny-clip", "--init", "sombrero hat"])
