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
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visual_words.errors import UserError
from visual_words.tasks import TASKS

PARAMS_FILE = "params.yaml"
PROFILE_PLACEHOLDER = "{profile}"  # in a folder setting, the profile's name: each profile's outputs stay apart


class ConfigError(UserError, ValueError):
    """A problem in params.yaml (or an override), naming the key and the file."""


# ----------------------------------------------------------------------------------------------------------------
# Schema: one dataclass per section. Field types are enforced; comments say what a key means.
#
# Every field also declares which outputs it invalidates (docs/reuse.md): the reuse keys of trained tokens, their
# checkpoints, evaluation rows and cached features hash exactly the fields that name the output (visual_words.reuse).
# A field that reaches an output only through data it selects (a split setting, a data folder) names that data in
# `via` instead: the content digest of what the output read covers it, so a change that selects the same content
# reuses everything. A field with neither changes no result (logging, batching, where files go).

TRAIN_OUTPUTS = ("train.generation", "train.detection", "train.classification")  # trained tokens (+ checkpoints)
EVAL_OUTPUTS = ("evaluate.generation", "evaluate.detection", "evaluate.classification")  # evaluation rows per task
STAGE_OUTPUTS = ("features", "maps", "analyze", "report")  # feature cache; stages DVC reruns as a whole
OUTPUTS = TRAIN_OUTPUTS + EVAL_OUTPUTS + STAGE_OUTPUTS


def affects(*outputs: str, via: str = "") -> Any:
    """Field metadata: the outputs this setting invalidates, or `via` the data digest that carries it."""
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:  # a bug in the schema, not in params.yaml
        raise TypeError(f"unknown output {unknown[0]!r} (known: {', '.join(OUTPUTS)})")
    return field(metadata={"invalidates": tuple(outputs), "via": via})


def no_result() -> Any:
    """Field metadata of a setting that changes no number: logging, batching, devices, output folders."""
    return affects()
MANIFEST = "the manifest records it selects (file contents, boxes, labels)"


@dataclass(frozen=True)
class StudyConfig:
    """What is studied: which checkpoints play which role, which datasets, concepts, anchors and radii."""

    # role -> registry key: generation, detection, classification, evaluator. A trial names its own model (its
    # identity enters the trial key); an evaluation row depends on the model it is scored in.
    models: dict[str, str] = affects(*EVAL_OUTPUTS)
    datasets: list[str] = affects(via="the trial grid (a trial names its dataset)")  # keys of registry/concepts.yaml
    # the first N concepts of each dataset (paper: 10): classification negatives and every metric's label set
    concepts_per_dataset: int = affects("train.classification", *EVAL_OUTPUTS)
    anchors_per_concept: int = affects(via="the trial grid")  # the first N anchors of the dataset's list (paper: 10)
    deltas: list[float] = affects(via="the trial grid")  # relative ε-ball radii (paper: 0.1, 0.2, 0.5, 1.0)
    unconstrained: bool = affects(via="the trial grid")  # also train the δ = ∞ grid (paper §4)
    seed: int = affects(*TRAIN_OUTPUTS)  # root seed; a trial's seed derives from it and the trial id
    device: str = no_result()  # auto | cpu | cuda | cuda:N
    # "" = huggingface_hub's own cache; else this folder is the hub cache, its lock inside it. Where the weights are
    # read from, not what they are: the model's pinned identity and its table identity enter the keys.
    hub_cache: str = no_result()
    # per task, a smaller grid than the one above: {task: {datasets, concepts_per_dataset, anchors_per_concept,
    # deltas, unconstrained, anchor_order}} (any subset of those keys; e.g. fewer SD trials, whose training costs
    # ~100x more; anchor_order: rotated gives each concept different anchors, trials.anchors_for)
    grid_by_task: dict[str, dict[str, Any]] = affects(via="the trial grid")


