"""The study's three tasks, read from `registry/tasks.yaml`: names, short names, metric, labels, colour, prompt.

    from visual_words.tasks import TASKS, task
    TASKS                      # ("generation", "detection", "classification"), the paper's order
    task("detection").short    # "det";  .label, .metric, .metric_label, .metric_words, .colour, .prompt

Every module that names a task's metric, label, colour or prompt reads it here (CLI choices included).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml


@dataclass(frozen=True)
class Task:
    name: str
    short: str
    label: str
    metric: str
    metric_label: str
    metric_words: str
    colour: str
    prompt: str


_TABLE = {name: Task(name=name, **fields) for name, fields in
          yaml.safe_load(resources.files("visual_words.registry").joinpath("tasks.yaml").read_text()).items()}

TASKS: tuple[str, ...] = tuple(_TABLE)
# The prompts as one constant: what the result-defining code versions (code_versions.yaml) fingerprint.
PROMPTS: dict[str, str] = {name: t.prompt for name, t in _TABLE.items()}


def task(name: str) -> Task:
    if name not in _TABLE:
        raise ValueError(f"unknown task `{name}` (known: {', '.join(TASKS)})")
    return _TABLE[name]


def short(name: str) -> str:
    """`gen` / `det` / `cls`; an unknown name is returned as it is (labels of foreign rows)."""
    return _TABLE[name].short if name in _TABLE else name
