"""Speed options for the module that dominates SD training and generation: the UNet.

One place for every knob that changes how fast the UNet runs but not what it computes (up to floating-point
rounding): `torch.compile` (and its mode: `max-autotune`, `reduce-overhead` = CUDA graphs), the scaled-dot-product
attention backend, `channels_last` memory format, and fp8 linear layers (the one knob that changes the numbers
beyond rounding: an opt-in precision, measured against fp16 by `vw bench sd-step`). `train.*` and `evaluate.*`
carry the same keys; `SpeedOptions.from_section(cfg.train)` reads them.

Defaults (params.yaml) follow what was measured on one H200 with full-size SD-2.1 at 768 px, batch 8 (see
docs/performance.md): compile on for CUDA (1.13× per step), cuDNN attention first (150 ms vs 156 ms with torch's
own choice; flash alone 169 ms, memory-efficient alone 256 ms), channels_last off (169 ms: slower). On a CPU
`auto` leaves torch's defaults alone (compiling the tiny test models costs minutes and pays back nothing there).

The text encoder and the VAE are not in the hot loop: VAE latents are computed once per training image
(data.features.sd_latents), and the text encoder must run every step because the learned vectors pass through it
to reach the UNet (~2-3 % of a step).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

COMPILE_MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")
ATTENTION = ("auto", "default", "cudnn", "flash", "efficient", "math")


class SpeedOptionError(ValueError):
    """A speed option that cannot be honoured here (an unknown value, fp8 without torchao or without a GPU)."""


@dataclass(frozen=True)
class SpeedOptions:
    compile: bool | str = "auto"  # auto (on for CUDA) | true | false
    compile_mode: str = "default"  # torch.compile mode; reduce-overhead = CUDA graphs
    attention: str = "auto"  # auto (cuDNN > flash > memory-efficient > math on CUDA) | default | one backend
    channels_last: bool = False
    fp8: bool = False  # precision: fp8 — the UNet's linear layers in float8 (torchao), the rest bf16

    @classmethod
    def from_section(cls, section, where: str = "train") -> "SpeedOptions":
        opts = cls(compile=section.compile, compile_mode=section.compile_mode, attention=section.attention,
                   channels_last=section.channels_last, fp8=section.precision == "fp8")
        opts.check(where)
        return opts

    def check(self, where: str = "train") -> None:
        if self.compile not in (True, False, "auto"):
            raise SpeedOptionError(f"`{where}.compile` must be auto, true or false; got {self.compile!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise SpeedOptionError(f"`{where}.compile_mode` must be one of {', '.join(COMPILE_MODES)}; "
                                   f"got {self.compile_mode!r}")
        if self.attention not in ATTENTION:
            raise SpeedOptionError(f"`{where}.attention` must be one of {', '.join(ATTENTION)}; got {self.attention!r}")

    def compiles(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.compile == "auto" else bool(self.compile)


def check_precision(precision: str, model_keys, setting: str) -> None:
    """Refuse, before any model is loaded, a precision one of the models cannot honour (fp8 exists only for the SD
    UNet: a CLIP or OWLv2 model would quietly run in bf16 instead). `setting` names the key, e.g. `train.precision`."""
    from visual_words.models.families import families, family_of
    from visual_words.registry import model

    for key in dict.fromkeys(model_keys):
        fam = family_of(model(key))
        if precision not in fam.precisions:
            able = [f for f in families().values() if precision in f.precisions]
            only = f"; it exists for {', '.join(f.name for f in able)} only" if able else ""
            if able and setting.startswith("train."):  # training can run those trials alone
                only += f": select those trials with --task {able[0].task}"
            raise SpeedOptionError(f"`{setting}` = {precision}: model `{key}` (family {fam.name}, {fam.task} trials) "
                                   f"cannot honour it (it runs {', '.join(fam.precisions)}){only}")


def _backends(choice: str, device: torch.device) -> list | None:
    """The SDPA backends to allow, in priority order; None = torch's own choice."""
    from torch.nn.attention import SDPBackend

    if choice == "default" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "auto":
        return [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                SDPBackend.MATH]
    return [{"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[choice]]


def attention(choice: str, device: torch.device):
    """A context manager that restricts scaled_dot_product_attention to the chosen backend(s). An explicit single
    backend is strict (torch raises if it cannot run the call: e.g. cuDNN or memory-efficient on a CPU), so a
    benchmark measures what it names. The backward uses the backend its forward picked."""
    from torch.nn.attention import sdpa_kernel

    backends = _backends(choice, device)
    if backends is None:
        return contextlib.nullcontext()
    return sdpa_kernel(backends, set_priority=len(backends) > 1)


def to_fp8(module: torch.nn.Module) -> torch.nn.Module:
    """Swap the module's linear layers for torchao's float8 ones (dynamic per-tensor scaling, forward and backward
    in fp8 on an sm89+ GPU), in place. torchao is not part of the project's pinned environment: install it to try."""
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError:
        raise SpeedOptionError("precision fp8 needs torchao, which is not in requirements.lock (pip install torchao "
                               "matching torch 2.14, on a GPU with fp8 tensor cores: H100/H200/L4/RTX 40xx)") from None
    if not torch.cuda.is_available():
        raise SpeedOptionError("precision fp8 needs a CUDA GPU with fp8 tensor cores (sm89+); none is present")

    def eligible(mod: torch.nn.Module, name: str) -> bool:
        # fp8 GEMMs need both dimensions divisible by 16; SD's small projections (time embedding) stay bf16
        return isinstance(mod, torch.nn.Linear) and mod.in_features % 16 == 0 and mod.out_features % 16 == 0

    return convert_to_float8_training(module, module_filter_fn=eligible)


def prepare_unet(unet: torch.nn.Module, opts: SpeedOptions, device: torch.device) -> torch.nn.Module:
    """Apply the precision, layout and compile options to a frozen UNet, in place, once each (the module is shared:
    the training adapter, the evaluation adapter and diffusers' pipeline all call it). fp8 and channels_last cannot
    be undone, so asking for another setting of them on the same module is an error; compiling is added when asked
    for and kept. Compiling is lazy: the first call of each input shape pays for it (~100 s for SD-2.1, H200)."""
    done = getattr(unet, "_vw_prepared", None)
    if done is None:
        if opts.fp8:
            unet = to_fp8(unet)
        if opts.channels_last:
            unet.to(memory_format=torch.channels_last)
        unet._vw_prepared = (opts.fp8, opts.channels_last)
    elif done != (opts.fp8, opts.channels_last):
        raise SpeedOptionError(f"this UNet was prepared with fp8={done[0]}, channels_last={done[1]}; load the model "
                               "again to change them")
    if opts.compiles(device) and getattr(unet, "_compiled_call_impl", None) is None:
        # nn.Module.compile compiles in place: the module keeps its type and attributes, so diffusers' pipeline
        # (which reads unet.config, unet.dtype, …) runs the compiled forward without noticing.
        unet.compile(mode=None if opts.compile_mode == "default" else opts.compile_mode)
    return unet


def channels_last_input(x: torch.Tensor, opts: SpeedOptions) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if opts.channels_last and x.dim() == 4 else x