@dataclass(frozen=True)
class PrepareConfig:
    """Datasets -> per-concept manifests and feature caches."""

    data_root: str = affects(via=MANIFEST)  # raw datasets folder tracked by data.dvc (coco/, pascal/, dreambooth/)
    imagenet_root: str = affects(via=MANIFEST)  # ILSVRC CLS-LOC root supplied by the user ("" = not available)
    source: str = affects(via=MANIFEST)  # "real" (the datasets under data_root) or "synthetic" (smoke images)
    train_per_concept: int = affects(via=MANIFEST)  # paper: 8
    eval_per_concept: int = affects(via=MANIFEST)  # held-out images per concept
    dreambooth_holdout: int = affects(via=MANIFEST)  # DreamBooth subjects have 4-6 photos: hold out this many (D7)
    split_seed: int = affects(via=MANIFEST)
    synthetic_image_size: int = affects(via=MANIFEST)  # size of the smoke images drawn at run time
    synthetic_root: str = affects(via=MANIFEST)  # where the synthetic image set is drawn (never under data/)
    # VOC split lists: ImageSets/<this>/{train,val}.txt (Main | Segmentation)
    voc_image_sets: str = affects(via=MANIFEST)
    # `detect`: the detection model (study.models.detection) draws the boxes at prepare time, kept with their scores
    # in <manifests_dir>/dreambooth_boxes.json; else a hand-checked box file (vw data dreambooth-boxes) used instead
    dreambooth_boxes: str = affects(via=MANIFEST)
    fetch: bool = no_result()  # vw reproduce downloads the study's missing datasets first; false: it stops, naming how
    # "" = registry/datasets.yaml; else a YAML file in its format whose entries replace the registry's, key by key
    # (a local mirror: other URLs and md5s); the photos' sha256 and the layout stay the registry's unless it says so
    dataset_sources: str = no_result()
    downloads_dir: str = no_result()  # where fetched archives are kept (a re-fetch checks and reuses them)
    precompute_features: bool = no_result()  # prepare also fills the feature cache for the study's models
    feature_batch_size: int = no_result()  # images per forward pass when computing image-side features
    manifests_dir: str = no_result()
    cache_dir: str = no_result()


@dataclass(frozen=True)
class MapsConfig:
    """Linear transfer maps between the token tables (evaluation rows hash the map file they used)."""

    estimator: str = affects("maps")  # ols | ridge | procrustes | affine
    ridge_alpha: float = affects("maps")
    holdout_fraction: float = affects("maps")  # share of shared tokens held out for map quality
    seed: int = affects("maps")
    out_dir: str = no_result()


@dataclass(frozen=True)
class TrainConfig:
    """Textual inversion of new-word embeddings (docs/paper.md §7, the paper's Table 2)."""

    num_vectors: int = affects(*TRAIN_OUTPUTS)  # vectors per token (Table 2: 4; the prose: 1)
    steps: int = affects(*TRAIN_OUTPUTS)
    # samples per SD step; detection/classification use all positives and negatives every step (ARTIFACT.md §2)
    batch_size: int = affects("train.generation")
    lr: float = affects(*TRAIN_OUTPUTS)
    betas: list[float] = affects(*TRAIN_OUTPUTS)
    adam_eps: float = affects(*TRAIN_OUTPUTS)
    weight_decay: float = affects(*TRAIN_OUTPUTS)
    trials_per_batch: int = no_result()  # trials trained together in one batched forward pass
    trials_per_batch_by_task: dict[str, int] = no_result()  # per-task override (generation: an SD step fills a GPU)
    log_every: int = no_result()  # steps between logged curve points
    checkpoint_every: int = no_result()  # steps between trial-batch checkpoints (0 = never)
    # auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16 | fp8 (SD UNet linears, torchao; opt-in)
    precision: str = affects(*TRAIN_OUTPUTS)
    flip_augment: bool = affects("train.generation")  # also encode the mirror image for SD latents
    # Speed options of the SD UNet (models/speed.py): the same results up to rounding (tested on CPU), so they
    # never make a trained word stale.
    compile: bool | str = no_result()  # auto (on for CUDA) | true | false: torch.compile the UNet
    # default | max-autotune | max-autotune-no-cudagraphs | reduce-overhead (CUDA graphs)
    compile_mode: str = no_result()
    # auto (cuDNN > flash > mem-efficient on CUDA) | default | cudnn | flash | efficient | math
    attention: str = no_result()
    channels_last: bool = no_result()  # UNet in channels_last memory format
    out_dir: str = no_result()


