"""Import-graph figures and the no-circles check for `make lint` (kept outside the package on purpose).

Counts every import grimp finds, lazy ones inside functions included:
- packages in a loop: the top-level parts of visual_words (a subpackage or a single module) that sit in an import
  cycle with another part, summed over the strongly connected components of the package graph;
- files in circles: the modules that sit in an import cycle with another module;
- modules and lines of the package.

`python tools/import_graph.py` prints the figures; `--check` also exits 1, naming every circle, when any part or
file imports back up a loop (the layers contract in pyproject.toml says which way imports run; this says no loops).
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


def graphs(package: str = PACKAGE) -> tuple[nx.DiGraph, nx.DiGraph]:
    """(module graph, top-level part graph); self-edges dropped."""
    imports = grimp.build_graph(package, cache_dir=None)
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
    parser.add_argument("--check", action="store_true", help="exit 1 when any import loop exists")
    args = parser.parse_args(argv)
    modules, parts = graphs()
    part_loops, file_loops = loops(parts), loops(modules)
    n_files, n_lines = line_count()
    print(f"packages in a loop: {sum(map(len, part_loops))} (in {len(part_loops)} loop(s))")
    print(f"files in circles: {sum(map(len, file_loops))} (in {len(file_loops)} circle(s))")
    print(f"modules: {n_files}; lines: {n_lines}")
    for kind, found in (("package loop", part_loops), ("file circle", file_loops)):
        for members in found:
            print(f"  {kind}: {' <-> '.join(m.removeprefix(PACKAGE + '.') for m in members)}")
    return 1 if args.check and (part_loops or file_loops) else 0


if __name__ == "__main__":
    sys.exit(main())
