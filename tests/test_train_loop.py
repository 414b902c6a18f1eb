"""The optimizer loop on the tiny models: loss goes down, the ε-ball holds, tables stay untouched, batched == one by
one, seeds reproduce, a resumed batch equals an uninterrupted one, files carry the contract's sidecar."""

import math

import pytest
import torch
import torch.nn.functional as F

from visual_words.config import load_config
from visual_words.embeddings import read_embedding
from visual_words.models.adapters import adapter_for
from visual_words.models.token_table import TokenTable
from visual_words.reuse import trial_key
from visual_words.train.loop import TrialBatch, train_batch, train_trials
from visual_words.train.targets import TrialData, draw_batch, signed_cosine_direction
from visual_words.trials import Trial

TASK = {"tiny_sd": "generation", "tiny_owl": "detection", "tiny_clip": "classification"}
MODEL = {"tiny_sd": "tiny-sd", "tiny_owl": "tiny-owlv2", "tiny_clip": "tiny-clip"}
# (concept, anchor, δ) of the trials used below: different concepts, anchors and radii in one batch
SPECS = [("cup", "cup", 0.5), ("dog", "cat", math.inf), ("bottle", "laptop", 0.2)]

# Tolerance for "K batched trials == K sequential runs": same math, but kernels see another batch shape, so
# floating-point sums may be ordered differently. Measured after 6 steps: SD 0 (bit-identical), OWL ≤ 9.4e-8,
# CLIP ≤ 1.1e-7 (vectors of norm ~0.1-1).
BATCHED_ATOL = 1e-5


def _cfg(repo_root, tmp_path, **train):
    overrides = {"train.out_dir": str(tmp_path / "embeddings")} | {f"train.{k}": v for k, v in train.items()}
    return load_config("smoke", repo_root / "params.yaml", overrides)


def _trials(fixture, specs=SPECS, root_seed=0):
    return [Trial(TASK[fixture], MODEL[fixture], "coco", c, a, d, root_seed) for c, a, d in specs]


def _data(adapter, trials, seed=0):
    """Each trial's loss inputs. SD: latents (unit-variance, the scale SD's VAE latents are brought to); OWL/CLIP:
    the signed-cosine direction of random unit image-side embeddings (8 positives, 24 negatives)."""
    out = []
    for i, t in enumerate(trials):
        g = torch.Generator().manual_seed(seed + 17 * i)
        # 8×8 latents: the UNet is convolutional, and 16× cheaper than 32×32
        if adapter.entry.family == "stable-diffusion":
            out.append(TrialData("generation", latents=torch.randn(4, 4, 8, 8, generator=g)))
        else:
            dim = adapter.text_outputs(["cat"], None).shape[-1]
            pos = F.normalize(torch.randn(8, dim, generator=g), dim=-1)
            neg = F.normalize(torch.randn(24, dim, generator=g), dim=-1)
            out.append(TrialData(t.task, direction=signed_cosine_direction(pos, neg)))
    return out


def _train(cfg, loaded, trials, **kw):
    a = adapter_for(loaded)
    return train_batch(cfg, a, trials, _data(a, trials), progress=False, **kw)


@pytest.mark.parametrize("fixture", ["tiny_owl", "tiny_clip"])
def test_loss_goes_down_detection_and_classification(fixture, request, repo_root, tmp_path):
    """Unconstrained trials close a good part of the gap to the loss's floor, −‖direction‖ (text = −direction)."""
    loaded = request.getfixturevalue(fixture)
    cfg = _cfg(repo_root, tmp_path, steps=20, log_every=1)
    a = adapter_for(loaded)
    trials = _trials(fixture, [(c, anchor, math.inf) for c, anchor, _ in SPECS])
    data = _data(a, trials)
    for r, d in zip(train_batch(cfg, a, trials, data, progress=False), data):
        loss, floor = r.curves["loss"], -float(d.direction.norm())
        assert len(loss) == 20 and r.curves["step"] == list(range(1, 21))
        assert loss[-1] - floor < 0.7 * (loss[0] - floor), (r.trial.id, floor, loss)


