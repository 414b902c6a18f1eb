"""The practitioner's toolkit: inspect any textual-inversion embedding and transfer it between models.

    from visual_words.toolkit import inspect_embedding, format_report, resolve_model, transfer_embedding
    entry = resolve_model("tiny-clip")            # a registry key, or a local diffusers / open_clip / HF folder
    report = inspect_embedding(read_embedding(path), load_model(entry), init="cat")
    result = transfer_embedding(read_embedding(path), load_model(src), load_model(dst), cfg, "out.safetensors")

CLI: `vw inspect FILE [--model M]`, `vw transfer FILE --from M1 --to M2` (commands/toolkit.py).

Layer: toolkit (beside evaluate, which it does not import) (docs/design.md, "Layers"; `make lint` enforces it). It
may import train, transfer, plan, reuse, data, models, eps_ball and the foundations; never analysis or above.
"""

from visual_words.toolkit.facts import paper_finding
from visual_words.toolkit.inspection import fitting_models, format_report, inspect_embedding, select_tokens
from visual_words.toolkit.models import entry_for_folder, resolve_model
from visual_words.toolkit.neighbours import PAPER_DELTAS, vector_stats
from visual_words.toolkit.transfer import TransferResult, default_output, transfer_embedding

__all__ = ["PAPER_DELTAS", "TransferResult", "default_output", "entry_for_folder", "fitting_models",
           "format_report", "inspect_embedding", "paper_finding", "resolve_model",
           "select_tokens", "transfer_embedding", "vector_stats"]
