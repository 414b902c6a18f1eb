"""Code versions: which version of the result-defining code made an output (DESIGN D13, docs/reuse.md).

`code_versions.yaml` (beside this module) gives each result-defining piece of code (losses and targets, prompts,
metrics, maps, features) a version and the outputs it defines; every reuse key (visual_words.reuse) and the feature
cache's fingerprint (data/features.py) include the versions of the pieces that define them. A test fails when a
piece's source changes and its recorded fingerprint was not updated (`vw versions`): the author decides whether
results change (bump the version: every output it defines is redone) or not (a refactor: record the fingerprint,
keep the version).

Layer: foundations. It reads only its YAML file (the code it fingerprints is found by name, not imported here), so
data/ and everything above may ask it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

VERSIONS_FILE = "code_versions.yaml"  # beside this module


@functools.cache
def _versions_file() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(resources.files(__package__).joinpath(VERSIONS_FILE).read_text())["pieces"]


def code_versions(output: str, versions: Mapping[str, Mapping] | None = None) -> dict[str, int]:
    """piece -> version of every piece of code that defines `output`."""
    pieces = versions if versions is not None else _versions_file()
    return {name: int(p["version"]) for name, p in sorted(pieces.items()) if output in p["outputs"]}


def _resolve(ref: str) -> Any:
    module, _, qualname = ref.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Module = _strip


def _normalised_source(obj: Any) -> str:
    """The code of a function, class or module without comments, docstrings or formatting (its AST); a constant
    (a prompt template, a threshold) by its repr."""
    if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj) or inspect.ismethod(obj):
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
        return ast.dump(_StripDocstrings().visit(tree), annotate_fields=False, include_attributes=False)
    return repr(obj)


def fingerprint(refs: Sequence[str]) -> str:
    """A digest of the code named by `refs` (`module:qualname`, or `module` for a whole module)."""
    h = hashlib.sha256()
    for ref in refs:
        h.update(ref.encode() + b"\0" + _normalised_source(_resolve(ref)).encode() + b"\0")
    return h.hexdigest()[:16]


def stale_pieces(versions: Mapping[str, Mapping] | None = None) -> list[tuple[str, str, str]]:
    """(piece, recorded fingerprint, current fingerprint) of every piece whose code changed since it was recorded."""
    pieces = versions if versions is not None else _versions_file()
    out = []
    for name, p in sorted(pieces.items()):
        now = fingerprint(p["code"])
        if now != p.get("fingerprint"):
            out.append((name, str(p.get("fingerprint")), now))
    return out


def versions_path() -> Path:
    return Path(__file__).with_name(VERSIONS_FILE)


def record(names: Iterable[str], bump: bool) -> list[str]:
    """Record the current fingerprint of each named piece (and with `bump`, raise its version by one), editing
    code_versions.yaml in place (only those lines change). Returns one line per piece saying what was done."""
    path = versions_path()
    lines = path.read_text().splitlines(keepends=True)
    pieces = yaml.safe_load("".join(lines))["pieces"]
    done = []
    for name in names:
        if name not in pieces:
            raise KeyError(f"{path}: no piece `{name}` (known: {', '.join(sorted(pieces))})")
        now = fingerprint(pieces[name]["code"])
        version = int(pieces[name]["version"]) + (1 if bump else 0)
        start = next(i for i, line in enumerate(lines) if line.startswith(f"  {name}:"))
        end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("    ")), len(lines))
        for i in range(start + 1, end):  # only this piece's two lines change
            if lines[i].startswith("    version:"):
                lines[i] = f"    version: {version}\n"
            elif lines[i].startswith("    fingerprint:"):
                lines[i] = f"    fingerprint: {now}\n"
        done.append(f"{name}: version {version}{' (bumped)' if bump else ''}, fingerprint {now}")
    text = "".join(lines)
    from visual_words.io import write_text

    write_text(path, text)
    _versions_file.cache_clear()
    return done


def feature_version(kind: str, versions: Mapping | None = None) -> dict[str, int]:
    """The code versions of one feature kind (`features.<kind>`), part of the feature cache's fingerprint."""
    found = code_versions(f"features.{kind}", versions)
    if not found:
        raise ValueError(f"{versions_path()}: no piece defines output `features.{kind}`")
    return found