@pytest.fixture(scope="module")
def listening_sd(tiny_sd):
    """tiny-sd with its UNet's cross-attention outputs scaled ×30. A random-weight UNet barely reads its text (the
    conditioning moves the loss by ~1e-4), unlike a trained one; scaled, the text moves it by ~1e-2, so whether
    training lowers the loss becomes measurable. Same architecture, same code path."""
    import copy

    loaded = copy.copy(tiny_sd)
    loaded.pipeline = copy.deepcopy(tiny_sd.pipeline)
    with torch.no_grad():
        for name, m in loaded.pipeline.unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                m.weight.mul_(30)
    return loaded


def test_loss_goes_down_generation(listening_sd, repo_root, tmp_path):
    """The denoising loss is noisy step to step (random timesteps and noise), so it is measured before and after
    training on one fixed evaluation batch (64 draws per trial from its own latents)."""
    cfg = _cfg(repo_root, tmp_path, steps=30)
    trials = _trials("tiny_sd", [("cup", "cat", math.inf), ("dog", "cat", 0.5)])
    a = adapter_for(listening_sd)
    data = _data(a, trials)
    eval_batch = draw_batch(a, data, [torch.Generator().manual_seed(99 + i) for i in range(2)], 64)
    anchors = TokenTable.of(a).weights[[a.anchor_id(t.anchor) for t in trials]]
    start = anchors[:, None].repeat(1, cfg.train.num_vectors, 1)
    results = train_batch(cfg, a, trials, data, progress=False)
    trained = torch.stack([r.vectors for r in results])
    with torch.no_grad():
        before, after = a.loss(start, eval_batch), a.loss(trained, eval_batch)
    assert bool((after < before - 0.002).all()), (before, after)  # the text moves it by ~0.01 in all


@pytest.mark.parametrize("delta", [0.1, 0.2, 0.5, 1.0])
def test_constraint_holds_after_every_step(delta, tiny_clip, repo_root, tmp_path):
    cfg = _cfg(repo_root, tmp_path, steps=15, log_every=1, lr=5e-2)
    trials = _trials("tiny_clip", [("cup", "cup", delta), ("dog", "cat", delta), ("cat", "cat", math.inf)])
    seen = []

    def on_step(trial, step, m):
        seen.append((trial.delta, m["rel_dist"]))
        if trial.constrained:
            assert m["rel_dist"] <= trial.delta * (1 + 1e-6), (step, m)  # float64 measure of the fp32 vectors

    results = _train(cfg, tiny_clip, trials, on_step=on_step)
    assert len(seen) == 15 * 3
    rel = {r.trial.id: r.curves["rel_dist"] for r in results}
    # the ball is active (the vectors press against it), and the unconstrained trial leaves it
    assert max(rel[trials[0].id]) == pytest.approx(delta, rel=1e-6)
    assert max(rel[trials[2].id]) > 1.0
    for r in results:  # the file holds what was checked
        if r.trial.constrained:
            anchor = TokenTable.of(adapter_for(tiny_clip)).weights[r.meta["anchor_id"]]
            assert float((r.vectors - anchor).norm(dim=-1).max()) <= r.meta["radius"] * (1 + 1e-6)


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_owl", "tiny_clip"])
def test_token_tables_and_weights_stay_bit_identical(fixture, request, repo_root, tmp_path):
    loaded = request.getfixturevalue(fixture)
    a = adapter_for(loaded)
    modules = [loaded.pipeline.text_encoder, loaded.pipeline.unet] if loaded.pipeline else [loaded.model]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    _train(_cfg(repo_root, tmp_path, steps=3), loaded, _trials(fixture))
    for m, b in zip(modules, before):
        assert all(torch.equal(v, b[k]) for k, v in m.state_dict().items())
    assert a.embedding.weight.grad is None and not a.embedding.weight.requires_grad


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_owl", "tiny_clip"])
def test_batched_trials_equal_sequential_runs(fixture, request, repo_root, tmp_path):
    loaded = request.getfixturevalue(fixture)
    trials = _trials(fixture)
    batched = _train(_cfg(repo_root, tmp_path / "batched", steps=6), loaded, trials)
    for i, t in enumerate(trials):
        a = adapter_for(loaded)
        alone = train_batch(_cfg(repo_root, tmp_path / f"alone{i}", steps=6), a, [t], [_data(a, trials)[i]],
                            progress=False)[0]
        torch.testing.assert_close(alone.vectors, batched[i].vectors, rtol=0, atol=BATCHED_ATOL)
        assert alone.curves["nearest_token"] == batched[i].curves["nearest_token"]
    assert not torch.allclose(batched[0].vectors, batched[1].vectors)  # each trial learned its own vectors


