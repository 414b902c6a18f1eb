"""The SD UNet speed options (models.speed) leave results unchanged: the same losses and learned vectors after a few
training steps, and the same generated images, with each option on and off, on the tiny SD model (CPU, fp32).

Tolerances: an option may change the kernels (another attention kernel, another memory layout, generated code),
so sums are ordered differently; fp32 rounding of the tiny UNet's outputs moves the loss by ~1e-7 relative. Over 4
Adam steps at lr 1e-2 that stays far inside LOSS_RTOL / VECTOR_ATOL, while a wrong option (e.g. attention without
its scale, a transposed layout read as plain) moves losses by O(1) and vectors by ~lr per step."""

import math

import pytest
import torch

from visual_words.config import ConfigError, load_config
from visual_words.models.adapters import adapter_for
from visual_words.models.loading import load_model
from visual_words.models.speed import SpeedOptionError, SpeedOptions
from visual_words.train.loop import TrialBatch
from visual_words.train.targets import TrialData
from visual_words.trials import Trial

LOSS_RTOL = 1e-4
VECTOR_ATOL = 1e-5
STEPS = 4
SPECS = [("cup", "cup", 0.5), ("dog", "cat", math.inf)]


def _cfg(repo_root, tmp_path, **train):
    overrides = {"train.out_dir": str(tmp_path / "embeddings"), "train.lr": 1e-2} | \
        {f"train.{k}": v for k, v in train.items()}
    return load_config("smoke", repo_root / "params.yaml", overrides)


def _run(cfg, loaded):
    """STEPS steps of two SD trials; returns (losses [STEPS, K], vectors [K, n, d])."""
    adapter = adapter_for(loaded)
    trials = [Trial("generation", "tiny-sd", "coco", c, a, d) for c, a, d in SPECS]
    data = [TrialData("generation", latents=torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(i)))
            for i in range(len(trials))]
    state = TrialBatch(cfg, adapter, trials, data)
    losses = torch.stack([state.step() for _ in range(STEPS)])
    return losses, state.vectors.detach().clone()


@pytest.fixture(scope="module")
def baseline(repo_root, tmp_path_factory):
    """Every option off: eager, torch's own attention choice, contiguous layout."""
    cfg = _cfg(repo_root, tmp_path_factory.mktemp("base"), compile=False, attention="default")
    return _run(cfg, load_model("tiny-sd", root=repo_root))


