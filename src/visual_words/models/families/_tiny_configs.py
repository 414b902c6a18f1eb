"""The tiny sizes of the families' text and vision towers (random weights; the smoke profile and the tests).

Each family's `build_tiny` reads them; models/tiny.py builds and caches the checkpoints through the families.
"""

from __future__ import annotations

from visual_words.registry import ModelEntry
from visual_words.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE


def text_config(entry: ModelEntry) -> dict:
    """A transformers CLIP text config of the tiny sizes, with the real vocabulary and special ids."""
    w = entry.text_width
    return dict(vocab_size=VOCAB_SIZE, hidden_size=w, intermediate_size=4 * w, num_hidden_layers=entry.text_layers,
                num_attention_heads=entry.tiny.get("heads", 4), max_position_embeddings=entry.context_length,
                bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=0)


def vision_config(entry: ModelEntry) -> dict:
    t = entry.tiny
    w = t["vision_width"]
    return dict(hidden_size=w, intermediate_size=4 * w, num_hidden_layers=t["vision_layers"],
                num_attention_heads=t.get("heads", 4), image_size=entry.image_size, patch_size=t["patch_size"])
