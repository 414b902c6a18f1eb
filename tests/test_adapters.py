"""Adapters: splicing learned vectors into each family's text tower, K trials per forward, the EOS cut, losses."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from visual_words.models.adapters import adapter_for
from visual_words.models.token_table import TokenTable
from visual_words.train.targets import signed_cosine_direction

PROMPTS = ["a photo of a {}", "a rendering of the {}.", "{}"]
FAMILIES = ["tiny_sd", "tiny_owl", "tiny_clip", "tiny_clip_eval"]


@pytest.fixture(params=FAMILIES)
def loaded(request):
    return request.getfixturevalue(request.param)


def _random_vectors(adapter, k, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = TokenTable.of(adapter).weights
    scale = table.std()
    return table[adapter.anchor_id("cat")] + scale * torch.randn(k, n, adapter.width, generator=g)


def test_token_table_is_an_fp32_cpu_copy(loaded):
    a = adapter_for(loaded)
    table = TokenTable.of(a).weights
    assert table.dtype == torch.float32 and table.device.type == "cpu"
    assert table.shape == (49408, loaded.entry.text_width)
    table[0] += 1.0  # a copy: the model's own table is untouched
    assert not torch.equal(table[0], a.embedding.weight[0].float().cpu())


def test_anchor_id_uses_the_models_tokenizer(loaded):
    a = adapter_for(loaded)
    assert a.anchor_id("cat") == 2368 and a.token_name(2368) == "cat"
    with pytest.raises(ValueError, match="sombrero.*not a single token"):
        a.anchor_id("sombrero")


def test_spliced_anchor_equals_the_plain_prompt(loaded):
    """One vector set to the anchor's own embedding gives exactly what the prompt with the anchor word gives."""
    a = adapter_for(loaded)
    anchor = TokenTable.of(a).weights[a.anchor_id("cat")]
    spliced = a.text_outputs(PROMPTS, anchor[None, None])
    plain = a.text_outputs([p.replace("{}", "cat") for p in PROMPTS], None)
    assert spliced.shape == plain.shape
    torch.testing.assert_close(spliced, plain, rtol=0, atol=1e-6)


def test_k_trials_in_one_forward_equal_one_at_a_time(loaded):
    a = adapter_for(loaded)
    vecs = _random_vectors(a, k=3, n=2)
    together = a.text_outputs(PROMPTS, vecs)
    assert together.shape[:2] == (3, len(PROMPTS))
    for k in range(3):
        torch.testing.assert_close(together[k], a.text_outputs(PROMPTS, vecs[k : k + 1])[0], rtol=1e-5, atol=1e-6)
    # each trial's rows really carry its own vectors
    assert not torch.allclose(together[0], together[1])


def test_gradients_reach_only_the_learned_vectors(loaded):
    a = adapter_for(loaded)
    before = a.embedding.weight.detach().clone()
    vecs = _random_vectors(a, k=2, n=2).requires_grad_(True)
    out = a.text_outputs(PROMPTS, vecs)
    # a random projection, not .sum(): the pooled output ends in a LayerNorm, whose sum is constant (TOOLCHAIN §8)
    w = torch.randn(out.shape[-1], generator=torch.Generator().manual_seed(1))
    (out.float() @ w).square().sum().backward()
    assert vecs.grad is not None and bool((vecs.grad.abs().sum(-1) > 0).all())  # every trial, every vector
    assert a.embedding.weight.grad is None
    assert torch.equal(a.embedding.weight.detach(), before)


def test_contrastive_towers_equal_the_librarys_full_context_forward(tiny_clip, tiny_owl, tiny_clip_eval):
    """The EOS cut (only positions up to the batch's last end-of-text token) changes nothing measurable."""
    texts = ["a photo of a cat", "a cropped photo of the small dog .", "sneaker"]
    m = tiny_clip.model
    ref = F.normalize(m.encode_text(tiny_clip.tokenizer(texts)), dim=-1)
    ours = adapter_for(tiny_clip).text_outputs(texts, None)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)

    inputs = tiny_owl.processor(text=texts, return_tensors="pt", padding="max_length")
    ref = F.normalize(tiny_owl.model.owlv2.get_text_features(**inputs).pooler_output, dim=-1)
    torch.testing.assert_close(adapter_for(tiny_owl).text_outputs(texts, None)[0], ref, rtol=1e-5, atol=1e-6)

    inputs = tiny_clip_eval.processor(text=texts, return_tensors="pt", padding="max_length")
    ref = F.normalize(tiny_clip_eval.model.get_text_features(**inputs).pooler_output, dim=-1)
    torch.testing.assert_close(adapter_for(tiny_clip_eval).text_outputs(texts, None)[0], ref, rtol=1e-5, atol=1e-6)


