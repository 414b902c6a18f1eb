"""The study's stages, in order: one list that `vw reproduce` runs and dvc.yaml mirrors (a test checks they agree).

Every stage is `<package>/stage.py` with `run(cfg, ...)`; its `vw` command is what DVC runs for it. Library modules
never import a stage module: stages sit on top (commands → stages → libraries).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str  # the DVC stage's name
    module: str  # the module whose run(cfg) is the stage
    command: tuple[str, ...]  # the `vw` command (dvc.yaml's cmd)


STAGES: tuple[Stage, ...] = (
    Stage("prepare", "visual_words.data.stage", ("data", "prepare")),
    Stage("maps", "visual_words.transfer.stage", ("maps",)),
    Stage("train", "visual_words.train.stage", ("sweep",)),
    Stage("evaluate", "visual_words.evaluate.stage", ("evaluate", "run")),
    Stage("analyze", "visual_words.analysis.stage", ("analyze",)),
    Stage("report", "visual_words.report.stage", ("report",)),
)
