"""The package's import graph between its top-level modules and folders, and any import cycle.

    python -m benchmarks import_graph [REPO_ROOT]

Every `import genrec.X` / `from genrec.X import` (top level or inside functions) of every module is an edge from
the importing module's part of the package to X. tests/test_layers.py checks the edges against the layer order.
"""

from __future__ import annotations

import ast
from pathlib import Path

from benchmarks._common import ROOT, Report, parser


def edges(root: Path) -> set[tuple[str, str]]:
    out = set()
    for path in (root / "genrec").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        source = parts[1]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] if node.module != "genrec" else [f"genrec.{a.name}" for a in node.names]
            for name in names:
                target = name.split(".")
                if target[0] == "genrec" and len(target) > 1 and target[1] != source:
                    out.add((source, target[1]))
    return out


def in_cycle(graph: dict[str, set[str]]) -> list[str]:
    def reach(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    return sorted(n for n in graph if n in reach(n))


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("root", nargs="?", type=Path, default=ROOT, help="the repository whose genrec/ is read")
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    found = edges(args.root)
    graph: dict[str, set[str]] = {}
    for a, b in found:
        graph.setdefault(a, set()).add(b)
    nodes = sorted(graph.keys() | {b for _, b in found})
    cycle = in_cycle(graph)
    cycles = ", ".join(cycle) or "none"
    report.line(f"{len(found)} edges between {len(nodes)} modules and folders; in a cycle: {cycles}")
    report.line()
    report.table(["module", "imports"], [(node, ", ".join(sorted(graph[node]))) for node in sorted(graph)])
    report.results = {"edges": sorted(found), "in_cycle": cycle}
    report.save()
