"""The paper's three architectures at full size with random weights, for the benchmarks.

Timing does not depend on the weights, so benchmarks build these instead of downloading checkpoints. They are the
project's own full-size stand-ins (`visual_words.models.full_size`, configs in `registry/public_configs.yaml`),
wrapped in a `LoadedModel` so the production adapters and trainer run on them unchanged.
"""

from __future__ import annotations

import torch

from visual_words.models.full_size import build_model, public_configs
from visual_words.models.loading import LoadedModel

SD21_UNET = public_configs()["sd21"]["unet"]


def dfn_clip(device: torch.device, dtype: torch.dtype) -> LoadedModel:
    return build_model("dfn-clip", device, dtype)


def owlv2(device: torch.device, dtype: torch.dtype) -> LoadedModel:
    return build_model("owlv2", device, dtype)


def sd21(device: torch.device, dtype: torch.dtype) -> LoadedModel:
    return build_model("sd21", device, dtype)
