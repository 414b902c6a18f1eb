"""The optimizer loop: K trials of one model and dataset trained together (docs/paper.md §7 Table 2, docs/design.md
D1, D9).

Each trial has its own n learned vectors (fp32, initialised at its anchor's embedding), its own ε-ball, its own
data and its own random generator (seeded by Trial.seed). They are stacked in one [K, n, d] tensor that is the only
thing with gradients and Adam state; the frozen models run in the loaded dtype (fp16/bf16 on GPU, fp32 on CPU).
Adam is element-wise and the trials never interact in a forward pass, so a trial trained in a batch follows the
same trajectory as alone (up to the floating-point effect of batch shape on kernels).

    results = train_trials(cfg, trials)      # writes <train.out_dir>/<task>/<slug>.safetensors (+ .json sidecar)
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from visual_words.data.manifest import manifest_path, read_manifest
from visual_words.embeddings import damage, sidecar_path, write_embedding
from visual_words.models.adapters import Adapter, adapter_for
from visual_words.models.loading import LoadedModel, load_model
from visual_words.models.speed import SpeedOptions
from visual_words.models.token_table import TokenTable
from visual_words.provenance import write_times
from visual_words.reuse import checkpoint_key, trial_key
from visual_words.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from visual_words.train.geometry import project_, radii, relative_distance
from visual_words.train.targets import TrialData, build_trial_data, draw_batch, loss_kind
from visual_words.trained import read_sidecar, read_word
from visual_words.trials import Trial, embedding_path

# on_step(trial, step, {"loss": float, "rel_dist": float, "nearest_token": [str, …]}) at every logged step: `loss`
# is the loss of the vectors that entered step `step`; `rel_dist` (max over the n vectors of ‖v − a‖ / d_nn(a)) and
# the nearest vocabulary token of each vector are measured after the step's update and projection.
StepCallback = Callable[[Trial, int, dict[str, Any]], None]


@dataclass
class TrialResult:
    trial: Trial
    path: Path  # the embedding file (its sidecar is path + ".json")
    vectors: torch.Tensor  # [n, d] fp32
    final_loss: float
    curves: dict[str, list]  # step, loss, rel_dist, nearest_token (one entry per logged step)
    meta: dict[str, Any] = field(default_factory=dict)  # the sidecar
    skipped: bool = False  # True when the file existed and nothing was trained


def output_path(cfg, trial: Trial) -> Path:
    """<train.out_dir>/<task>/<slug>.safetensors."""
    return embedding_path(cfg, trial)


def is_done(cfg, trial: Trial, table: str | None = None) -> bool:
    """Done = the file and its sidecar exist (the sidecar is written last), the sidecar's `trial_key` is the
    current one (a change of anything that determines the result, reuse.trial_key, trains the trial again), the
    file's bytes are the ones the sidecar records (a damaged file is trained again, never used) and, with `table`
    (the loaded model's token-table identity), the sidecar's `token_table_hash` equals it."""
    path = output_path(cfg, trial)
    meta = read_sidecar(path)
    if meta is None or meta.get("trial_key") != trial_key(cfg, trial):
        return False
    if table is not None and meta.get("token_table_hash") != table:
        return False
    return damage(path) is None


def report_damaged(cfg, trials: Sequence[Trial]) -> list[str]:
    """Print (stderr) and return one line per trial whose finished-looking file is damaged: it is retrained."""
    import sys

    lines = []
    for t in trials:
        path = output_path(cfg, t)
        if path.is_file() and sidecar_path(path).is_file():
            problem = damage(path)
            if problem:
                lines.append(problem)
                print(f"[train] {problem}; training it again", file=sys.stderr, flush=True)
    return lines


def trials_per_batch(cfg, task: str) -> int:
    return int(cfg.train.trials_per_batch_by_task.get(task, cfg.train.trials_per_batch))


# ------------------------------------------------------------------------------------------------------------


class TrialBatch:
    """The training state of K trials of one model; `step()` runs one optimizer step for all of them."""

    def __init__(self, cfg, adapter: Adapter, trials: Sequence[Trial], data: Sequence[TrialData]):
        tc = cfg.train
        self.cfg, self.adapter, self.trials, self.data = cfg, adapter, list(trials), list(data)
        adapter.accelerate(SpeedOptions.from_section(tc, "train"))  # SD UNet: compile, attention, layout, fp8
        self.table = TokenTable.of(adapter)
        self.table_hash = self.table.identity
        self.anchor_ids = [adapter.anchor_id(t.anchor) for t in self.trials]
        self.anchors = self.table.weights[self.anchor_ids]  # [K, d] fp32
        # [K] fp64, by fp64 differences: the radii every trained word so far was projected with (token_table.py)
        self.d_nn = torch.from_numpy(self.table.d_nn(self.anchor_ids, method="direct"))
        self.radius = radii([t.delta for t in self.trials], self.d_nn)
        device = adapter.device
        self.vectors = self.anchors[:, None].repeat(1, tc.num_vectors, 1).to(device).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.vectors], lr=tc.lr, betas=tuple(tc.betas), eps=tc.adam_eps,
                                          weight_decay=tc.weight_decay)
        # fp16 weights: gradients to the vectors pass through half-precision activations; scale the loss so small
        # ones do not flush to zero (bf16 has fp32's range and needs none).
        self.scaler = torch.amp.GradScaler(device.type,
                                           enabled=adapter.dtype == torch.float16 and device.type == "cuda")
        self.generators = [torch.Generator().manual_seed(t.seed) for t in self.trials]
        self.step_count = 0
        self.curves: list[dict[str, list]] = [{"step": [], "loss": [], "rel_dist": [], "nearest_token": []}
                                              for _ in self.trials]

    # -- one step -------------------------------------------------------------------------------------------

    def step(self) -> torch.Tensor:
        """Draw each trial's batch, one forward/backward for all trials, an Adam step, the ε-ball projection."""
        batch = draw_batch(self.adapter, self.data, self.generators, self.cfg.train.batch_size)
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.adapter.loss(self.vectors, batch)  # [K]
        # Trials are independent, so d(sum)/d(v_k) = d(loss_k)/d(v_k): one backward serves all of them.
        self.scaler.scale(losses.sum()).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        project_(self.vectors, self.anchors, self.radius)
        self.step_count += 1
        return losses.detach().float().cpu()

    def log(self, losses: torch.Tensor) -> list[dict[str, Any]]:
        rel = relative_distance(self.vectors, self.anchors, self.d_nn).max(1).values  # the constraint bounds each
        nearest = self.table.nearest(self.vectors, exact=False, device=self.adapter.device).ids
        nearest = nearest.reshape(self.vectors.shape[:-1])  # [K, n]
        out = []
        for k, curve in enumerate(self.curves):
            entry = {"loss": float(losses[k]), "rel_dist": float(rel[k]),
                     "nearest_token": [self.adapter.token_name(int(i)) for i in nearest[k]]}
            curve["step"].append(self.step_count)
            for key, value in entry.items():
                curve[key].append(value)
            out.append(entry)
        return out

    # -- checkpoint -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "vectors": self.vectors.detach().cpu().clone(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "generators": [g.get_state() for g in self.generators], "curves": self.curves,
                "trial_ids": [t.id for t in self.trials]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["trial_ids"] != [t.id for t in self.trials]:
            raise ValueError("checkpoint belongs to another trial batch")
        with torch.no_grad():
            self.vectors.copy_(state["vectors"].to(self.vectors.device))
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
        self.step_count = int(state["step"])
        self.curves = state["curves"]

    def trial_keys(self) -> list[str]:
        return [trial_key(self.cfg, t, d.source_digest()) for t, d in zip(self.trials, self.data)]

    def key(self) -> str:
        return checkpoint_key(self.trial_keys(), self.table_hash, [d.digest() for d in self.data])

    # -- results --------------------------------------------------------------------------------------------

    def meta(self, k: int) -> dict[str, Any]:
        t, tc, e = self.trials[k], self.cfg.train, self.adapter.entry
        curve = self.curves[k]
        return {
            "trial": t.to_dict(), "trial_key": trial_key(self.cfg, t, self.data[k].source_digest()),
            "model_key": e.key, "model_id": e.id, "model_revision": e.revision,
            "family": e.family, "loss_kind": loss_kind(e), "token_table_hash": self.table_hash,
            "anchor": t.anchor, "anchor_id": self.anchor_ids[k], "delta": t.to_dict()["delta"],
            "d_nn": float(self.d_nn[k]), "radius": float(self.radius[k]) if t.constrained else "inf",
            "seed": t.seed, "steps": tc.steps, "batch_size": tc.batch_size,
            "optimizer": {"name": "adam", "lr": tc.lr, "betas": list(tc.betas), "eps": tc.adam_eps,
                          "weight_decay": tc.weight_decay},
            "num_vectors": tc.num_vectors, "final_loss": curve["loss"][-1] if curve["loss"] else math.nan,
            "final_rel_dist": curve["rel_dist"][-1] if curve["rel_dist"] else 0.0,
            "curves": curve, "data": self.data[k].stats, "trials_in_batch": len(self.trials),
            "device": str(self.adapter.device), "weights_dtype": str(self.adapter.dtype).replace("torch.", ""),
        }


def _log_step(step: int, total: int, every: int) -> bool:
    return step == 1 or step == total or (every > 0 and step % every == 0)


def train_batch(cfg, adapter: Adapter, trials: Sequence[Trial], data: Sequence[TrialData], progress: bool = True,
                on_step: StepCallback | None = None, keep: frozenset[str] = frozenset()) -> list[TrialResult]:
    """Train K trials of one model together on their TrialData (train.targets.build_trial_data), resuming from
    their checkpoint if there is one, and write one embedding file + sidecar per trial (except the ids in `keep`:
    finished trials trained again only so that the batch has its original composition)."""
    from tqdm.auto import tqdm

    tc = cfg.train
    started_ms = int(time.time() * 1000)  # the trials' wall-clock span, for the MLflow runs logged later
    state = TrialBatch(cfg, adapter, trials, data)
    task_dir = cfg.path(tc.out_dir) / trials[0].task
    ckpt = checkpoint_path(task_dir, state.key())
    saved = load_checkpoint(ckpt)
    if saved is not None:
        state.load_state_dict(saved)
    bar = tqdm(total=tc.steps, initial=state.step_count, disable=not progress, leave=False, dynamic_ncols=True,
               desc=f"train {adapter.entry.key} {trials[0].dataset} ×{len(trials)}")
    while state.step_count < tc.steps:
        losses = state.step()
        step = state.step_count
        if _log_step(step, tc.steps, tc.log_every):
            logs = state.log(losses)
            if on_step is not None:
                for t, entry in zip(trials, logs):
                    on_step(t, step, entry)
        if tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0 and step < tc.steps:
            save_checkpoint(ckpt, state.state_dict())
        bar.update(1)
        bar.set_postfix(loss=f"{float(losses.mean()):.4f}")
    bar.close()
    results = []
    vectors = state.vectors.detach().to("cpu", torch.float32)
    for k, t in enumerate(trials):
        if t.id in keep:
            results.append(read_result(cfg, t))
            continue
        meta = state.meta(k)
        path = write_embedding(output_path(cfg, t), t.token, vectors[k], meta)
        # beside the sidecar, not in it: identical retrains write identical sidecars (provenance.py)
        write_times(sidecar_path(path), {"started_ms": started_ms, "finished_ms": int(time.time() * 1000)})
        results.append(TrialResult(t, path, vectors[k].clone(), meta["final_loss"], meta["curves"], meta))
    ckpt.unlink(missing_ok=True)
    return results


def read_result(cfg, trial: Trial) -> TrialResult:
    """The result of a finished trial, read back from its file and sidecar."""
    word = read_word(output_path(cfg, trial), trial)
    meta = word.meta
    return TrialResult(trial, word.path, word.vectors, float(meta.get("final_loss", math.nan)), meta.get("curves", {}),
                       meta, skipped=True)


def load_for_training(cfg, model_key: str) -> LoadedModel:
    return load_model(model_key, device=cfg.study.device, precision=cfg.train.precision, root=cfg.root)


def train_trials(cfg, trials: Sequence[Trial], loaded: LoadedModel | None = None, progress: bool = True,
                 on_step: StepCallback | None = None, announce_damage: bool = True) -> list[TrialResult]:
    """Train the given trials and write one embedding file + sidecar each; return their results
    in the given order.

    Done trials (file + sidecar with the current `trial_key`; docs/reuse.md) are skipped: their result is read back
    (`skipped=True`); when their model is loaded for other trials anyway, their sidecar's `token_table_hash` must
    also be the model's (else they are trained again). The rest are grouped by (model, dataset) and trained
    `train.trials_per_batch` (per task: `train.trials_per_batch_by_task`) at a time.
    `loaded` is used for the trials of its model (a Ray worker keeps one model loaded); other models are loaded
    here. An interrupted batch resumes from its last checkpoint (`train.checkpoint_every`)."""
    import time

    from visual_words.provenance import write_provenance

    start = time.perf_counter()
    unique = list({t.id: t for t in trials}.values())
    if announce_damage:  # the sweep's driver announces them once for all its workers
        report_damaged(cfg, unique)
    results: dict[str, TrialResult] = {}
    done: set[str] = set()
    groups: dict[tuple[str, str], list[Trial]] = defaultdict(list)
    for t in unique:
        if is_done(cfg, t):
            results[t.id] = read_result(cfg, t)
            done.add(t.id)
        groups[(t.model, t.dataset)].append(t)
    # Batches are cut from all the given trials, done or not, so a trial is always trained in the same company:
    # a batch's shape changes its floating-point rounding, and a retrained trial (one that was damaged, say)
    # must come out byte-identical. A batch with nothing left to do is skipped.
    groups = {k: g for k, g in groups.items() if any(t.id not in done for t in g)}
    adapter = None
    for (model_key, dataset), group in sorted(groups.items(), key=lambda kv: kv[0][0]):  # each model loads once
        if adapter is None or adapter.entry.key != model_key:
            current = loaded if loaded is not None and loaded.entry.key == model_key \
                else load_for_training(cfg, model_key)
            adapter = adapter_for(current)
        # A done trial of a model whose token table changed under the same id and revision is stale too.
        for t in group:
            if t.id in done and results[t.id].meta.get("token_table_hash") != adapter.table_identity:
                done.discard(t.id)
                del results[t.id]
        manifest = read_manifest(manifest_path(cfg, dataset))
        by_task: dict[str, list[Trial]] = defaultdict(list)
        for t in group:
            by_task[t.task].append(t)
        for task, task_trials in by_task.items():
            size = max(1, trials_per_batch(cfg, task))
            for i in range(0, len(task_trials), size):
                chunk = task_trials[i : i + size]
                if all(t.id in done for t in chunk):
                    continue
                data = build_trial_data(cfg, adapter, chunk, manifest)
                keep = frozenset(t.id for t in chunk if t.id in done)
                for r in train_batch(cfg, adapter, chunk, data, progress, on_step, keep):
                    results[r.trial.id] = r
            write_provenance(cfg.path(cfg.train.out_dir) / task, cfg, "train", time.perf_counter() - start)
    return [results[t.id] for t in trials]


def results_table(results: Sequence[TrialResult]) -> str:
    """A short text summary (one line per trial) for the CLI."""
    lines = []
    for r in results:
        state = "skipped (exists)" if r.skipped else f"loss {r.final_loss:.4f}"
        rel = r.meta.get("final_rel_dist")
        lines.append(f"{r.trial.id}: {state}" + (f", ‖v−a‖/d_nn {rel:.3f}" if isinstance(rel, float) else "")
                     + f" -> {r.path}")
    return "\n".join(lines)

