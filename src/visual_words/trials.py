"""The trial grid: model × dataset × concept × anchor × δ (docs/design.md D10).

A trial id names all five (e.g. ``classification/coco/cup/anchor=dog/delta=0.5``); its seed derives from the id and
the study's root seed, so a trial is reproducible on its own, on any worker, in any order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

from visual_words import registry
from visual_words.tasks import TASKS  # noqa: F401  (the three trained-for roles, in the paper's order)


@dataclass(frozen=True)
class Trial:
    task: str  # generation | detection | classification (the role of the model it is trained in)
    model: str  # registry key of that model
    dataset: str
    concept: str  # concept name (registry/concepts.yaml)
    anchor: str  # anchor word the vectors start from (and the ε-ball's centre)
    delta: float  # relative ε-ball radius; math.inf = unconstrained
    root_seed: int = 0

    @property
    def id(self) -> str:
        d = "inf" if math.isinf(self.delta) else f"{self.delta:g}"
        return f"{self.task}/{self.dataset}/{self.concept}/anchor={self.anchor}/delta={d}"

    @property
    def slug(self) -> str:
        """A file-name-safe form of the id."""
        return self.id.replace("/", "__").replace("=", "-").replace(" ", "_")

    @property
    def seed(self) -> int:
        h = hashlib.sha256(f"{self.root_seed}:{self.id}".encode()).digest()
        return int.from_bytes(h[:4], "little")

    @property
    def token(self) -> str:
        """The placeholder token name written into embedding files, e.g. ``<cup>``."""
        return "<" + self.concept.replace(" ", "_") + ">"

    @property
    def constrained(self) -> bool:
        return not math.isinf(self.delta)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delta"] = "inf" if math.isinf(self.delta) else self.delta
        return d | {"id": self.id, "seed": self.seed}


def grid_of(cfg, task: str) -> dict:
    """The grid of one task: the study's datasets, concept and anchor counts, δs and `unconstrained`, with what
    `study.grid_by_task[task]` overrides (a profile can give the costly SD trials a smaller grid)."""
    s = cfg.study
    base = {"datasets": s.datasets, "concepts_per_dataset": s.concepts_per_dataset,
            "anchors_per_concept": s.anchors_per_concept, "deltas": s.deltas, "unconstrained": s.unconstrained}
    return base | dict(s.grid_by_task.get(task, {}))


def trained_concepts(cfg, task: str, dataset: str) -> list:
    """The registry concepts of `dataset` that `task`'s grid trains words for (none where its grid skips the
    dataset)."""
    g = grid_of(cfg, task)
    return registry.concepts(dataset)[: g["concepts_per_dataset"]] if dataset in g["datasets"] else []


def trial_grid(cfg) -> list[Trial]:
    """All trials of a profile: for each task's model, dataset, concept (first N) and anchor (first M of the
    dataset's anchor list): every δ of the study, plus δ = ∞ when `study.unconstrained` (per task as
    `study.grid_by_task` narrows it). Concepts outside a task's narrowed grid still count as the dataset's classes
    (zero-shot choices, classification negatives, the detection pool): those follow `study.concepts_per_dataset`."""
    s = cfg.study
    out = []
    for task in TASKS:
        model = s.models[task]
        g = grid_of(cfg, task)
        deltas = list(g["deltas"]) + ([math.inf] if g["unconstrained"] else [])
        for ds in g["datasets"]:
            concepts = trained_concepts(cfg, task, ds)
            anchors = registry.anchors(ds)[: g["anchors_per_concept"]]
            for c in concepts:
                for a in anchors:
                    for d in deltas:
                        out.append(Trial(task, model, ds, c.name, a, float(d), s.seed))
    return out


def embedding_path(cfg, trial: Trial):
    """Where a trial's embedding file goes (contract: <train.out_dir>/<task>/<slug>.safetensors)."""
    return cfg.path(cfg.train.out_dir) / trial.task / f"{trial.slug}.safetensors"
