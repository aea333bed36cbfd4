"""The README and docs/extending.md say what the code does: every registered model has a row in the README's models
table, extending.md names every layer of tests/test_layers.py and every capability of genrec/models/base.py, and
the README's sentence on what `recommend`, `evaluate` and `serve` read besides the run directory holds."""

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPEATS_CSV
from fastapi.testclient import TestClient
from test_layers import LAYERS

from genrec.config import load_config
from genrec.errors import DataError
from genrec.registry import MODELS
from genrec.runs import evaluate_run, load_run, train_run
from genrec.serve import create_app

ROOT = Path(__file__).resolve().parents[1]


def section(path: Path, title: str) -> str:
    """The text of `path`'s `## {title}` section."""
    return path.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_models_table_has_a_row_for_every_registered_model():
    rows = [line for line in section(ROOT / "README.md", "Models").splitlines() if line.startswith("| `")]
    listed = {re.match(r"\| `([^`]+)`", row).group(1) for row in rows}
    # The built-in table, not names(): a model that another test registered is not the package's.
    registered = set(MODELS.builtin)
    assert registered - listed == set(), "registered models without a row in README.md's models table"
    assert listed - registered == set(), "rows of README.md's models table that name no registered model"


def test_extending_names_every_layer_in_order():
    """extending.md's diagram lists the layers lowest first, `<-` between them, as tests/test_layers.py does (the
    package's entry modules `__init__` and `__main__` aside)."""
    text = section(ROOT / "docs" / "extending.md", "The layers")
    diagram = re.search(r"```text\n(.*?)```", text, re.S).group(1)
    drawn = [{name.strip() for name in group.split(",")} for group in " ".join(diagram.split()).split("<-")]
    assert drawn == [layer - {"__init__", "__main__"} for layer in LAYERS]


def test_extending_lists_every_capability_of_the_model_base():
    import genrec.models.base as base

    declared = set(re.findall(r"^- `(\w+)`:", base.__doc__, re.M))
    table = section(ROOT / "docs" / "extending.md", "Capabilities")
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert len(declared) >= 9 and documented == declared


def test_what_recommend_evaluate_and_serve_read_besides_the_run_directory(tmp_path, tiny_ratings):
    """README: a retrieval run recommends and serves from its directory alone; `evaluate` re-reads the dataset;
    a ranking run reads its dataset to load at all."""
    data = tmp_path / "data" / "inter.csv"
    data.parent.mkdir()
    data.write_text(REPEATS_CSV)
    train_run(load_config("popularity", [], dataset=str(data)), tmp_path / "run", progress=False)
    shutil.rmtree(data.parent)
    run = load_run(tmp_path / "run")
    assert run.recommend(history=[1], k=2).height == 2
    served = TestClient(create_app(tmp_path / "run")).post("/recommend", json={"history": [1], "k": 2})
    assert served.status_code == 200 and len(served.json()["items"]) == 2
    with pytest.raises(DataError, match="unknown dataset .*inter.csv"):
        evaluate_run(run, progress=False)

    ratings = tmp_path / "ratings"
    shutil.copytree(tiny_ratings, ratings)
    over = ["model.dim=8", "model.max_len=10", "train.epochs=1", f"data.data_dir={ratings}"]
    train_run(load_config("din", over), tmp_path / "ranker", progress=False)
    assert "auc" in evaluate_run(load_run(tmp_path / "ranker"), progress=False)["test"]
    shutil.rmtree(ratings)  # `ml-100k` is now the bundled copy: other data, refused
    with pytest.raises(DataError, match="not the data it was made from"):
        load_run(tmp_path / "ranker")
