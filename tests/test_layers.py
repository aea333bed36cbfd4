"""The package's layers import downwards only, and the README's layout tree lists the package's folders.

Every `import genrec.X` / `from genrec.X import` in every module (top level or inside a function) is an edge
from the importing module's layer to X's layer; an edge to a higher layer fails. No allow-list.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genrec"

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    {"errors", "version", "io", "progress", "runtime"},
    {"llm"},
    {"registry"},
    {"config"},
    {"data"},
    {"nn"},
    {"items"},
    {"decoding"},
    {"models"},
    {"objectives"},
    {"eval"},
    {"training"},
    {"alignment"},
    {"runs"},
    {"inference"},
    {"serve"},
    {"experiments"},
    {"api", "cli", "__main__", "__init__"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def part_of(module: str) -> str:
    """genrec.models.sasrec -> models; genrec -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    here = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "genrec"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "genrec":
                # `from genrec import x` imports the submodule x when there is one
                if name == "genrec":
                    out += [(node.lineno, f"genrec.{a.name}") for a in node.names]
                else:
                    out.append((node.lineno, name))
    return out


def test_every_module_belongs_to_a_declared_layer():
    parts = {
        p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("*.py")
    }
    assert parts - set(LEVEL) == set(), "add the new module or folder to LAYERS"


def test_no_import_goes_up_a_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        source = (
            part_of(module.removesuffix(".__init__"))
            if path.name != "__init__.py" or path.parent != PACKAGE
            else "__init__"
        )
        for line, target in imports(path):
            dest = part_of(target)
            if dest in LEVEL and LEVEL[dest] > LEVEL[source]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target} ({dest})")
    assert not upward, "imports that go up the layer order:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walker is not blind: a function-level import of a higher layer is found."""
    fake = PACKAGE / "data" / "_probe_for_test.py"
    try:
        fake.write_text("def f():\n    from genrec.runs import load_run\n")
        found = imports(fake)
        assert found == [(2, "genrec.runs")] and LEVEL[part_of(found[0][1])] > LEVEL["data"]
    finally:
        fake.unlink()


def test_readme_layout_lists_the_package_folders():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\s+```text\n(.*?)```", readme, re.S)
    assert block, "README needs a ## Layout section with a ```text tree"
    listed = set(re.findall(r"^\s{2}([a-z_]+)/", block.group(1), re.M))
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert listed == folders


def test_import_graph_script_finds_no_cycle(tmp_path):
    """`python -m benchmarks import_graph` (the graph in the docs) agrees with this test: no cycle."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "benchmarks", "import_graph", "--json", str(tmp_path / "graph.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "in a cycle: none" in r.stdout.splitlines()[0], r.stdout + r.stderr


def test_registry_names_config_and_model_classes_lazily_and_configs_import_no_torch():
    """Every built-in model is two "module:Class" strings: its config class under genrec.config.models (torch-free)
    and its model class under genrec.models, whose `config_class` is that config class."""
    import subprocess
    import sys

    from genrec import registry

    for name, (config_path, model_path) in registry.MODELS.builtin.items():
        assert config_path.startswith("genrec.config.models.") and model_path.startswith("genrec.models."), (
            name
        )
        assert config_path.split(":")[0].removeprefix("genrec.config.") == model_path.split(":")[
            0
        ].removeprefix("genrec."), f"{name}: a model's config file mirrors its model file's path"
    code = (
        "import sys, genrec; from genrec import registry\n"
        "for n in registry.names(): registry.config_class(n)\n"
        "genrec.load_config('tiger'); genrec.load_config('din')\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('genrec'))\n"
        "from genrec.cli import app\n"
        "app(['config', 'tiger', '--markdown'], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules\n"
        "for n in registry.names(): assert registry.get(n).config_class is registry.config_class(n), n\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
