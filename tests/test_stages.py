"""The stages have one convention (`<package>/stage.py: run(cfg)`), one ordered list (visual_words.stages) that
dvc.yaml agrees with, sit on top of the libraries (no library imports a stage), and the package has no import
circles."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import yaml

from visual_words.stages import STAGES

SRC = Path(__file__).resolve().parents[1] / "src"


def test_dvc_yaml_runs_the_same_stages_in_the_same_order_with_the_same_commands(repo_root):
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == [s.name for s in STAGES]
    for s in STAGES:
        cmd = dvc[s.name]["cmd"].split()
        assert cmd[0] == "vw" and tuple(cmd[1:1 + len(s.command)]) == s.command, s.name
        assert all(a.startswith("--") for a in cmd[1 + len(s.command):]), s.name  # only quiet/progress flags


def test_every_stage_is_a_stage_module_with_run():
    for s in STAGES:
        assert s.module.endswith(".stage"), s.module
        assert callable(importlib.import_module(s.module).run), s.module


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "visual_words").rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(path: Path, known) -> set[str]:
    """visual_words modules `path` imports (at module level or inside functions; `if TYPE_CHECKING:` blocks are
    annotations only and do not count)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
            for b in node.body for n in ast.walk(b)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found & known


def test_no_library_module_imports_a_stage():
    mods = _modules()
    stage_modules = {s.module for s in STAGES}
    allowed = lambda m: m.startswith("visual_words.commands") or m in stage_modules or m == "visual_words.stages"  # noqa: E731
    offenders = {m: sorted(_imports(p, set(mods)) & stage_modules) for m, p in mods.items() if not allowed(m)}
    assert {m: s for m, s in offenders.items() if s} == {}


def test_no_import_circles():
    mods = _modules()
    graph = {m: _imports(p, set(mods)) - {m} for m, p in mods.items()}
    cycles, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []
