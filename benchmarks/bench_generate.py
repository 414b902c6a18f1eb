"""Generation for evaluation: our batched path vs diffusers' pipeline called one prompt at a time, same model.

Ours = `evaluate.tasks.generate`: images of several trials in one pipeline call (`evaluate.generation_batch_size`),
each image's conditional and unconditional (CFG) predictions in that one UNet batch, the UNet under the
`evaluate` speed options (compile auto → on for CUDA, attention auto → cuDNN first). Baseline = what a user of
diffusers writes: `pipe(prompt, negative_prompt="")` per image, eager, torch's default attention. Both make the
same images (same seeds, 50 DDIM steps at guidance 7.5 on full size).

    vw bench generate                    # CPU: the tiny SD pipeline (artifacts/tiny/tiny-sd), 64 px, 4 steps
    VW_BENCH_FULL=1 vw bench generate    # GPU: full-size SD-2.1 (random weights), 768 px, 50 steps, CFG 7.5:
                                         # images/s, FLOPs per image (torch's FlopCounterMode), achieved TFLOP/s and
                                         # their fraction of the card's bf16 GEMM rate measured in the same run
                                         # (goal ≥ 50 %); VW_BENCH_GEN_BATCH (default 16) images per call.

The line: `generate ratio=<ours ÷ baseline seconds per image> …`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from visual_words.config import load_config
from visual_words.evaluate.tasks import GENERATION_PROMPT, NEGATIVE_PROMPT, generate, generation_seed
from visual_words.models.adapters import adapter_for
from visual_words.models.token_table import TokenTable

REPO = Path(__file__).resolve().parents[1]
FULL = os.environ.get("VW_BENCH_FULL", "") not in ("", "0")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _baseline(pipe, n_images: int, steps: int, guidance: float, device) -> float:
    """Seconds per image: one diffusers call per image with a plain prompt (an anchor word in place of the token)."""
    _sync(device)
    t0 = time.perf_counter()
    for i in range(n_images):
        pipe(prompt=GENERATION_PROMPT.format("cat"), negative_prompt=NEGATIVE_PROMPT, num_inference_steps=steps,
             guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(generation_seed(i, 0)))
    _sync(device)
    return (time.perf_counter() - t0) / n_images


def _ours(cfg, adapter, k: int, device) -> float:
    """Seconds per image of `generate` for k trials × evaluate.images_per_trial images."""
    vectors = TokenTable.of(adapter).weights[adapter.anchor_id("cat")][None, None].repeat(k, cfg.train.num_vectors, 1)
    _sync(device)
    t0 = time.perf_counter()
    images = generate(cfg, adapter, vectors, seeds=list(range(k)))
    _sync(device)
    n = sum(len(per) for per in images)
    assert n == k * cfg.evaluate.images_per_trial
    return (time.perf_counter() - t0) / n


def count_image_flops(pipe, steps: int, guidance: float) -> float:
    """FLOPs of one image (text encoding, `steps` CFG UNet calls, VAE decode) as torch counts them, from one- and
    two-step runs (FLOPs are linear in the step count), eager."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(n_steps):
        counter = FlopCounterMode(display=False)
        with counter:
            pipe(prompt="a photo of a cat", negative_prompt="", num_inference_steps=n_steps, guidance_scale=guidance,
                 generator=torch.Generator("cpu").manual_seed(0))
        return float(counter.get_total_flops())

    one, two = flops(1), flops(2)
    return one + (two - one) * (steps - 1)


@pytest.mark.skipif(FULL, reason="VW_BENCH_FULL=1 runs the full-size benchmark instead")
def test_generate_tiny(benchmark, report_ratio):
    from visual_words.models.loading import load_model

    loaded = load_model("tiny-sd", root=REPO)
    device = loaded.device
    steps, k = 4, 4
    cfg = load_config("smoke", REPO / "params.yaml", {"evaluate.inference_steps": steps,
                                                      "evaluate.generation_batch_size": k})
    base = _baseline(loaded.pipeline, k, steps, cfg.evaluate.guidance_scale, device)
    adapter = adapter_for(loaded)
    ours = min(_ours(cfg, adapter, k, device) for _ in range(2))
    benchmark.pedantic(lambda: _ours(cfg, adapter, k, device), rounds=1, iterations=1)
    print(f"\ntiny SD, 64 px, {steps} steps, CFG {cfg.evaluate.guidance_scale}, CPU {torch.get_num_threads()} threads: "
          f"ours {ours * 1e3:.1f} ms/image ({k} trials per call), one call per image {base * 1e3:.1f} ms/image")
    report_ratio("generate", ours / base, ours_s_per_image=ours, baseline_s_per_image=base, images_per_call=k,
                 steps=steps, device="cpu", threads=torch.get_num_threads(), load_avg=round(os.getloadavg()[0], 1))


@pytest.mark.skipif(not FULL, reason="set VW_BENCH_FULL=1 (a GPU) for the full-size SD-2.1 benchmark")
def test_generate_full_size(benchmark, report_ratio):
    import full_size_models
    from card_rates import file_card_rates
    from peak import bf16_gemm_tflops, card
    from visual_words.models.loading import resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        pytest.skip("full-size generation needs a GPU")
    batch = int(os.environ.get("VW_BENCH_GEN_BATCH", "16"))
    cfg = load_config("paper", REPO / "params.yaml", {"evaluate.generation_batch_size": batch})
    ec = cfg.evaluate
    peak = bf16_gemm_tflops(device)
    loaded = full_size_models.sd21(device, resolve_dtype(ec.precision, device))
    flops = count_image_flops(loaded.pipeline, ec.inference_steps, ec.guidance_scale)  # eager, before compiling
    base = _baseline(loaded.pipeline, 2, ec.inference_steps, ec.guidance_scale, device)
    adapter = adapter_for(loaded)
    t0 = time.perf_counter()
    _ours(cfg, adapter, batch, device)  # the first call compiles (evaluate.compile auto → on for CUDA)
    first = time.perf_counter() - t0
    ours = _ours(cfg, adapter, batch, device)
    benchmark.pedantic(lambda: _ours(cfg, adapter, batch, device), rounds=1, iterations=1)
    ours = min(ours, benchmark.stats.stats.median / (batch * ec.images_per_trial))
    tflops = flops / ours / 1e12
    name = card(device)
    print(f"\nSD-2.1 full size (random weights), 768 px, {ec.inference_steps} steps, CFG {ec.guidance_scale}, "
          f"{loaded.dtype}, {name}: bf16 GEMM {peak:.0f} TFLOP/s; {flops / 1e12:.2f} TFLOP/image; "
          f"ours {ours * 1e3:.0f} "
          f"ms/image = {1 / ours:.2f} images/s at {batch} per call ({tflops:.0f} TFLOP/s, {tflops / peak:.0%} of the "
          f"GEMM; first call with compiling {first:.0f} s); one diffusers call per image {base * 1e3:.0f} ms/image")
    report_ratio("generate", ours / base, images_per_s=1 / ours, ours_s_per_image=ours, baseline_s_per_image=base,
                 tflop_per_image=flops / 1e12, achieved_tflops=tflops, bf16_gemm_tflops=peak,
                 fraction_of_gemm=tflops / peak, first_call_s=first, images_per_call=batch,
                 steps=ec.inference_steps, dtype=str(loaded.dtype).replace("torch.", ""), device=name)
    basis = (f"bench generate: full-size SD-2.1 stand-in (random weights), 768 px, {ec.inference_steps} steps, "
             f"CFG {ec.guidance_scale}, {batch} images per call")
    print(file_card_rates({"generate_image_s": ours}, basis))