def test_same_seed_same_embedding_other_seed_other_embedding(tiny_sd, repo_root, tmp_path):
    runs = [_train(_cfg(repo_root, tmp_path / f"r{i}", steps=4), tiny_sd, _trials("tiny_sd", SPECS[:1], seed))[0]
            for i, seed in enumerate([0, 0, 1])]
    assert torch.equal(runs[0].vectors, runs[1].vectors)
    assert runs[0].trial.seed != runs[2].trial.seed
    assert not torch.equal(runs[0].vectors, runs[2].vectors)


class Killed(Exception):
    pass


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_clip"])
def test_resumed_batch_equals_uninterrupted(fixture, request, repo_root, tmp_path):
    loaded = request.getfixturevalue(fixture)
    trials = _trials(fixture)
    whole = _train(_cfg(repo_root, tmp_path / "whole", steps=7, log_every=1, checkpoint_every=2), loaded, trials)

    cfg = _cfg(repo_root, tmp_path / "killed", steps=7, log_every=1, checkpoint_every=2)

    def kill_at_5(trial, step, m):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        _train(cfg, loaded, trials, on_step=kill_at_5)
    ckpts = list((tmp_path / "killed" / "embeddings").rglob("*.pt"))
    assert len(ckpts) == 1  # the step-4 checkpoint
    assert torch.load(ckpts[0], weights_only=True)["step"] == 4
    steps_run = []
    resumed = _train(cfg, loaded, trials, on_step=lambda t, s, m: steps_run.append(s))
    assert sorted(set(steps_run)) == [5, 6, 7]  # continued, not restarted
    for w, r in zip(whole, resumed):
        assert torch.equal(w.vectors, r.vectors)
        assert w.curves == r.curves
    assert not list((tmp_path / "killed" / "embeddings").rglob("*.pt"))  # removed once the files are written


def test_embedding_files_carry_the_contract_sidecar(tiny_clip, repo_root, tmp_path):
    cfg = _cfg(repo_root, tmp_path, steps=4)
    trials = _trials("tiny_clip")
    adapter = adapter_for(tiny_clip)
    data = _data(adapter, trials)
    results = train_batch(cfg, adapter, trials, data, progress=False)
    for t, r, d in zip(trials, results, data):
        assert r.path == tmp_path / "embeddings" / "classification" / f"{t.slug}.safetensors"
        emb = read_embedding(r.path)
        assert emb.format == "visual-words"
        name, vectors = emb.single()
        assert name == t.token and vectors.shape == (cfg.train.num_vectors, 32)
        assert torch.equal(vectors, r.vectors)
        m = emb.meta
        for key in ("trial", "model_key", "model_id", "model_revision", "token_table_hash", "anchor", "anchor_id",
                    "delta", "d_nn", "seed", "steps", "optimizer", "num_vectors", "final_loss", "curves",
                    "trial_key"):
            assert key in m, key
        assert (m["trial"]["id"] == t.id and m["trial_key"] == trial_key(cfg, t, d.source_digest())
                and m["seed"] == t.seed)
        assert m["optimizer"] == {"name": "adam", "lr": cfg.train.lr, "betas": [0.9, 0.999], "eps": 1e-8,
                                  "weight_decay": 0.0}
        assert m["delta"] == ("inf" if math.isinf(t.delta) else t.delta) and m["d_nn"] > 0
        assert set(m["curves"]) >= {"step", "loss", "rel_dist", "nearest_token"}
        assert m["curves"]["step"] == [1, 2, 4] and len(m["curves"]["nearest_token"][0]) == cfg.train.num_vectors
        assert m["final_loss"] == m["curves"]["loss"][-1]


