"""Model families: everything the project knows about one kind of checkpoint, in one module per family.

A family (stable-diffusion, owl-vit, open-clip, hf-clip) owns its library's loader call, where its text tower's
input-embedding table lives (live and in the checkpoint files), how its tokenizer's vocabulary is read, the image-side
features its task caches, the files its loader reads from a hub repo, the task (and so the loss) it serves, its
adapter, and how a tiny random-weight checkpoint of it is built. Every other module asks the family object
(`family_of(entry_or_loaded)`), so stages never branch on a family's name, and a new family (SDXL, SigLIP, …) is one
module here plus its registry entries: `register(MyFamily())`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from visual_words.models.loading import LoadedModel
    from visual_words.registry import ModelEntry

_BUILTIN = ("stable_diffusion", "owl_vit", "open_clip", "hf_clip")  # modules of this package, loaded on first use
_FAMILIES: dict[str, "Family"] = {}


class Family:
    """The interface; each family module subclasses it and registers one instance."""

    name: ClassVar[str] = ""
    library: ClassVar[str] = ""  # the library whose loader reads it (diffusers | transformers | open_clip)
    # the study role its models serve, and so its loss: generation | detection | classification
    task: ClassVar[str] = ""
    # the text tower's weights inside a checkpoint: its folder and the weight files in the loader's order of preference
    table_folder: ClassVar[str] = ""
    table_files: ClassVar[tuple[str, ...]] = ()
    # what the loader reads from a hub repo (fnmatch patterns): `files` when present; of each `weights` group the
    # first alternative present, in the loader's own order of preference
    bake_files: ClassVar[dict[str, Any]] = {}
    loads_main: ClassVar[bool] = False  # its hub loader takes no revision and follows refs/main
    loads_single_file: ClassVar[bool] = False  # an original all-in-one checkpoint can be loaded (an override)
    feature_kinds: ClassVar[tuple[str, ...]] = ()  # the image-side features it computes (data/features.py caches)
    # what `vw data prepare` caches for a study model of this family: feature kind -> splits ("train", "eval")
    prepared_features: ClassVar[dict[str, tuple[str, ...]]] = {}
    # its training reads only the trained concept's own images (no negatives, no pool of other concepts), so prepare
    # caches features only for the concepts the task's grid trains
    trains_on_own_concept_only: ClassVar[bool] = False
    adapter_class: ClassVar[str] = ""  # "module:Class" of its adapter (models/adapters.py)
    # the `train.precision` / `evaluate.precision` values it honours (fp8 only where a module is converted to it)
    precisions: ClassVar[tuple[str, ...]] = ("auto", "fp32", "fp16", "bf16")

    # -- loading ---------------------------------------------------------------------------------------------

    def load(self, out: "LoadedModel", ident: str, revision: dict[str, str]) -> list["torch.nn.Module"]:
        """Fill `out` (pipeline / model / processor / preprocess / tokenizer) through the library's own loader and
        return the modules to freeze."""
        raise NotImplementedError

    def text_embedding(self, loaded: "LoadedModel") -> "torch.nn.Embedding":
        """The text tower's input token-embedding table (V × d)."""
        raise NotImplementedError

    def vocabulary(self, loaded: "LoadedModel") -> tuple[dict[str, int], set[str]]:
        """(token string → id, the tokenizer's start/end marker strings)."""
        tok = loaded.tokenizer
        return dict(tok.get_vocab()), {tok.bos_token, tok.eos_token}

    def adapter(self, loaded: "LoadedModel"):
        module, cls = self.adapter_class.split(":")
        return getattr(importlib.import_module(module), cls)(loaded)

    # -- image-side features (computed once per image, cached) ----------------------------------------------

    def image_features(self, kind: str, loaded: "LoadedModel", images: Sequence) -> Any:
        raise self._no_feature(kind, loaded)

    def feature_modules(self, kind: str, loaded: "LoadedModel") -> list[tuple[str, "torch.nn.Module"]]:
        """The modules a feature runs through (only their weights enter the feature cache's fingerprint)."""
        raise self._no_feature(kind, loaded)

    def _no_feature(self, kind: str, loaded: "LoadedModel") -> ValueError:
        return ValueError(f"model `{loaded.entry.key}` (family {self.name}) does not compute `{kind}` features "
                          f"(it computes: {', '.join(self.feature_kinds) or 'none'})")

    def preprocess_settings(self, kind: str, loaded: "LoadedModel") -> Any:
        """What, besides the weights, decides a feature's value (image size, processor settings, …)."""
        return {"image_size": loaded.entry.image_size}

    # -- a user's own checkpoint folder (the toolkit's --model DIR) ------------------------------------------

    folder_marker: ClassVar[str] = ""  # the file that says a folder is this family's, in words for error messages

    def folder_fields(self, path) -> dict[str, Any] | None:
        """The registry fields of a checkpoint folder of this family (id, library, text_width, text_layers,
        context_length, image_size, prediction_type), read from the files its library writes; None when the folder
        is not this family's; a ValueError when it is, but in a form the project cannot drive."""
        return None

    # -- tiny random-weight checkpoints (smoke profile, tests) -----------------------------------------------

    def build_tiny(self, entry: "ModelEntry", out) -> None:
        raise NotImplementedError(f"family {self.name} has no tiny-checkpoint builder")


def read_json(path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None


def register(family: Family) -> Family:
    """Make a family known (a module of this package does it on import; a test may register its own)."""
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    _FAMILIES.pop(name, None)


def families() -> dict[str, Family]:
    for module in _BUILTIN:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_FAMILIES)


def family(name: str) -> Family:
    known = families()
    if name not in known:
        raise ValueError(f"unknown model family `{name}` (known: {', '.join(known)})")
    return known[name]


def family_of(thing) -> Family:
    """The family of a `ModelEntry`, a `LoadedModel` or anything with `.entry`."""
    entry = getattr(thing, "entry", thing)
    return family(entry.family)
