"""`python -m benchmarks [NAME [ARGS...]]`: list the benchmarks, or run one (the shape of a benchmark:
benchmarks/__init__.py)."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks() -> dict[str, str]:
    """Every benchmark module's name -> the first line of its docstring, read without importing it."""
    out = {}
    for path in sorted(HERE.glob("*.py")):
        if not path.stem.startswith("_"):
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    found = benchmarks()
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, found))
        print("python -m benchmarks NAME [ARGS...]   (NAME --help: its flags)\n")
        for name, summary in found.items():
            print(f"  {name:<{width}}  {summary}")
        return
    name, rest = argv[0], argv[1:]
    if name not in found:
        print(f"error: no benchmark {name!r}; `python -m benchmarks` lists them", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(f"benchmarks.{name}")
    sys.argv = [
        f"python -m benchmarks {name}",
        *rest,
    ]  # a main() that reads sys.argv itself sees its own flags
    module.main()


if __name__ == "__main__":
    main()
