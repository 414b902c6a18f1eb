"""The CLIP BPE tokenizer all three task models share (49,408 tokens), built offline from open_clip's vocabulary.

SD-2.1's tokenizer, OWLv2's and DFN CLIP's are the same byte-level BPE (only the context length differs: 77 vs 16).
open_clip ships the merges file, so an HF `CLIPTokenizer` can be built with no hub access; its ids equal
open_clip's and OpenAI's (docs/toolchain.md §8).
"""

from __future__ import annotations

import functools
import gzip
import json
import os
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
    """An HF CLIPTokenizer over the real vocabulary. `model_max_length` must be set (else padding overflows).
    Without `out_dir` the vocabulary files come from the user cache (never a left-over temporary folder)."""
    if out_dir:
        d = Path(out_dir)
        vocab_file, merges_file = write_tokenizer_files(d)
    else:
        try:
            d = _cached_bpe_dir()
        except OSError:  # no writable user cache (e.g. a container without a home): a temporary folder instead
            with tempfile.TemporaryDirectory(prefix="vw-clip-bpe-") as tmp:
                return _from_files(*write_tokenizer_files(tmp), context_length)
        vocab_file, merges_file = d / "vocab.json", d / "merges.txt"
    tok = _from_files(vocab_file, merges_file, context_length)
    if out_dir:
        tok.save_pretrained(str(d))
    return tok


def _cached_bpe_dir() -> Path:
    """vocab.json + merges.txt of the real vocabulary in the user cache (`cachedir`), written once per open_clip
    BPE file (its size and mtime name the folder), atomically: a folder is renamed into place only when complete,
    and the temporary folder is removed whatever happens."""
    import shutil

    from visual_words.cachedir import user_cache_dir

    st = bpe_file().stat()
    d = user_cache_dir("clip-bpe", f"{st.st_size}-{st.st_mtime_ns}")
    if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bpe-", dir=d.parent))
    try:
        write_tokenizer_files(tmp)
        try:
            os.replace(tmp, d)
        except OSError:  # another process finished first: theirs is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def _from_files(vocab_file: Path, merges_file: Path, context_length: int):
    from transformers import CLIPTokenizer

    # pad with "!" (id 0), as SD-2.1's and OWLv2's tokenizers do; open_clip pads with 0 too. The tokenizer reads
    # both files here, so they may be removed afterwards.
    return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="!", model_max_length=context_length)


@functools.cache
def clip_tokenizer(context_length: int = 77):
    """The shared tokenizer (cached per process)."""
    return build_tokenizer(context_length)


def word_ids(word: str) -> list[int]:
    """BPE ids of a word without the start/end tokens."""
    return clip_tokenizer()(word, add_special_tokens=False).input_ids


def single_token_id(word: str) -> int:
    """The id of a word that is one BPE token; ValueError naming the pieces otherwise (anchors must be single
    tokens)."""
    ids = word_ids(word)
    if len(ids) != 1:
        pieces = clip_tokenizer().convert_ids_to_tokens(ids)
        raise ValueError(f"`{word}` is not a single CLIP-BPE token: it splits into {pieces}")
    return ids[0]
