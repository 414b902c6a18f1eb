"""`vw plan`: what a profile will cost on a GPU card before it runs, from measured rates (registry/rates.yaml).

Every stage's work is counted from the profile itself (the trial grid, steps, images per trial, held-out images) and
priced with the rates of the card asked for: measured on that card where the rates file has a `measured` entry for
it, otherwise scaled from the newest measured card by the ratio of their published dense bf16 peaks (said so per
row), otherwise a stated estimate. The sweep and `vw reproduce` print the projection first and ask before a run
whose projection exceeds `sweep.confirm_above_gpu_hours` (see `confirm`).

The full-size benchmarks record a card's rates with `write_rates` (one `measured` entry per card: date, commit,
basis, the numbers), so a projection can always name where its numbers come from.

Layer: beside train and transfer (docs/design.md §9); it may import models, data, reuse and the foundations.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

RATES_ENV = "VW_RATES"  # a rates file to use instead of the packaged one (e.g. one a benchmark just wrote)
YES_ENV = "VW_YES"  # set to 1 to answer the confirmation with yes (what `--yes` does; for non-interactive runs)
DEFAULT_CARD = "h100"  # the card the claims profile is budgeted for

# The rates a projection needs, with their unit. A measured entry may hold any subset; the rest is scaled from
# another card or taken from `estimated`.
RATE_KEYS = {
    "sd_train_step_s": "s per SD training step of one trial (batch train.batch_size, 768 px)",
    "sd_train_step_compiled_s": "the same with train.compile",
    "sd_compile_s": "s to compile the UNet once per worker",
    "generate_image_s": "s per generated evaluation image (evaluate.inference_steps, CFG)",
    "clip_trial_steps_per_s": "CLIP text-tower trial-steps per s (trials batched)",
    "owl_trial_steps_per_s": "OWLv2 text-tower trial-steps per s (trials batched)",
    "model_load_s": "s to load one full-size model onto the GPU",
    "prepare_image_s": "s per image for the feature caches (VAE latents, CLIP and OWL image features)",
    "detect_eval_trial_s": "s per detection evaluation of one trial",
    "classify_eval_trial_s": "s per classification evaluation of one trial",
}


class PlanError(ValueError):
    """A bad rates file or card name (one line, naming the file and the key)."""


class PlanRefused(RuntimeError):
    """The projection exceeds the threshold and nobody said yes."""


@dataclass(frozen=True)
class Rate:
    value: float
    basis: str  # "measured on h200" | "h200 scaled by bf16 peak 312/989" | "estimate"
    source: str = ""  # the card whose measured entry it comes from ("" for an estimate)


@dataclass(frozen=True)
class StageCost:
    stage: str
    work: str  # what is counted, in words
    device: str  # gpu | cpu
    seconds: float  # busy seconds on its device (summed over GPUs for a fanned-out stage)
    parallel: bool  # fans out over GPUs (the sweep); else one process
    basis: str


@dataclass
class Plan:
    profile: str
    card: str
    gpus: int
    rows: list[StageCost] = field(default_factory=list)
    trials: dict[str, int] = field(default_factory=dict)
    rates_source: str = ""
    measured: list[str] = field(default_factory=list)  # "h200: 2026-11-27 @e03ec8b: <basis>" of the entries used
    tiny: bool = False  # the profile runs tiny random-weight models (the rates are for the real ones)

    @property
    def gpu_hours(self) -> float:
        return sum(r.seconds for r in self.rows if r.device == "gpu") / 3600

    def wall_hours_of(self, r: StageCost) -> float:
        return r.seconds / 3600 / (self.gpus if (r.parallel and r.device == "gpu") else 1)

    @property
    def wall_hours(self) -> float:
        return sum(self.wall_hours_of(r) for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "card": self.card, "gpus": self.gpus, "trials": self.trials,
                "gpu_hours": round(self.gpu_hours, 3), "wall_hours": round(self.wall_hours, 3),
                "rates": self.rates_source, "measured": self.measured,
                "stages": [{"stage": r.stage, "work": r.work, "device": r.device, "hours": round(r.seconds / 3600, 4),
                            "wall_hours": round(self.wall_hours_of(r), 4), "basis": r.basis} for r in self.rows]}


# ----------------------------------------------------------------------------------------------------------------
# The rates file


def packaged_rates_path() -> Path:
    return Path(str(resources.files("visual_words.registry").joinpath("rates.yaml")))


def rates_path(path: str | os.PathLike | None = None) -> Path:
    """The rates file in use: `path`, else $VW_RATES, else the packaged registry/rates.yaml."""
    return Path(path or os.environ.get(RATES_ENV) or packaged_rates_path())


def load_rates_file(path: str | os.PathLike | None = None) -> dict:
    p = rates_path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise PlanError(f"{p}: rates file not found") from None
    except yaml.YAMLError as e:
        raise PlanError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cards"), dict):
        raise PlanError(f"{p}: a rates file needs a `cards` mapping (card -> peak_bf16_tflops)")
    for card, c in raw["cards"].items():
        if not isinstance(c, dict) or not _positive(c.get("peak_bf16_tflops")):
            raise PlanError(f"{p}: `cards.{card}.peak_bf16_tflops` must be a positive number")
    for card, m in (raw.get("measured") or {}).items():
        if card not in raw["cards"]:
            raise PlanError(f"{p}: `measured.{card}`: unknown card (add it under `cards` with its peak)")
        if not isinstance(m, dict) or not isinstance(m.get("rates"), dict):
            raise PlanError(f"{p}: `measured.{card}.rates` must be a mapping")
        for k, v in m["rates"].items():
            if k not in RATE_KEYS:
                raise PlanError(f"{p}: `measured.{card}.rates.{k}`: unknown rate (known: {', '.join(RATE_KEYS)})")
            if not _positive(v):
                raise PlanError(f"{p}: `measured.{card}.rates.{k}` must be a positive number, got {v!r}")
        for k in ("date", "commit", "basis"):
            if not m.get(k):
                raise PlanError(f"{p}: `measured.{card}.{k}` is missing (every measurement names its date, commit "
                                "and basis)")
    for k, e in (raw.get("estimated") or {}).items():
        if not isinstance(e, dict) or not _positive(e.get("value")) or e.get("device") not in ("gpu", "cpu"):
            raise PlanError(f"{p}: `estimated.{k}` needs a positive `value`, `device: gpu|cpu` and a `basis`")
    return raw


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)


def rates_for(card: str, path: str | os.PathLike | None = None) -> dict[str, Rate]:
    """Every rate for `card`, each with its basis: measured on the card, else scaled by published bf16 peak from
    the newest measured card that has it, else the file's estimate (GPU estimates scaled the same way)."""
    raw = load_rates_file(path)
    cards = raw["cards"]
    if card not in cards:
        raise PlanError(f"unknown card `{card}` (the rates file {rates_path(path)} knows: {', '.join(cards)})")
    peak = float(cards[card]["peak_bf16_tflops"])
    measured = raw.get("measured") or {}
    newest_first = sorted(measured, key=lambda c: str(measured[c]["date"]), reverse=True)
    out: dict[str, Rate] = {}

    def scaled(value: float, key: str, src: str) -> float:
        ratio = peak / float(cards[src]["peak_bf16_tflops"])
        return value * ratio if key.endswith("_per_s") else value / ratio

    for key in RATE_KEYS:
        m = measured.get(card, {}).get("rates", {})
        if key in m:
            out[key] = Rate(float(m[key]), f"measured on {card}", card)
            continue
        src = next((c for c in newest_first if key in measured[c]["rates"]), None)
        if src is not None:
            v = scaled(float(measured[src]["rates"][key]), key, src)
            out[key] = Rate(v, _scaled_basis(card, src, cards, measured[src]), src)
            continue
        est = (raw.get("estimated") or {}).get(key)
        if est is not None:
            ref = raw.get("reference_card", card)
            v = float(est["value"])
            if est["device"] == "gpu" and ref in cards and ref != card:
                v = scaled(v, key, ref)
            out[key] = Rate(v, "estimate")
    return out