@dataclass(frozen=True)
class EvaluateConfig:
    """The three task metrics, in-domain and transferred (D6)."""

    images_per_trial: int = affects("evaluate.generation")
    inference_steps: int = affects("evaluate.generation")
    guidance_scale: float = affects("evaluate.generation")
    # generated images / detection renderings kept for the qualitative figures (part of what a row run writes)
    keep_images_per_trial: int = affects("evaluate.generation", "evaluate.detection")
    detection_score_threshold: float = affects("evaluate.detection")
    detection_max_dets: int = affects("evaluate.detection")  # best-scoring OWL patches kept per image (COCOeval: 100)
    # IoU above which a lower-scoring box of the same image is suppressed before scoring; 1.0 = no NMS (the default:
    # OWLv2's own post-processing for text queries applies none; ARTIFACT.md §2)
    detection_nms_iou: float = affects("evaluate.detection")
    trials_per_batch: int = no_result()  # trials whose text side runs in one forward (detection, classification)
    # local (this process) | ray (a Ray task per batch of one evaluated and one source model, like the sweep)
    engine: str = no_result()
    generation_batch_size: int = no_result()  # images per SD pipeline call (each image has its own generator)
    # auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16 | fp8 — the frozen weights of the task models
    precision: str = affects(*EVAL_OUTPUTS)
    # the SD UNet's speed options for generation, as in `train` (models/speed.py): never make a row stale
    compile: bool | str = no_result()
    compile_mode: str = no_result()
    attention: str = no_result()
    channels_last: bool = no_result()
    bootstrap_resamples: int = no_result()  # the summary and the report recompute CIs from the rows every run
    bootstrap_seed: int = no_result()
    ci_level: float = no_result()
    out_dir: str = no_result()


@dataclass(frozen=True)
class AnalyzeConfig:
    """ε-ball statistics, t-SNE of pooled activations, truncated-encoder generations (docs/paper.md §4, Fig. 7)."""

    block_size: int = no_result()  # queries per BLAS block
    nearest_k: int = affects("analyze")  # nearest vocabulary tokens reported per vector
    ball_factors: list[float] = affects("analyze")  # also count the tokens within f·d_nn(anchor) of each vector
    transferred: bool = affects("analyze")  # also analyse each vector's images under the transfer maps
    tsne_perplexity: float = affects("analyze")  # capped below the number of points
    tsne_seed: int = affects("analyze")
    tsne_delta: float = affects("analyze")  # the δ whose words the t-SNE figures show
    truncation_word: str = affects("analyze")  # dataset/concept/anchor generated with a truncated encoder (Fig. 7)
    truncation_depths: int = affects("analyze")  # how many encoder depths, evenly spaced from 1 to all layers
    out_dir: str = no_result()


@dataclass(frozen=True)
class ReportConfig:
    """Figures, comparison with the paper, the HTML page."""

    out_dir: str = no_result()  # the report goes to <out_dir>/<profile>/
    formats: list[str] = affects("report")  # figure formats, e.g. [png, svg]
    dpi: int = affects("report")
    tolerance: float = affects("report")  # |ours − paper| allowed where the paper has no CI (ARTIFACT.md claims)
    fig4_concepts: list[str] = affects("report")  # dataset/concept columns of Fig. 4
    fig5_concepts: list[str] = affects("report")  # dataset/concept rows of Fig. 5's generation rows
    fig5_detection_concepts: list[str] = affects("report")  # dataset/concept rows of Fig. 5's detection rows
    claims: list[str] = affects("report")  # claims checked with stated power (visual_words.claims), [] = none