def _assert_same(result, baseline):
    losses, vectors = result
    base_losses, base_vectors = baseline
    torch.testing.assert_close(losses, base_losses, rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(vectors, base_vectors, rtol=0, atol=VECTOR_ATOL)
    assert not torch.equal(losses[0], losses[-1])  # it trained: a test of nothing would also "agree"


@pytest.mark.parametrize("backend", ["math", "flash", "auto"])  # the CPU has math and flash; auto = CUDA priority list
def test_attention_backend_leaves_training_unchanged(backend, repo_root, tmp_path, tiny_sd, baseline):
    result = _run(_cfg(repo_root, tmp_path, attention=backend), tiny_sd)
    _assert_same(result, baseline)


def test_channels_last_leaves_training_unchanged(repo_root, tmp_path, baseline):
    loaded = load_model("tiny-sd", root=repo_root)  # its own copy: the layout change is in place
    result = _run(_cfg(repo_root, tmp_path, channels_last=True), loaded)
    assert loaded.pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_same(result, baseline)


@pytest.mark.slow
def test_compile_leaves_training_unchanged(repo_root, tmp_path, baseline):
    """torch.compile (inductor, generated C++ on this CPU: ~1-2 min to compile the tiny UNet's forward+backward)."""
    loaded = load_model("tiny-sd", root=repo_root)
    result = _run(_cfg(repo_root, tmp_path, compile=True), loaded)
    assert loaded.pipeline.unet._compiled_call_impl is not None  # it really ran compiled
    _assert_same(result, baseline)


def test_compile_auto_is_off_on_cpu_and_on_for_cuda():
    opts = SpeedOptions()
    assert not opts.compiles(torch.device("cpu")) and opts.compiles(torch.device("cuda"))
    assert SpeedOptions(compile=True).compiles(torch.device("cpu"))


def test_a_strict_backend_the_device_lacks_fails_loudly(repo_root, tmp_path, tiny_sd):
    """`attention: cudnn` is strict: on a CPU it raises rather than silently measuring another kernel."""
    with pytest.raises(RuntimeError):
        _run(_cfg(repo_root, tmp_path, attention="cudnn"), tiny_sd)


def test_fp8_without_torchao_or_gpu_is_one_clear_error(repo_root, tmp_path):
    import importlib.util

    if importlib.util.find_spec("torchao") and torch.cuda.is_available():
        pytest.skip("torchao and a GPU are here: fp8 is measured by `vw bench sd-step` instead")
    loaded = load_model("tiny-sd", root=repo_root, precision="fp8")
    assert loaded.dtype == torch.bfloat16  # everything but the UNet's linear layers
    with pytest.raises(SpeedOptionError, match="fp8 needs (torchao|a CUDA GPU)"):
        _run(_cfg(repo_root, tmp_path, precision="fp8"), loaded)


def test_bad_speed_values_name_their_key(repo_root, tmp_path):
    with pytest.raises(SpeedOptionError, match="train.attention"):
        SpeedOptions.from_section(_cfg(repo_root, tmp_path, attention="fastest").train)
    with pytest.raises(SpeedOptionError, match="train.compile_mode"):
        SpeedOptions.from_section(_cfg(repo_root, tmp_path, compile_mode="turbo").train)
    with pytest.raises(ConfigError, match="train.compile"):
        _cfg(repo_root, tmp_path, compile=3)
    assert _cfg(repo_root, tmp_path, compile="auto").train.compile == "auto"


# -- generation ----------------------------------------------------------------------------------------------------


def _generate(repo_root, loaded, **evaluate):
    from visual_words.evaluate.tasks import generate

    overrides = {"evaluate.images_per_trial": 2, "evaluate.generation_batch_size": 3, "evaluate.inference_steps": 2} | \
        {f"evaluate.{k}": v for k, v in evaluate.items()}
    cfg = load_config("smoke", repo_root / "params.yaml", overrides)
    vectors = torch.randn(2, 2, 32, generator=torch.Generator().manual_seed(0)) * 0.05
    images = generate(cfg, adapter_for(loaded), vectors, seeds=[11, 12])
    return torch.stack([torch.tensor(list(im.getdata()), dtype=torch.float32) for per in images for im in per])


@pytest.fixture(scope="module")
def base_images(repo_root):
    return _generate(repo_root, load_model("tiny-sd", root=repo_root), attention="default")


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_generation_attention_leaves_images_unchanged(backend, repo_root, tiny_sd, base_images):
    """2 trials × 2 images in batches of 3 (so one batch mixes trials), CFG 7.5: the same 8-bit pixels (a pixel
    may flip by one level where fp32 rounding meets a rounding boundary). channels_last and compile act on the
    same UNet forward that training tests above."""
    other = _generate(repo_root, tiny_sd, attention=backend)
    assert base_images.shape == other.shape and base_images.shape[0] == 4
    assert float((base_images - other).abs().max()) <= 1.0
    assert float((base_images - other).abs().mean()) < 0.01


def test_prepare_unet_applies_each_option_once_and_refuses_to_undo_one():
    """The UNet is shared (training adapter, evaluation adapter, diffusers' pipeline): layout and fp8 are applied
    once and cannot be switched back on the same module; compiling is added when asked for and kept."""
    from visual_words.models.speed import prepare_unet

    unet = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3))
    cpu = torch.device("cpu")
    prepare_unet(unet, SpeedOptions(compile=False, channels_last=True), cpu)
    assert unet[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert getattr(unet, "_compiled_call_impl", None) is None
    prepare_unet(unet, SpeedOptions(compile=True, channels_last=True), cpu)  # compiled lazily, in place
    assert unet._compiled_call_impl is not None and isinstance(unet, torch.nn.Sequential)
    with pytest.raises(SpeedOptionError, match="channels_last=True"):
        prepare_unet(unet, SpeedOptions(compile=False, channels_last=False), cpu)