def _scaled_basis(card, src, cards, entry) -> str:
    if cards[card]["peak_bf16_tflops"] == cards[src]["peak_bf16_tflops"]:
        return f"measured on {src} (same bf16 peak)"
    return (f"{src} scaled by bf16 peak {cards[card]['peak_bf16_tflops']:g}/{cards[src]['peak_bf16_tflops']:g}")


def cpu_estimate(key: str, path=None) -> Rate:
    est = (load_rates_file(path).get("estimated") or {}).get(key)
    if est is None:
        raise PlanError(f"{rates_path(path)}: `estimated.{key}` is missing")
    return Rate(float(est["value"]), "estimate")


def write_rates(card: str, rates: Mapping[str, float], *, basis: str, path: str | os.PathLike | None = None,
                commit: str | None = None, date: str | None = None, peak_bf16_tflops: float | None = None) -> Path:
    """Record measured rates of `card` in a rates file (default: the one in use, see `rates_path`): its `measured`
    entry is replaced by these rates (keys of RATE_KEYS), today's date, the checkout's commit and `basis` (what was
    measured, how). Other cards' entries and the estimates are kept. A card the file does not know yet needs its
    published dense bf16 peak (`peak_bf16_tflops`). The write is atomic; a bad key or value writes nothing."""
    from visual_words.io import write_text
    from visual_words.provenance import git_commit

    target = rates_path(path)
    raw = load_rates_file(target if target.exists() else packaged_rates_path())
    if card not in raw["cards"]:
        if not _positive(peak_bf16_tflops):
            raise PlanError(f"write_rates: card `{card}` is not in {target}; pass its peak_bf16_tflops")
        raw["cards"][card] = {"name": card, "peak_bf16_tflops": float(peak_bf16_tflops)}
    clean = {}
    for k, v in rates.items():
        if k not in RATE_KEYS:
            raise PlanError(f"write_rates: unknown rate `{k}` (known: {', '.join(RATE_KEYS)})")
        if not _positive(v):
            raise PlanError(f"write_rates: rate `{k}` must be a positive number, got {v!r}")
        clean[k] = float(v)
    if not basis:
        raise PlanError("write_rates: say what was measured and how (basis)")
    from visual_words.models.location import repo_root

    raw.setdefault("measured", {})[card] = {
        "date": date or dt.date.today().isoformat(),
        "commit": commit or git_commit(str(repo_root()))[:12],
        "basis": basis,
        "rates": clean,
    }
    text = ("# Rates per GPU card for `vw plan` (format: src/visual_words/registry/rates.yaml; written by "
            "visual_words.plan.write_rates)\n" + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return write_text(target, text)


def add_measured_rates(card: str, rates: Mapping[str, float], *, basis: str, path: str | os.PathLike) -> Path:
    """Add `rates` to `card`'s measured entry in the rates file at `path` (created from the packaged one if absent),
    keeping the rates already filed for the card (the SD step, generation and a rehearsal each measure
    their own keys); the basis names every measurement that contributed. The entry gets today's date and commit,
    so rates carried over from the packaged file keep theirs in the basis."""
    target = Path(path)
    old = (load_rates_file(target if target.is_file() else packaged_rates_path()).get("measured") or {}).get(card, {})
    carried = str(old.get("basis", ""))
    if old and not target.is_file():
        carried = f"{carried} ({old.get('date', '?')} @ {str(old.get('commit', '?'))[:12]})"
    bases = [b for b in carried.split(" + ") if b and b != basis] + [basis]
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_rates(card, {**old.get("rates", {}), **rates}, basis=" + ".join(bases), path=target)


def detect_card() -> str | None:
    """The rates-file name of this machine's first CUDA card, if torch sees one and it is known."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(0).lower()
    except Exception:  # no torch / no driver: nothing to detect
        return None
    for key, needle in (("h200", "h200"), ("h100-pcie", "h100 pcie"), ("h100", "h100"), ("a100", "a100"),
                        ("l40s", "l40s"), ("l4", "l4")):
        if needle in name:
            return key
    return None


# ----------------------------------------------------------------------------------------------------------------
# The projection


def plan_for(cfg, card: str | None = None, gpus: int = 1, rates_file: str | os.PathLike | None = None) -> Plan:
    """Project every stage of `cfg`'s profile on `gpus` cards of kind `card` (default: this machine's card, else
    h100)."""
    from visual_words.trials import trial_grid

    if gpus < 1:
        raise PlanError(f"--gpus must be at least 1, got {gpus}")
    card = card or detect_card() or DEFAULT_CARD
    r = rates_for(card, rates_file)
    grid = trial_grid(cfg)
    per_task = Counter(t.task for t in grid)
    n = len(grid)
    tc, ec, pc = cfg.train, cfg.evaluate, cfg.prepare
    from visual_words.registry import uses_tiny_models

    raw = load_rates_file(rates_file)
    used = {x.source for x in r.values() if x.source}
    plan = Plan(cfg.profile, card, gpus, trials=dict(per_task), rates_source=str(rates_path(rates_file)),
                measured=[f"{c}: {m['date']} @{m['commit']}: {m['basis']}"
                          for c, m in (raw.get("measured") or {}).items() if c in used],
                tiny=uses_tiny_models(cfg))

    def basis(key: str) -> str:  # the basis of the rate that dominates the row
        return r[key].basis

    def add(stage, work, device, seconds, parallel, b):
        plan.rows.append(StageCost(stage, work, device, float(seconds), parallel, b))

    # prepare: the feature caches of every image the study reads (train + held-out, per concept and dataset)
    images = 0
    for ds in cfg.study.datasets:
        per = pc.train_per_concept + (pc.dreambooth_holdout if ds == "dreambooth" else pc.eval_per_concept)
        images += cfg.study.concepts_per_dataset * per
    add("prepare", f"feature caches of {images} images; 3 model loads", "gpu",
        images * r["prepare_image_s"].value + 3 * r["model_load_s"].value, False,
        basis("prepare_image_s"))
    add("maps", "6 least-squares maps between the token tables", "cpu", cpu_estimate("maps_s", rates_file).value,
        False, "estimate")

    # train: SD one trial per batched step (a batch-8 768 px step fills a card); CLIP/OWL trials batched
    steps = tc.steps
    compiled = tc.compile is True or tc.compile == "auto"  # a projection is for a CUDA card, where auto compiles
    if per_task.get("generation"):
        step = r["sd_train_step_compiled_s"] if compiled else r["sd_train_step_s"]
        k = per_task["generation"]
        extra = r["sd_compile_s"].value * gpus if compiled else 0.0
        add("train (generation)", f"{k} SD trials x {steps} steps" + (" (compiled)" if compiled else ""), "gpu",
            k * steps * step.value + extra + gpus * r["model_load_s"].value, True,
            basis("sd_train_step_compiled_s" if compiled else "sd_train_step_s"))
    for task, key, name in (("detection", "owl_trial_steps_per_s", "OWLv2"),
                            ("classification", "clip_trial_steps_per_s", "CLIP")):
        k = per_task.get(task, 0)
        if k:
            add(f"train ({task})", f"{k} {name} trials x {steps} steps, batched", "gpu",
                k * steps / r[key].value + gpus * r["model_load_s"].value, True, basis(key))

    # evaluate: every trial in all three tasks (its own model + the two others through the maps)
    add("evaluate (generation)", f"{n} trials x {ec.images_per_trial} image(s), {ec.inference_steps} steps", "gpu",
        n * ec.images_per_trial * r["generate_image_s"].value * ec.inference_steps / 50 + 2 * r["model_load_s"].value,
        False, basis("generate_image_s"))
    add("evaluate (detection)", f"{n} trials", "gpu", n * r["detect_eval_trial_s"].value + r["model_load_s"].value,
        False, basis("detect_eval_trial_s"))
    add("evaluate (classification)", f"{n} trials", "gpu",
        n * r["classify_eval_trial_s"].value + r["model_load_s"].value, False, basis("classify_eval_trial_s"))

    queries = n * tc.num_vectors * (3 if cfg.analyze.transferred else 1)
    add("analyze", f"{queries} eps-ball queries, t-SNE, Fig. 7", "cpu",
        queries * cpu_estimate("analyze_query_s", rates_file).value + cpu_estimate("analyze_fixed_s", rates_file).value,
        False, "estimate")
    add("report", "figures and tables", "cpu", cpu_estimate("report_s", rates_file).value, False, "estimate")
    return plan


def format_plan(plan: Plan) -> str:
    trials = ", ".join(f"{k} {v}" for k, v in plan.trials.items())
    lines = [f"[plan] profile {plan.profile}: {sum(plan.trials.values())} trials ({trials}) on {plan.gpus} x "
             f"{plan.card}; rates {plan.rates_source}",
             f"{'stage':<26} {'device':<6} {'hours':>7} {'wall h':>7}  {'basis':<34} work"]
    for r in plan.rows:
        lines.append(f"{r.stage:<26} {r.device:<6} {r.seconds / 3600:>7.2f} {plan.wall_hours_of(r):>7.2f}  "
                     f"{r.basis:<34} {r.work}")
    lines += [f"[plan] {m}" for m in plan.measured]
    if plan.tiny:
        lines.append("[plan] note: this profile uses tiny random-weight models; the rates are the full-size models', "
                     "so the projection overstates its cost by orders of magnitude")
    lines.append(f"[plan] total: {plan.gpu_hours:.2f} GPU-hours, {plan.wall_hours:.2f} h wall on {plan.gpus} x "
                 f"{plan.card} (CPU stages included in wall time)")
    return "\n".join(lines)


def confirm(plan: Plan, threshold_gpu_hours: float, yes: bool = False, stdin=None, out=None) -> None:
    """Ask before a run whose projection exceeds the threshold. Returns when it may go on; raises PlanRefused
    otherwise. `yes` (or $VW_YES=1) answers yes. Without a terminal to ask on (DVC stages, CI, `docker run`
    without -it) it refuses rather than start hours of GPU work nobody agreed to. Every profile is asked, tiny
    models included: their projection overstates the cost, but a setting that multiplies the work (train.steps=10^12)
    makes a run that never ends on any device."""
    stdin = stdin if stdin is not None else sys.stdin
    out = out if out is not None else sys.stderr
    if plan.gpu_hours <= threshold_gpu_hours or yes or os.environ.get(YES_ENV, "") not in ("", "0"):
        return
    what = (f"projected {plan.gpu_hours:.1f} GPU-hours ({plan.wall_hours:.1f} h on {plan.gpus} x {plan.card}) "
            f"exceeds sweep.confirm_above_gpu_hours = {threshold_gpu_hours:g}")
    if not (hasattr(stdin, "isatty") and stdin.isatty()):
        raise PlanRefused(f"{what}; not asking without a terminal: pass --yes (or set {YES_ENV}=1) to run it")
    print(f"{what}. Run it? [y/N] ", end="", file=out, flush=True)
    answer = stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise PlanRefused(f"{what}; not confirmed")