@dataclass(frozen=True)
class SweepConfig:
    """Fan-out of the trial grid and tracking: where and how trials run, never what they compute."""

    engine: str = no_result()  # ray (local cluster by default; RAY_ADDRESS for a cluster)
    num_workers: int = no_result()  # local workers (CPU profile)
    gpus_per_task: float = no_result()  # GPU share per task when GPUs are present
    max_retries: int = no_result()
    tracking_uri: str = no_result()  # "" = sqlite:///mlflow.db in the workspace; MLFLOW_TRACKING_URI wins
    experiment_prefix: str = no_result()
    confirm_above_gpu_hours: float = no_result()  # `vw plan`'s projection above this asks first (--yes: go)


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
# Allowed values and ranges: checked after the types, so `--set train.steps=-5` or `study.device: tpu` is one line
# naming the key, the file and what is allowed, before any work starts.

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "fp8")  # fp8: the SD UNet's linear layers (torchao, CUDA); opt-in
DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"
RULES: dict[str, tuple[str, Any]] = {
    # key: (kind, value), kind = min | min_exclusive | range [a, b) | open_range (a, b) | choices; the rule of a
    # list or mapping key applies to each of its values
    "study.concepts_per_dataset": ("min", 1), "study.anchors_per_concept": ("min", 1),
    "study.deltas": ("min_exclusive", 0.0),
    "prepare.source": ("choices", ("real", "synthetic")), "prepare.train_per_concept": ("min", 1),
    "prepare.eval_per_concept": ("min", 0), "prepare.dreambooth_holdout": ("min", 0),
    "prepare.synthetic_image_size": ("min", 8), "prepare.feature_batch_size": ("min", 1),
    "prepare.voc_image_sets": ("choices", ("Main", "Segmentation")),
    "maps.estimator": ("choices", ("ols", "ridge", "procrustes", "affine")), "maps.ridge_alpha": ("min", 0.0),
    "maps.holdout_fraction": ("range", (0.0, 1.0)),
    "train.num_vectors": ("min", 1), "train.steps": ("min", 1), "train.batch_size": ("min", 1),
    "train.lr": ("min_exclusive", 0.0), "train.betas": ("range", (0.0, 1.0)), "train.adam_eps": ("min_exclusive", 0.0),
    "train.weight_decay": ("min", 0.0), "train.trials_per_batch": ("min", 1),
    "train.trials_per_batch_by_task": ("min", 1), "train.log_every": ("min", 0), "train.checkpoint_every": ("min", 0),
    "train.precision": ("choices", PRECISIONS),
    "evaluate.images_per_trial": ("min", 1), "evaluate.inference_steps": ("min", 1),
    "evaluate.keep_images_per_trial": ("min", 0), "evaluate.detection_max_dets": ("min", 1),
    "evaluate.trials_per_batch": ("min", 1), "evaluate.generation_batch_size": ("min", 1),
    "evaluate.precision": ("choices", PRECISIONS), "evaluate.bootstrap_resamples": ("min", 1),
    "evaluate.ci_level": ("open_range", (0.0, 1.0)),
    "analyze.block_size": ("min", 1), "analyze.nearest_k": ("min", 1), "analyze.ball_factors": ("min_exclusive", 0.0),
    "analyze.tsne_perplexity": ("min_exclusive", 0.0), "analyze.truncation_depths": ("min", 1),
    "report.dpi": ("min", 1), "report.tolerance": ("min", 0.0),
    "sweep.engine": ("choices", ("ray",)), "sweep.num_workers": ("min", 1),
    "sweep.gpus_per_task": ("min_exclusive", 0.0),
    "sweep.max_retries": ("min", 0),
}
LENGTHS = {"train.betas": 2}