def test_sd_conditioning_is_the_text_encoders_full_last_hidden_state(tiny_sd):
    texts = ["a photo of a cat", "a rendering of the cat."]
    ids = tiny_sd.tokenizer(texts, padding="max_length", return_tensors="pt").input_ids
    ref = tiny_sd.pipeline.text_encoder(ids).last_hidden_state
    ours = adapter_for(tiny_sd).text_outputs(texts, None)[0]
    assert ours.shape == (2, 77, 32)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_pooled_hidden_states_end_in_the_pooled_output(tiny_clip):
    a = adapter_for(tiny_clip)
    vecs = _random_vectors(a, k=2, n=3)
    h = a.pooled_hidden_states(PROMPTS, vecs)
    assert h.shape == (tiny_clip.entry.text_layers + 1, 2, len(PROMPTS), 32)
    m = tiny_clip.model
    pooled = F.normalize(m.ln_final(h[-1]) @ m.text_projection, dim=-1)
    torch.testing.assert_close(pooled, a.text_outputs(PROMPTS, vecs), rtol=1e-5, atol=1e-6)


def test_hf_pooled_hidden_states_count_embedding_and_every_layer(tiny_sd, tiny_owl):
    for loaded in (tiny_sd, tiny_owl):
        a = adapter_for(loaded)
        h = a.pooled_hidden_states(["a photo of a {}"], _random_vectors(a, k=2, n=1))
        assert h.shape == (loaded.entry.text_layers + 1, 2, 1, 32)
        assert not torch.allclose(h[0], h[-1])


def test_sd_loss_is_the_schedulers_velocity_mse(tiny_sd):
    """With the anchor's embedding spliced in, the loss equals diffusers' own computation on the plain prompt."""
    a = adapter_for(tiny_sd)
    assert a.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 2, 4, 32, 32, generator=g)
    noise = torch.randn(1, 2, 4, 32, 32, generator=g)
    t = torch.tensor([[10, 900]])
    prompts = [["a photo of a {}", "a photo of the {}"]]
    batch = {"prompts": prompts, "latents": latents, "noise": noise, "timesteps": t}
    loss = a.loss(TokenTable.of(a).weights[a.anchor_id("cat")][None, None], batch)

    pipe = tiny_sd.pipeline
    ids = pipe.tokenizer([p.replace("{}", "cat") for p in prompts[0]], padding="max_length", return_tensors="pt")
    cond = pipe.text_encoder(ids.input_ids).last_hidden_state
    noisy = a.scheduler.add_noise(latents[0], noise[0], t[0])
    pred = pipe.unet(noisy, t[0], encoder_hidden_states=cond).sample
    ref = F.mse_loss(pred, a.scheduler.get_velocity(latents[0], noise[0], t[0]))
    assert loss.shape == (1,)
    torch.testing.assert_close(loss[0], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fixture", ["tiny_owl", "tiny_clip"])
def test_signed_cosine_loss_equals_its_definition(fixture, request):
    """loss = −mean cos(text, positives) + mean cos(text, negatives), for each of K trials (D4/D5)."""
    loaded = request.getfixturevalue(fixture)
    a = adapter_for(loaded)
    g = torch.Generator().manual_seed(3)
    d = a.text_outputs(["cat"], None).shape[-1]
    pos = [F.normalize(torch.randn(5, d, generator=g), dim=-1) for _ in range(2)]
    neg = [F.normalize(torch.randn(40, d, generator=g), dim=-1) for _ in range(2)]
    vecs = _random_vectors(a, k=2, n=2)
    direction = torch.stack([signed_cosine_direction(p, q) for p, q in zip(pos, neg)])
    loss = a.loss(vecs, {"direction": direction})
    text = a.text_outputs([a.train_prompt], vecs)[:, 0]
    for k in range(2):
        ref = -(pos[k] @ text[k]).mean() + (neg[k] @ text[k]).mean()
        torch.testing.assert_close(loss[k], ref, rtol=1e-5, atol=1e-6)


def test_a_second_checkpoint_of_a_family_needs_no_code():
    from visual_words.models.loading import load_model

    loaded = load_model("tiny-clip-w48")
    a = adapter_for(loaded)
    assert type(a).__name__ == "OpenClipAdapter" and a.width == 48
    out = a.text_outputs(PROMPTS, _random_vectors(a, k=2, n=4))
    assert out.shape == (2, len(PROMPTS), 24)  # embed_dim of that checkpoint
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, len(PROMPTS)))


def test_clear_errors(tiny_clip, tiny_owl):
    a = adapter_for(tiny_clip)
    v = TokenTable.of(a).weights[:1][None]
    with pytest.raises(ValueError, match="exactly one"):
        a.text_outputs(["a photo of a cat"], v)
    with pytest.raises(ValueError, match="no vectors"):
        a.text_outputs(["a photo of a {}"], None)
    with pytest.raises(ValueError, match="width 32"):
        a.text_outputs(["{}"], torch.zeros(1, 1, 48))
    owl = adapter_for(tiny_owl)
    with pytest.raises(ValueError, match="context is 16"):
        owl.text_outputs(["a very long prompt that goes on and on about a {} in a garden"], torch.zeros(1, 4, 32))
    fake = dataclasses.replace(tiny_clip, entry=dataclasses.replace(tiny_clip.entry, family="lstm"))
    with pytest.raises(ValueError, match="unknown model family `lstm`"):
        adapter_for(fake)
