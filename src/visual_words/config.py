"""params.yaml -> a validated, resolved config.

One file holds every knob (params.yaml at the repo root), namespaced by stage. A profile (``profiles.<name>``)
overrides only what differs from the base sections. Loading is strict, nanoGPT-configurator style: an unknown key,
a wrong type or a missing value is an error that names the key and the file. The schema below is the single place
that says what each key is; the values live only in params.yaml.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """A problem in params.yaml (or an override), naming the key and the file."""


# ----------------------------------------------------------------------------------------------------------------
# Schema: one dataclass per section. Field types are enforced; docstrings say what a key means.


@dataclass(frozen=True)
class StudyConfig:
    """What is studied: which checkpoints play which role, which datasets, concepts, anchors and radii."""

    models: dict[str, str]  # role -> registry key: generation, detection, classification, evaluator
    datasets: list[str]  # keys of registry/concepts.yaml
    concepts_per_dataset: int  # the first N concepts of each dataset (paper: 10)
    anchors_per_concept: int  # the first N anchors of the dataset's anchor list (paper: 10)
    deltas: list[float]  # relative ε-ball radii (paper: 0.1, 0.2, 0.5, 1.0)
    unconstrained: bool  # also train the δ = ∞ grid (paper §4)
    seed: int  # root seed; a trial's seed derives from it and the trial id
    device: str  # auto | cpu | cuda | cuda:N


@dataclass(frozen=True)
class PrepareConfig:
    """Datasets -> per-concept manifests and feature caches."""

    data_root: str  # raw datasets folder tracked by data.dvc (coco/, pascal/, dreambooth/ below it)
    imagenet_root: str  # ILSVRC CLS-LOC root supplied by the user ("" = not available)
    source: str  # "real" (the four datasets under data_root) or "synthetic" (smoke images built at run time)
    train_per_concept: int  # paper: 8
    eval_per_concept: int  # held-out images per concept
    dreambooth_holdout: int  # DreamBooth subjects have 4-6 photos: hold out this many per subject (D7)
    split_seed: int
    synthetic_image_size: int  # size of the smoke images drawn at run time
    synthetic_root: str  # where the synthetic image set is drawn (never under data/, which data.dvc tracks)
    voc_image_sets: str  # VOC split lists: ImageSets/<this>/{train,val}.txt (Main | Segmentation)
    dreambooth_boxes: str  # the hand-checked DreamBooth box file (vw data dreambooth-boxes)
    precompute_features: bool  # prepare also fills the feature cache for the study's models
    feature_batch_size: int  # images per forward pass when computing image-side features
    manifests_dir: str
    cache_dir: str


@dataclass(frozen=True)
class MapsConfig:
    """Linear transfer maps between the token tables."""

    estimator: str  # ols | ridge | procrustes | affine
    ridge_alpha: float
    holdout_fraction: float  # share of shared tokens held out for map quality
    seed: int
    out_dir: str


@dataclass(frozen=True)
class TrainConfig:
    """Textual inversion of new-word embeddings (PAPER.md §7, Table 2)."""

    num_vectors: int  # vectors per token (Table 2: 4; the prose: 1)
    steps: int
    batch_size: int
    lr: float
    betas: list[float]
    adam_eps: float
    weight_decay: float
    trials_per_batch: int  # trials trained together in one batched forward pass
    trials_per_batch_by_task: dict[str, int]  # per-task override (generation: an SD step at batch 8 fills a GPU)
    log_every: int  # steps between logged curve points
    checkpoint_every: int  # steps between trial-batch checkpoints (0 = never)
    precision: str  # auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16 | fp8 (SD UNet linears, torchao; opt-in)
    flip_augment: bool  # also encode the mirror image for SD latents
    # Speed options of the SD UNet (models/speed.py; equal results up to rounding, tested on CPU):
    compile: bool | str  # auto (on for CUDA) | true | false: torch.compile the UNet
    compile_mode: str  # default | max-autotune | max-autotune-no-cudagraphs | reduce-overhead (CUDA graphs)
    attention: str  # auto (cuDNN > flash > mem-efficient on CUDA) | default | cudnn | flash | efficient | math
    channels_last: bool  # UNet in channels_last memory format
    out_dir: str


@dataclass(frozen=True)
class EvaluateConfig:
    """The three task metrics, in-domain and transferred (D6)."""

    images_per_trial: int
    inference_steps: int
    guidance_scale: float
    keep_images_per_trial: int  # generated images kept for qualitative figures
    detection_score_threshold: float
    detection_max_dets: int  # best-scoring OWL patches kept per image (COCOeval scores at most 100 per image)
    trials_per_batch: int  # trials whose text side runs in one forward (detection, classification)
    engine: str  # local (this process) | ray (a Ray task per batch, like the sweep: sweep.num_workers, GPU shares)
    generation_batch_size: int  # images per SD pipeline call
    precision: str  # auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16 | fp8 — frozen weights of the task models
    compile: bool | str  # the SD UNet's speed options for generation, as in `train` (models/speed.py)
    compile_mode: str
    attention: str
    channels_last: bool
    bootstrap_resamples: int
    bootstrap_seed: int
    ci_level: float
    out_dir: str


@dataclass(frozen=True)
class AnalyzeConfig:
    """ε-ball statistics, t-SNE of pooled activations, truncated-encoder generations (PAPER.md §4, Fig. 7)."""

    block_size: int  # queries per BLAS block
    nearest_k: int  # nearest vocabulary tokens reported per vector
    ball_factors: list[float]  # also count the tokens within f·d_nn(anchor) of each vector, for each f
    transferred: bool  # also analyse each vector's images under the transfer maps (needs `vw maps`)
    tsne_perplexity: float  # capped below the number of points
    tsne_seed: int
    tsne_delta: float  # the δ whose words the t-SNE figures show (the paper shows constrained words)
    truncation_word: str  # dataset/concept/anchor generated with a truncated text encoder (Fig. 7); "" = auto
    truncation_depths: int  # how many encoder depths, evenly spaced from 1 to all layers
    out_dir: str


@dataclass(frozen=True)
class ReportConfig:
    """Figures, comparison with the paper, the HTML page."""

    out_dir: str  # the report goes to <out_dir>/<profile>/
    formats: list[str]  # figure formats, e.g. [png, svg]
    dpi: int
    tolerance: float  # |ours − paper| allowed for a paper number that has no CI (ARTIFACT.md claims table)
    fig4_concepts: list[str]  # dataset/concept columns of Fig. 4 (missing ones are replaced by available ones)
    fig5_concepts: list[str]  # dataset/concept rows of the Fig. 5-style anchor grids


@dataclass(frozen=True)
class SweepConfig:
    """Fan-out of the trial grid and tracking."""

    engine: str  # ray (local cluster by default; RAY_ADDRESS for a cluster)
    num_workers: int  # local workers (CPU profile)
    gpus_per_task: float  # GPU share per task when GPUs are present
    max_retries: int
    tracking_uri: str  # "" = sqlite:///mlflow.db in the workspace; MLFLOW_TRACKING_URI wins
    experiment_prefix: str


SECTIONS: dict[str, type] = {
    "study": StudyConfig,
    "prepare": PrepareConfig,
    "maps": MapsConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "analyze": AnalyzeConfig,
    "report": ReportConfig,
    "sweep": SweepConfig,
}


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one profile."""

    profile: str
    study: StudyConfig
    prepare: PrepareConfig
    maps: MapsConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    analyze: AnalyzeConfig
    report: ReportConfig
    sweep: SweepConfig
    source: str = field(default="", compare=False)  # the params file it came from
    root: str = field(default=".", compare=False)  # the folder relative paths are resolved against

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("root")
        d.pop("source")
        return d

    def path(self, relative: str) -> Path:
        """A path from params.yaml, resolved against the params file's folder (the repo root)."""
        p = Path(relative)
        return p if p.is_absolute() else Path(self.root) / p