def _check_rule(key: str, value: Any, source: str) -> None:
    if key == "study.device":
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", str(value)):
            raise ConfigError(f"{source}: `{key}` must be {DEVICE_FORMS}, got {value!r}")
        return
    if key in LENGTHS and len(value) != LENGTHS[key]:
        raise ConfigError(f"{source}: `{key}` must hold {LENGTHS[key]} values, got {value!r}")
    rule = RULES.get(key)
    if rule is None:
        return
    items = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, list) else [value]
    kind, arg = rule
    ok, want = {"min": (lambda v: v >= arg, lambda: f"≥ {arg}"),
                "min_exclusive": (lambda v: v > arg, lambda: f"> {arg}"),
                "range": (lambda v: arg[0] <= v < arg[1], lambda: f"in [{arg[0]}, {arg[1]})"),
                "open_range": (lambda v: arg[0] < v < arg[1], lambda: f"in ({arg[0]}, {arg[1]})"),
                "choices": (lambda v: v in arg, lambda: "one of " + ", ".join(map(str, arg)))}[kind]
    for v in items:
        if not ok(v):
            what = "each value of " if isinstance(value, (list, dict)) else ""
            raise ConfigError(f"{source}: {what}`{key}` must be {want()}, got {value!r}")


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
    if tp is Any:  # checked by the section's own validator (e.g. _check_grid_by_task)
        return value
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


def _build_section(name: str, raw: Any, source: str, overridden: frozenset[str] = frozenset()) -> Any:
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

    def where(key: str) -> str:  # a value given with --set is reported as such, not as the file's
        return "--set" if any(o == key or o.startswith(key + ".") for o in overridden) else source

    values = {f: _check(raw[f], hints[f], f"{name}.{f}", where(f"{name}.{f}")) for f in fields}
    for f, v in values.items():
        _check_rule(f"{name}.{f}", v, where(f"{name}.{f}"))
    if name == "study":
        values["grid_by_task"] = _check_grid_by_task(values, hints, where("study.grid_by_task"))
        _check_grid_fits_registry(values, where)
    return cls(**values)


def _check_grid_fits_registry(study: dict, where) -> None:
    """The grid asks only for what registry/concepts.yaml has: a count beyond a dataset's concepts (or its anchor
    words, one per concept) is an error, not silently capped (the paper's 10 × 10 is every concept and anchor)."""
    from visual_words import registry

    table = registry.datasets()
    for ds in study["datasets"]:
        if ds not in table:
            raise ConfigError(f"{where('study.datasets')}: `study.datasets`: unknown dataset `{ds}` "
                              f"(registry/concepts.yaml has: {', '.join(table)})")
        for k in ("concepts_per_dataset", "anchors_per_concept"):
            if study[k] > len(table[ds]):
                raise ConfigError(f"{where('study.' + k)}: `study.{k}` = {study[k]} exceeds the {len(table[ds])} "
                                  f"concepts (each with its anchor word) of dataset `{ds}` in registry/concepts.yaml; "
                                  f"use at most {min(len(table[d]) for d in study['datasets'] if d in table)}")


GRID_KEYS = ("datasets", "concepts_per_dataset", "anchors_per_concept", "deltas", "unconstrained", "anchor_order")
ANCHOR_ORDERS = ("first", "rotated")  # trials.anchors_for: the same first N anchors for every concept, or shifted


