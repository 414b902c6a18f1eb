"""The CLIP BPE tokenizer all three task models share (49,408 tokens), built offline from open_clip's vocabulary.

SD-2.1's tokenizer, OWLv2's and DFN CLIP's are the same byte-level BPE (only the context length differs: 77 vs 16).
open_clip ships the merges file, so an HF `CLIPTokenizer` can be built with no hub access; its ids equal
open_clip's and OpenAI's (TOOLCHAIN.md §8).
"""

from __future__ import annotations

import functools
import gzip
import json
import tempfile
from pathlib import Path

VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = 49406, 49407


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte -> printable-unicode table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def bpe_file() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def write_tokenizer_files(out_dir: str | Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt (HF CLIPTokenizer layout) for the real CLIP vocabulary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_file()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]  # the same slice as CLIP's SimpleTokenizer
    byte_symbols = list(_bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    vocab_file, merges_file = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_file.write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_file, merges_file


def build_tokenizer(context_length: int = 77, out_dir: str | Path | None = None):
    """An HF CLIPTokenizer over the real vocabulary. `model_max_length` must be set (else padding overflows)."""
    from transformers import CLIPTokenizer

    d = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="vw-clip-bpe-"))
    vocab_file, merges_file = write_tokenizer_files(d)
    # pad with "!" (id 0), as SD-2.1's and OWLv2's tokenizers do; open_clip pads with 0 too.
    tok = CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="!", model_max_length=context_length)
    if out_dir:
        tok.save_pretrained(str(d))
    return tok


@functools.cache
def clip_tokenizer(context_length: int = 77):
    """The shared tokenizer (cached per process)."""
    return build_tokenizer(context_length)


def word_ids(word: str) -> list[int]:
    """BPE ids of a word without the start/end tokens."""
    return clip_tokenizer()(word, add_special_tokens=False).input_ids


def single_token_id(word: str) -> int:
    """The id of a word that is one BPE token; ValueError naming the pieces otherwise (anchors must be single tokens)."""
    ids = word_ids(word)
    if len(ids) != 1:
        pieces = clip_tokenizer().convert_ids_to_tokens(ids)
        raise ValueError(f"`{word}` is not a single CLIP-BPE token: it splits into {pieces}")
    return ids[0]
