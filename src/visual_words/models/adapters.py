"""One adapter per model family behind one interface (docs/design.md §3): tokenizer, splicing, outputs, loss.

    adapter = adapter_for(loaded)                       # the family's adapter (models/families/)
    TokenTable.of(adapter)                              # its token table (models/token_table.py)
    adapter.anchor_id("cat")                            # single-token id through the model's own tokenizer
    adapter.text_outputs(["a photo of a {}"], vecs)     # vecs [K, n, d] -> K trials in one forward
    adapter.pooled_hidden_states(prompts, vecs)         # [layers+1, K, P, d] at the end-of-text token
    adapter.loss(vecs, batch)                           # [K] task loss per trial (D3-D5)

Adapters belong to families, not checkpoints: any diffusers Stable Diffusion 1.x/2.x pipeline, OWL-ViT v1/v2, any
open_clip CLIP or transformers CLIPModel. Everything checkpoint-specific (widths, depth, context, prediction type)
is read from the loaded model, so another checkpoint of a family needs a registry entry and no code.

Work removal (docs/design.md §7): CLIP-style text towers are causal and pool at the end-of-text (EOS) token, so
positions after the batch's last EOS cannot change the pooled output. The OWL and CLIP adapters run the tower on the
first `used_length` positions only (transformers' towers take a shorter input as they are; open_clip's
`encode_text` does not, so its tower is run here with the module's own weights: token embedding,
positional_embedding[:L], transformer with attn_mask[:L, :L], ln_final, the library's own pooling, text_projection).
Stable Diffusion keeps all positions: its UNet cross-attends to every one of them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F

from visual_words.models.loading import LoadedModel
from visual_words.models.splice import Tokenized, spliced, tokenize_with_slots
from visual_words.tasks import PROMPTS

Prompts = Sequence[str] | Sequence[Sequence[str]]  # shared by all K trials, or one list per trial

# D2: the prompts each task trains and evaluates with (registry/tasks.yaml).
CLASSIFICATION_PROMPT = PROMPTS["classification"]
DETECTION_PROMPT = PROMPTS["detection"]  # OWL queries are the bare token (its context is 16 tokens)


class Adapter:
    """The family-independent part: tokenizer, table, splicing, K-trial batching. Subclasses supply the tower."""

    cuts_context: bool = True  # text_outputs depend only on positions up to the last EOS

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.entry = loaded.entry
        self.device = loaded.device
        self.dtype = loaded.dtype

    # -- the table and the tokenizer -------------------------------------------------------------------------

    @property
    def embedding(self) -> torch.nn.Embedding:
        return self.loaded.text_embedding

    @property
    def width(self) -> int:
        return int(self.embedding.weight.shape[1])

    @property
    def table_identity(self) -> str:
        """The token table's precision-independent identity (models/table_identity.py)."""
        if self.loaded.table_identity is None:
            raise ValueError(f"model `{self.entry.key}` was built in memory without a table identity; set "
                             "LoadedModel.table_identity from its table before casting it")
        return self.loaded.table_identity

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text` without start/end tokens."""
        raise NotImplementedError

    @property
    def special_ids(self) -> tuple[int, int, int]:
        """(start-of-text, end-of-text, pad) ids."""
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        raise NotImplementedError

    def anchor_id(self, word: str) -> int:
        ids = self.encode(word)
        if len(ids) != 1:
            raise ValueError(f"anchor `{word}` is not a single token of model `{self.entry.key}`: it splits into "
                             f"{len(ids)} ids {ids}")
        return ids[0]

    def token_name(self, token_id: int) -> str:
        """A readable vocabulary entry (CLIP BPE's end-of-word marker stripped)."""
        raise NotImplementedError

    def tokenize(self, prompts: Prompts, n: int, k: int = 1) -> Tokenized:
        bos, eos, pad = self.special_ids
        # The slot positions are overwritten by the splice; the id there only has to be a plain token (not EOS:
        # towers pool at EOS, some by argmax over ids).
        filler = next(i for i in (pad, 0, 1) if i not in (bos, eos))
        return tokenize_with_slots(prompts, n, k, self._encode_cached, bos, eos, pad, self.context_length, filler)

    def _encode_cached(self, text: str) -> list[int]:
        # Training re-tokenises the same few prompt pieces at every step; BPE them once.
        cache = self.__dict__.setdefault("_encoded", {})
        if text not in cache:
            cache[text] = self.encode(text)
        return cache[text]

    # -- forward passes ----------------------------------------------------------------------------------------

    def _tower(self, ids: torch.Tensor, hidden: bool) -> dict[str, Any]:
        """Run the text tower on ids [B, L] -> {"last": [B, L, d], "pooled": [B, D] projected or None,
        "hidden": tuple of layers+1 [B, L, d] (when `hidden`)}."""
        raise NotImplementedError

    def _run(self, prompts: Prompts, vectors: torch.Tensor | None, hidden: bool, cut: bool):
        k, n = (1, 0) if vectors is None else (vectors.shape[0], vectors.shape[1])
        if vectors is not None and vectors.shape[-1] != self.width:
            raise ValueError(f"vectors have width {vectors.shape[-1]}; model `{self.entry.key}` has width "
                             f"{self.width}")
        tok = self.tokenize(prompts, n, k)
        ids = tok.ids[:, : tok.used_length] if cut else tok.ids
        vecs = None if vectors is None else vectors.to(self.device)
        with spliced(self.embedding, vecs, tok):
            out = self._tower(ids.to(self.device), hidden)
        return tok, out

    def text_outputs(self, prompts: Prompts, vectors: torch.Tensor | None) -> torch.Tensor:
        """What the task model consumes, [K, P, ...] (K = 1 when vectors is None): see the subclasses."""
        raise NotImplementedError

    def pooled_hidden_states(self, prompts: Prompts, vectors: torch.Tensor | None) -> torch.Tensor:
        """The end-of-text activation after the embedding layer and after each layer: [layers+1, K, P, d]."""
        tok, out = self._run(prompts, vectors, hidden=True, cut=True)  # causal: nothing after EOS matters here
        rows = torch.arange(tok.ids.shape[0], device=self.device)
        eos = tok.eos.to(self.device)
        return torch.stack([h[rows, eos] for h in out["hidden"]]).reshape(len(out["hidden"]), tok.k, tok.p, -1)

    def loss(self, vectors: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def accelerate(self, opts) -> None:
        """Apply speed options (models.speed.SpeedOptions) to the module that dominates a step (SD: the UNet); a
        no-op for the text-tower families, whose batched K-trial step is already one small forward."""


# ------------------------------------------------------------------------------------------------------------
# Tokenizers: transformers' CLIPTokenizer (SD, OWL, hf-clip) and open_clip's SimpleTokenizer.


class _HFTokenizerMixin:
    loaded: LoadedModel

    def encode(self, text: str) -> list[int]:
        return list(self.loaded.tokenizer(text, add_special_tokens=False).input_ids)

    @property
    def special_ids(self) -> tuple[int, int, int]:
        t = self.loaded.tokenizer
        return int(t.bos_token_id), int(t.eos_token_id), int(t.pad_token_id)

    @property
    def context_length(self) -> int:
        positions = self.text_model.config.max_position_embeddings  # type: ignore[attr-defined]
        return int(min(self.loaded.tokenizer.model_max_length, positions))

    def token_name(self, token_id: int) -> str:
        return self.loaded.tokenizer.convert_ids_to_tokens(int(token_id)).replace("</w>", "")


class _HFTowerMixin:
    """transformers' CLIP-style text model: embeddings -> causal encoder -> final LN -> pool at EOS."""

    text_model: Any
    projection: Any = None

    def _tower(self, ids: torch.Tensor, hidden: bool) -> dict[str, Any]:
        out = self.text_model(input_ids=ids, output_hidden_states=hidden)
        pooled = out.pooler_output
        if self.projection is not None:
            pooled = self.projection(pooled)
        return {"last": out.last_hidden_state, "pooled": pooled, "hidden": out.hidden_states if hidden else None}


class _ContrastiveTextMixin:
    """Towers whose output is an L2-normalised text embedding compared by cosine (CLIP, OWL queries)."""

    train_prompt: ClassVar[str]

    def text_outputs(self, prompts: Prompts, vectors: torch.Tensor | None) -> torch.Tensor:
        tok, out = self._run(prompts, vectors, hidden=False, cut=self.cuts_context)  # type: ignore[attr-defined]
        return F.normalize(out["pooled"].float(), dim=-1).reshape(tok.k, tok.p, -1)

    def loss(self, vectors: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Signed cosine (D4/D5): −mean cos(text, positives) + mean cos(text, negatives), per trial.

        Both means are linear in the normalised text embedding t, so the loss is t · (mean(neg) − mean(pos)); the
        batch carries that `direction` [K, D], computed once per trial from the cached image-side features
        (train.targets), and a step costs one text forward."""
        text = self.text_outputs([self.train_prompt], vectors)[:, 0]
        return (text * batch["direction"].to(text.device, torch.float32)).sum(-1)


# ------------------------------------------------------------------------------------------------------------
# Families


class StableDiffusionAdapter(_HFTokenizerMixin, _HFTowerMixin, Adapter):
    """Any diffusers Stable Diffusion 1.x/2.x pipeline: the UNet conditions on the text encoder's last hidden state."""

    cuts_context = False  # the UNet cross-attends to all 77 positions

    def __init__(self, loaded: LoadedModel):
        super().__init__(loaded)
        from diffusers import DDPMScheduler

        pipe = loaded.pipeline
        self.text_model = pipe.text_encoder
        self.unet = pipe.unet
        # Training noise follows the checkpoint's own schedule and target (SD-2.1: v-prediction), as diffusers'
        # textual-inversion example does (DDPMScheduler built from the pipeline's scheduler config).
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.scheduler.config.prediction_type
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self._unet = self.unet
        from visual_words.models.speed import SpeedOptions

        self.speed = SpeedOptions(compile=False, attention="default")  # plain eager until accelerate()

    def accelerate(self, opts) -> None:
        # The UNet's forward + backward to its context is all of a training step (text encoder ~2 %) and nearly
        # all of a generation step. Changes to the module are in place (shared with the pipeline).
        from visual_words.models.speed import prepare_unet

        self._unet = prepare_unet(self.unet, opts, self.device)
        self.speed = opts

    def unet_forward(self, sample: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor):
        """The UNet's prediction under the speed options (attention backend, memory format)."""
        from visual_words.models.speed import attention, channels_last_input

        with attention(self.speed.attention, self.device):
            return self._unet(channels_last_input(sample, self.speed), timesteps,
                              encoder_hidden_states=context).sample

    def text_outputs(self, prompts: Prompts, vectors: torch.Tensor | None) -> torch.Tensor:
        """The UNet conditioning: the text encoder's last hidden state [K, P, context, d]."""
        tok, out = self._run(prompts, vectors, hidden=False, cut=False)
        last = out["last"]
        return last.reshape(tok.k, tok.p, *last.shape[1:])

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(latents, noise, timesteps)
        raise ValueError(f"model `{self.entry.key}`: unsupported prediction type {self.prediction_type!r}")

    def loss(self, vectors: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Denoising MSE per trial (D3). batch: `prompts` K lists of B strings, `latents` and `noise`
        [K, B, C, h, w], `timesteps` [K, B] (uniform over the training schedule)."""
        k, b = batch["timesteps"].shape
        cond = self.text_outputs(batch["prompts"], vectors)  # [K, B, ctx, d]
        latents = batch["latents"].to(self.device, torch.float32).flatten(0, 1)
        noise = batch["noise"].to(self.device, torch.float32).flatten(0, 1)
        t = batch["timesteps"].to(self.device).flatten()
        noisy = self.scheduler.add_noise(latents, noise, t)
        pred = self.unet_forward(noisy.to(self.dtype), t, cond.flatten(0, 1).to(self.dtype))
        err = (pred.float() - self.target(latents, noise, t)) ** 2
        return err.reshape(k, -1).mean(-1)


class OwlAdapter(_HFTokenizerMixin, _HFTowerMixin, _ContrastiveTextMixin, Adapter):
    """OWL-ViT v1/v2: the query embedding is the projected, L2-normalised pooled text output."""

    train_prompt = DETECTION_PROMPT

    def __init__(self, loaded: LoadedModel):
        super().__init__(loaded)
        core = loaded.model.owlv2 if hasattr(loaded.model, "owlv2") else loaded.model.owlvit
        self.text_model = core.text_model
        self.projection = core.text_projection


class HFClipAdapter(_HFTokenizerMixin, _HFTowerMixin, _ContrastiveTextMixin, Adapter):
    """transformers CLIPModel (e.g. OpenAI CLIP, the generation evaluator)."""

    train_prompt = CLASSIFICATION_PROMPT

    def __init__(self, loaded: LoadedModel):
        super().__init__(loaded)
        self.text_model = loaded.model.text_model
        self.projection = loaded.model.text_projection


class OpenClipAdapter(_ContrastiveTextMixin, Adapter):
    """open_clip CLIP (DFN2B ViT-L/14 and every other open_clip CLIP with a causal text tower)."""

    train_prompt = CLASSIFICATION_PROMPT

    def __init__(self, loaded: LoadedModel):
        super().__init__(loaded)
        m = loaded.model
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_pool_type"):
            if not hasattr(m, attr):
                raise ValueError(f"model `{self.entry.key}`: open_clip model {type(m).__name__} has no `{attr}`; only "
                                 "open_clip.CLIP text towers are supported")
        if getattr(m, "text_pool_type", "argmax") not in ("argmax", "eos", "first"):
            self.cuts_context = False  # pooled at the last position: every position matters
        self.model = m
        self.tokenizer = loaded.tokenizer

    def encode(self, text: str) -> list[int]:
        tok = self.tokenizer
        if hasattr(tok, "encode") and hasattr(tok, "sot_token_id"):  # SimpleTokenizer
            return list(tok.encode(text))
        return list(tok.tokenizer(text, add_special_tokens=False).input_ids)  # open_clip's HFTokenizer wrapper

    @property
    def special_ids(self) -> tuple[int, int, int]:
        tok = self.tokenizer
        if hasattr(tok, "sot_token_id"):
            return int(tok.sot_token_id), int(tok.eot_token_id), 0  # open_clip pads with 0
        hf = tok.tokenizer
        return int(hf.bos_token_id), int(hf.eos_token_id), int(hf.pad_token_id)

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])

    def token_name(self, token_id: int) -> str:
        tok = self.tokenizer
        if hasattr(tok, "decoder"):
            return tok.decoder[int(token_id)].replace("</w>", "")
        return tok.tokenizer.convert_ids_to_tokens(int(token_id)).replace("</w>", "")

    def _tower(self, ids: torch.Tensor, hidden: bool) -> dict[str, Any]:
        from open_clip.transformer import text_global_pool

        m = self.model
        cast = m.transformer.get_cast_dtype()
        length = ids.shape[1]
        x = m.token_embedding(ids).to(cast) + m.positional_embedding[:length].to(cast)
        mask = m.attn_mask[:length, :length] if m.attn_mask is not None else None
        if hidden:
            first = x
            x, layers = m.transformer.forward_intermediates(x, attn_mask=mask)
            states = (first, *layers)
        else:
            x = m.transformer(x, attn_mask=mask)
            states = None
        last = m.ln_final(x)
        pooled = text_global_pool(last, ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if m.text_projection is not None:
            pooled = m.text_projection(pooled) if isinstance(m.text_projection, torch.nn.Linear) \
                else pooled @ m.text_projection
        return {"last": last, "pooled": pooled, "hidden": states}


def adapter_for(loaded: LoadedModel) -> Adapter:
    """The adapter of the loaded model's family (models/families/)."""
    from visual_words.models.families import family_of

    return family_of(loaded).adapter(loaded)