def _check_grid_by_task(study: dict, hints: dict, source: str) -> dict:
    """`study.grid_by_task`: per task, a subset of the study grid (so prepare, which follows `study`, covers it)."""
    out = {}
    for task, sub in study["grid_by_task"].items():
        where = f"study.grid_by_task.{task}"
        if task not in TASKS:
            raise ConfigError(f"{source}: `{where}`: unknown task ({', '.join(TASKS)})")
        if not isinstance(sub, dict):
            raise ConfigError(f"{source}: `{where}` must be a mapping of {', '.join(GRID_KEYS)}")
        unknown = sorted(set(sub) - set(GRID_KEYS))
        if unknown:
            raise ConfigError(f"{source}: unknown key `{where}.{unknown[0]}` (known: {', '.join(GRID_KEYS)})")
        if sub.get("anchor_order", "first") not in ANCHOR_ORDERS:
            raise ConfigError(f"{source}: `{where}.anchor_order` must be one of {', '.join(ANCHOR_ORDERS)}")
        checked = {k: (v if k == "anchor_order" else _check(v, hints[k], f"{where}.{k}", source))
                   for k, v in sub.items()}
        extra = sorted(set(checked.get("datasets", [])) - set(study["datasets"]))
        if extra:
            raise ConfigError(f"{source}: `{where}.datasets`: {extra[0]} is not in study.datasets")
        for k in ("concepts_per_dataset", "anchors_per_concept"):
            if checked.get(k, 0) > study[k]:
                raise ConfigError(f"{source}: `{where}.{k}` = {checked[k]} exceeds study.{k} = {study[k]}")
        out[task] = checked
    return out


def _merge(base: dict, override: dict, where: str, source: str) -> dict:
    """Recursive dict merge; an override key that the base lacks is an error (a mistyped key)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if k not in base:
            raise ConfigError(f"{source}: unknown key `{where}{k}` in profile override")
        # Mappings merge key by key (also dict-typed values such as study.models: a profile can swap one role).
        # An empty mapping in the base (e.g. study.grid_by_task: {}) has no keys to check against: it takes the
        # profile's entries as they are, and the section's validator checks them.
        if isinstance(v, dict) and isinstance(base[k], dict) and base[k]:
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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a folder, not a params file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a text file (not UTF-8); expected params.yaml") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from None
    if raw is None:
        raise ConfigError(f"{source}: empty file; expected the sections of params.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: must be a mapping of sections, got a {type(raw).__name__}")
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
        where = []
        for p in parts[:-1]:
            if not isinstance(node, dict):
                raise ConfigError(f"--set `{dotted}`: `{'.'.join(where)}` is a value, not a section (it has no "
                                  f"key `{p}`)")
            if p not in node:
                raise ConfigError(f"--set `{dotted}`: unknown key `{p}`"
                                  + (f" in `{'.'.join(where)}`" if where else "")
                                  + (f" (known: {', '.join(map(str, node))})" if len(node) < 40 else ""))
            node, where = node[p], [*where, p]
        if not isinstance(node, dict):
            raise ConfigError(f"--set `{dotted}`: `{'.'.join(where)}` is a value, not a section (it has no key "
                              f"`{parts[-1]}`)")
        if parts[-1] not in node:
            raise ConfigError(f"--set `{dotted}`: unknown key `{parts[-1]}`"
                              + (f" in `{'.'.join(where)}` (known: {', '.join(map(str, node))})" if where else ""))
        node[parts[-1]] = value
    given = frozenset(overrides or {})
    merged = _expand_profile(merged, name)
    sections = {k: _build_section(k, merged[k], source, given) for k in SECTIONS}
    return Config(profile=name, source=source, root=str(path.parent.resolve()), **sections)


def _expand_profile(node: Any, name: str) -> Any:
    """`{profile}` in every text value (the output folders: artifacts/{profile}/embeddings …) replaced by the
    profile's name, so two profiles never write into, or read, each other's outputs."""
    if isinstance(node, str):
        return node.replace(PROFILE_PLACEHOLDER, name)
    if isinstance(node, dict):
        return {k: _expand_profile(v, name) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_profile(v, name) for v in node]
    return node


def parse_override(text: str) -> tuple[str, Any]:
    """`train.steps=5` -> ("train.steps", 5); the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"--set `{text}` must look like section.key=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set `{text}`: the key before `=` must look like section.key")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"--set `{text}`: the value `{value}` is not valid YAML ({problem}); quote it, "
                          "e.g. --set 'train.betas=[0.9, 0.999]'") from None
