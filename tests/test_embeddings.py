"""Embedding files: our format round trip, diffusers' own loader, every reader, every error."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from visual_words.embeddings import (
    EmbeddingFileError,
    check_width,
    read_embedding,
    sidecar_path,
    table_hash,
    write_embedding,
)


def test_round_trip_with_sidecar(tmp_path):
    v = torch.randn(4, 32)
    p = write_embedding(tmp_path / "e.safetensors", "<cat2>", v, {"trial_id": "t1", "delta": 0.5, "anchor": "cat"})
    e = read_embedding(p)
    assert e.format == "visual-words"
    assert torch.equal(e.tokens["<cat2>"], v)
    side = json.loads(sidecar_path(p).read_text())
    assert side["trial_id"] == "t1" and side["n_vectors"] == 4 and side["dim"] == 32 and side["delta"] == 0.5
    assert e.meta["anchor"] == "cat"
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temp files left


def test_diffusers_loader_accepts_our_file(tmp_path, fresh_tiny_sd):
    pipe = fresh_tiny_sd.pipeline
    v = torch.randn(4, 32)
    p = write_embedding(tmp_path / "cat2.safetensors", "<cat2>", v, {"trial_id": "t"})
    n_before = len(pipe.tokenizer)
    pipe.load_textual_inversion(str(p))
    try:
        assert len(pipe.tokenizer) == n_before + 4  # <cat2>, <cat2>_1, _2, _3
        ids = pipe.tokenizer.convert_tokens_to_ids(["<cat2>", "<cat2>_1", "<cat2>_2", "<cat2>_3"])
        table = pipe.text_encoder.get_input_embeddings().weight
        assert torch.equal(table[ids], v)
        out = pipe("a photo of a <cat2>", num_inference_steps=2, height=64, width=64, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images
        assert out.shape == (1, 64, 64, 3)
    finally:
        pipe.unload_textual_inversion()
    assert len(pipe.tokenizer) == n_before


def test_real_community_diffusers_bin(shared_assets):
    e = read_embedding(shared_assets / "ti-embeddings" / "birb-style.learned_embeds.bin")
    assert e.format == "diffusers-bin"
    name, v = e.single()
    assert name == "<birb-style>" and v.shape == (1, 768)


def test_diffusers_safetensors_and_shapes(tmp_path):
    p = tmp_path / "learned_embeds.safetensors"
    save_file({"<x>": torch.randn(768)}, str(p))
    e = read_embedding(p)
    assert e.format == "diffusers-safetensors" and e.tokens["<x>"].shape == (1, 768)
    p2 = tmp_path / "m.bin"
    torch.save({"<y>": torch.randn(1, 1024)}, p2)
    assert read_embedding(p2).tokens["<y>"].shape == (1, 1024)
    p3 = tmp_path / "raw.pt"
    torch.save(torch.randn(3, 512), p3)
    e3 = read_embedding(p3)
    assert e3.format == "tensor" and e3.tokens["raw"].shape == (3, 512)


def test_a1111_pt(tmp_path):
    p = tmp_path / "style.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 768)}, "name": "mystyle",
                "step": 3000, "sd_checkpoint": "abc", "sd_checkpoint_name": "v1-5"}, p)
    e = read_embedding(p)
    assert e.format == "a1111-pt" and e.tokens["mystyle"].shape == (2, 768) and e.meta["step"] == 3000


def test_sdxl(tmp_path):
    p = tmp_path / "xl.safetensors"
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(p))
    e = read_embedding(p)
    assert e.format == "sdxl" and e.widths == {"clip_l": 768, "clip_g": 1280}


def test_wrong_width_is_clear(tmp_path):
    p = write_embedding(tmp_path / "e.safetensors", "<t>", torch.randn(1, 768), {})
    with pytest.raises(EmbeddingFileError, match=r"e\.safetensors.*width 768.*`sd21` has width 1024"):
        check_width(read_embedding(p), "<t>", 1024, "sd21")


def test_nan_is_refused(tmp_path):
    v = torch.randn(2, 8)
    v[1, 3] = float("nan")
    p = tmp_path / "nan.safetensors"
    save_file({"<n>": v}, str(p))
    with pytest.raises(EmbeddingFileError, match=r"nan\.safetensors.*NaN"):
        read_embedding(p)
    with pytest.raises(EmbeddingFileError, match="NaN"):
        write_embedding(tmp_path / "w.safetensors", "<n>", v, {})
    assert not (tmp_path / "w.safetensors").exists()


class _Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_pickle_payload_is_refused_not_run(tmp_path, capsys):
    p = tmp_path / "evil.bin"
    with open(p, "wb") as f:
        pickle.dump({"<e>": _Payload()}, f)
    with pytest.raises(EmbeddingFileError, match=r"evil\.bin: refused"):
        read_embedding(p)
    assert "would have run" not in capsys.readouterr().out


def test_unknown_and_broken_files(tmp_path):
    p = tmp_path / "e.npy"
    p.write_bytes(b"x")
    with pytest.raises(EmbeddingFileError, match="unknown embedding format"):
        read_embedding(p)
    t = tmp_path / "trunc.safetensors"
    t.write_bytes(b"\x10\x00\x00")
    with pytest.raises(EmbeddingFileError, match="trunc.safetensors"):
        read_embedding(t)
    d = tmp_path / "d.bin"
    torch.save({"step": 3}, d)
    with pytest.raises(EmbeddingFileError, match="unknown format"):
        read_embedding(d)
    with pytest.raises(EmbeddingFileError, match="no such file"):
        read_embedding(tmp_path / "missing.bin")


def test_table_hash_changes_with_content():
    t = torch.randn(10, 4)
    h = table_hash(t)
    assert h == table_hash(t.clone()) and len(h) == 16
    t2 = t.clone()
    t2[3, 1] += 1e-3
    assert table_hash(t2) != h
