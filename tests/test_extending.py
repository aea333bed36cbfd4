"""docs/extending.md's examples run as written: an objective, a task and an LLM backend defined outside the
package, registered, and trained through the run pipeline."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def example(section: str) -> str:
    """The Python block of docs/extending.md's `## {section}`."""
    doc = (ROOT / "docs" / "extending.md").read_text()
    part = doc.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", part, re.S).group(1)


def run_example(section: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", example(section)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_new_objective_defined_outside_the_package_trains_through_the_pipeline(tmp_path):
    out = run_example("A new objective", tmp_path)
    assert out.split()[-2] == "ipo"
    metrics = json.loads((tmp_path / "runs" / "sasrec-ipo" / "metrics.json").read_text())
    assert metrics["training"]["objective"] == "ipo" and len(metrics["training"]["history"]) == 2
    assert (
        metrics["protocol"]["alignment"]["objective"] == "ipo" and metrics["protocol"]["task"] == "preference"
    )
    config = (tmp_path / "runs" / "sasrec-ipo" / "config.yaml").read_text()
    assert "name: ipo" in config and "beta: 0.5" in config


def test_a_new_task_defined_outside_the_package_trains_through_the_pipeline(tmp_path):
    out = run_example("A new task", tmp_path)
    assert out.startswith("liked_next histories and targets are the events rated >= 4.0")
    run = tmp_path / "runs" / "liked-next"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["protocol"]["task"] == "liked_next" and "ndcg@10" in metrics["test"]
    assert any("rated >= 4.0" in note for note in metrics["protocol"]["preprocessing"])
    assert json.loads((run / "meta.json").read_text())["task"] == "liked_next"
    # The liked events only: far fewer than ML-100K's 100,000 interactions.
    assert metrics["protocol"]["dataset_stats"]["interactions"] < 60_000


def test_a_new_llm_backend_defined_outside_the_package_drives_llm_tree(tmp_path):
    """The keyword backend leads a lipstick history to the lipstick leaf and a shampoo history to the shampoo leaf;
    without it every child would tie and both lists would start in the same leaf."""
    lipsticks, shampoos = [
        ast.literal_eval(line) for line in run_example("A new LLM backend", tmp_path).splitlines()
    ]
    assert len(lipsticks) == 2 and all(title.endswith("lipstick") for title in lipsticks)
    assert len(shampoos) == 2 and all(title.endswith("shampoo") for title in shampoos)
    run = tmp_path / "runs" / "llm-tree"
    assert "backend: keywords" in (run / "config.yaml").read_text()
    assert "ndcg@10" in json.loads((run / "metrics.json").read_text())["test"]


@pytest.mark.parametrize("section", ["A new objective", "A new task", "A new LLM backend"])
def test_the_examples_touch_no_file_of_the_package(section):
    code = example(section)
    assert "genrec/" not in code and "register" in code