# ----------------------------------------------------------------------------------------------------------------
# Validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widened to float where a float is wanted)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # e.g. `bool | str` (compile: auto | true | false)
        for option in typing.get_args(tp):
            try:
                return _check(value, option, key, source)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: `{key}` must be {' or '.join(_type_name(t) for t in typing.get_args(tp))}, "
                          f"got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: `{key}` must be a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: `{key}` must be {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: `{key}` must be a list of {_type_name(item)}, got {value!r}")
        return [_check(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: `{key}` must be a mapping, got {value!r}")
        return {str(k): _check(v, item, f"{key}.{k}", source) for k, v in value.items()}
    raise TypeError(f"unsupported schema type {tp!r} for {key}")  # a bug in the schema, not in params.yaml


def _build_section(name: str, raw: Any, source: str) -> Any:
    cls = SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section `{name}` must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key `{name}.{unknown[0]}` (known keys of `{name}`: {', '.join(fields)})")
    missing = [f for f in fields if f not in raw or raw[f] is None]
    if missing:
        raise ConfigError(f"{source}: missing value for `{name}.{missing[0]}`")
    return cls(**{f: _check(raw[f], hints[f], f"{name}.{f}", source) for f in fields})


def _merge(base: dict, override: dict, where: str, source: str) -> dict:
    """Recursive dict merge; an override key that the base lacks is an error (a mistyped key)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if k not in base:
            raise ConfigError(f"{source}: unknown key `{where}{k}` in profile override")
        # Mappings merge key by key (also dict-typed values such as study.models: a profile can swap one role).
        if isinstance(v, dict) and isinstance(base[k], dict):
            out[k] = _merge(base[k], v, f"{where}{k}.", source)
        else:
            out[k] = v
    return out


def find_params_file(start: str | os.PathLike | None = None) -> Path:
    """params.yaml in `start` or the nearest parent folder (so `vw` works from any subfolder of the repo)."""
    env = os.environ.get("VW_PARAMS")
    if env:
        return Path(env)
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / PARAMS_FILE).is_file():
            return d / PARAMS_FILE
    raise ConfigError(f"{PARAMS_FILE} not found in {here} or any parent folder (run from the repo, or set VW_PARAMS)")


def load_config(
    profile: str | None = None,
    params_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load params.yaml, apply the profile (default: the file's top-level `profile`) and dotted overrides."""
    path = Path(params_file) if params_file else find_params_file()
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: must be a mapping of sections")
    allowed = set(SECTIONS) | {"profile", "profiles"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key `{unknown[0]}` (known: {', '.join(sorted(allowed))})")
    profiles = raw.get("profiles") or {}
    name = profile or raw.get("profile")
    if not name:
        raise ConfigError(f"{source}: missing value for `profile` (and no --profile given)")
    if name not in profiles:
        raise ConfigError(f"{source}: unknown profile `{name}` (defined: {', '.join(sorted(profiles)) or 'none'})")
    base = {k: raw.get(k) for k in SECTIONS}
    for k, v in base.items():
        if v is None:
            raise ConfigError(f"{source}: missing section `{k}`")
    merged = _merge(base, profiles[name] or {}, "", f"{source} (profile {name})")
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        node = merged
        for p in parts[:-1]:
            if not isinstance(node, dict) or p not in node:
                raise ConfigError(f"override `{dotted}`: unknown key `{p}`")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override `{dotted}`: unknown key `{parts[-1]}`")
        node[parts[-1]] = value
    sections = {k: _build_section(k, merged[k], source) for k in SECTIONS}
    return Config(profile=name, source=source, root=str(path.parent.resolve()), **sections)


def parse_override(text: str) -> tuple[str, Any]:
    """`train.steps=5` -> ("train.steps", 5); the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override `{text}` must look like section.key=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