def _drawn_manifest(cfg, concepts):
    """A tiny coco manifest of flat-coloured images (2 train, 1 held out per concept), written where cfg reads it."""
    from PIL import Image

    from visual_words.data.manifest import Box, ConceptSplit, ImageRecord, Manifest, manifest_path, write_manifest

    root = cfg.path(cfg.prepare.manifests_dir).parent / "images"
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for i, c in enumerate(concepts):
        recs = []
        for j in range(3):
            Image.new("RGB", (40, 32), (70 * i, 40 * j, 90)).save(root / f"{c}_{j}.png")
            recs.append(ImageRecord(f"{c}_{j}.png", 40, 32, c, (Box(c, (4.0, 4.0, 20.0, 16.0)),)))
        splits[c] = ConceptSplit(recs[:2], recs[2:])
    m = Manifest("coco", "synthetic", 0, str(root), splits)
    write_manifest(manifest_path(cfg, "coco"), m)
    return m


def test_train_trials_skips_finished_trials(tiny_clip, repo_root, tmp_path):
    from visual_words.train.targets import build_trial_data

    cfg = load_config("smoke", repo_root / "params.yaml", {
        "train.out_dir": str(tmp_path / "embeddings"), "train.steps": 3,
        "prepare.manifests_dir": str(tmp_path / "manifests"), "prepare.cache_dir": str(tmp_path / "cache")})
    trials = _trials("tiny_clip")
    manifest = _drawn_manifest(cfg, [c for c, _, _ in SPECS])
    adapter = adapter_for(tiny_clip)
    first = train_batch(cfg, adapter, trials, build_trial_data(cfg, adapter, trials, manifest), progress=False)
    mtimes = [r.path.stat().st_mtime_ns for r in first]
    again = train_trials(cfg, trials, loaded=tiny_clip, progress=False)  # all done: the key from the manifest matches
    assert all(r.skipped for r in again)
    assert [r.path.stat().st_mtime_ns for r in again] == mtimes
    for f, a in zip(first, again):
        assert torch.equal(f.vectors, a.vectors) and f.curves == a.curves


def test_second_checkpoint_of_a_family_trains_without_code(repo_root, tmp_path):
    from visual_words.models.loading import load_model

    loaded = load_model("tiny-clip-w48", root=repo_root)
    trials = [Trial("classification", "tiny-clip-w48", "coco", "cup", "cup", math.inf)]
    a = adapter_for(loaded)
    g = torch.Generator().manual_seed(0)
    direction = signed_cosine_direction(F.normalize(torch.randn(8, 24, generator=g), dim=-1),
                                        F.normalize(torch.randn(16, 24, generator=g), dim=-1))
    r = train_batch(_cfg(repo_root, tmp_path, steps=15), a, trials, [TrialData("classification", direction=direction)],
                    progress=False)[0]
    assert r.vectors.shape == (2, 48)
    assert r.curves["loss"][-1] < r.curves["loss"][0] - 0.05


def test_trial_batch_starts_every_vector_at_its_anchor(tiny_owl, repo_root, tmp_path):
    cfg = _cfg(repo_root, tmp_path)
    a = adapter_for(tiny_owl)
    trials = _trials("tiny_owl")
    state = TrialBatch(cfg, a, trials, _data(a, trials))
    table = TokenTable.of(a).weights
    for k, t in enumerate(trials):
        anchor = table[a.anchor_id(t.anchor)]
        assert torch.equal(state.vectors[k], anchor[None].expand(cfg.train.num_vectors, -1))
    assert state.vectors.dtype == torch.float32 and state.vectors.requires_grad
    assert [p for g in state.optimizer.param_groups for p in g["params"]] == [state.vectors]


def test_a_checkpoint_resumes_only_the_batch_and_data_it_was_made_with(tiny_clip, repo_root, tmp_path):
    cfg = _cfg(repo_root, tmp_path, steps=6, log_every=1, checkpoint_every=2)
    a = adapter_for(tiny_clip)
    trials = _trials("tiny_clip")

    def kill_at_3(trial, step, m):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train_batch(cfg, a, trials, _data(a, trials), progress=False, on_step=kill_at_3)
    steps = []
    other_data = _data(a, trials, seed=5)  # e.g. another split: the step-2 checkpoint must not be used
    train_batch(cfg, a, trials, other_data, progress=False, on_step=lambda t, s, m: steps.append(s))
    assert min(steps) == 1

    (ckpt,) = list((tmp_path / "embeddings").rglob("*.pt"))  # the first run's checkpoint, left for its own data
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable trial-batch checkpoint.*delete it"):
        train_batch(cfg, a, trials, _data(a, trials), progress=False)
