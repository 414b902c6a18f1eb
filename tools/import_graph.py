"""Import-graph figures: packages in a loop, files in circles, modules, lines (kept outside the package on purpose).

Counts every import grimp finds, lazy ones inside functions included:
- packages in a loop: the top-level parts of visual_words (a subpackage or a single module) that sit in an import
  cycle with another part, summed over the strongly connected components of the package graph;
- files in circles: the modules that sit in an import cycle with another module;
- modules and lines of the package.

`python tools/import_graph.py` prints the figures and names every loop and circle. The checks that fail the build
are elsewhere: `make lint` (import-linter: the layers contract and no loops between siblings, pyproject.toml) and
tests/test_stages.py (no import circle among files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grimp
import networkx as nx

PACKAGE = "visual_words"


def _top(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def graphs(package: str = PACKAGE, type_checking: bool = False) -> tuple[nx.DiGraph, nx.DiGraph]:
    """(module graph, top-level part graph); self-edges dropped. Imports under `if TYPE_CHECKING:` never run and
    are left out unless `type_checking` (the contracts leave them out too)."""
    imports = grimp.build_graph(package, cache_dir=None, exclude_type_checking_imports=not type_checking)
    modules, parts = nx.DiGraph(), nx.DiGraph()
    for importer in imports.modules:
        modules.add_node(importer)
        parts.add_node(_top(importer))
        for imported in imports.find_modules_directly_imported_by(importer):
            if importer != imported:
                modules.add_edge(importer, imported)
            if _top(importer) != _top(imported):
                parts.add_edge(_top(importer), _top(imported))
    return modules, parts


def loops(graph: nx.DiGraph) -> list[list[str]]:
    """The strongly connected components with more than one member, biggest first."""
    return sorted((sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1), key=len, reverse=True)


def line_count(package: str = PACKAGE) -> tuple[int, int]:
    root = Path(__import__(package).__file__).parent
    files = sorted(root.rglob("*.py"))
    return len(files), sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--type-checking", action="store_true", help="count imports under `if TYPE_CHECKING:`")
    args = parser.parse_args(argv)
    modules, parts = graphs(type_checking=args.type_checking)
    part_loops, file_loops = loops(parts), loops(modules)
    n_files, n_lines = line_count()
    print(f"packages in a loop: {sum(map(len, part_loops))} (in {len(part_loops)} loop(s))")
    print(f"files in circles: {sum(map(len, file_loops))} (in {len(file_loops)} circle(s))")
    print(f"modules: {n_files}; lines: {n_lines}")
    for kind, found in (("package loop", part_loops), ("file circle", file_loops)):
        for members in found:
            print(f"  {kind}: {' <-> '.join(m.removeprefix(PACKAGE + '.') for m in members)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
