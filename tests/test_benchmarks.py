import argparse
import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import (
    _common,
    allocator,
    decode,
    gpu,
    leaderboard,
    optimizer_step,
    rank_by_item_support,
    speed,
    valid_test_gap,
)
from genrec.config import dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmarks"


def read_report(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_module_is_a_listed_benchmark_of_the_documented_shape_and_none_edits_sys_path():
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    listed = {line.split()[0]: line.split(None, 1)[1] for line in run.stdout.splitlines()[1:] if line.strip()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")}
    assert set(listed) == modules
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        touches = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "path"
            and getattr(node.value, "id", None) == "sys"
        ]
        assert not touches, f"{path.name} uses sys.path (line {touches[0]})"
        if path.stem.startswith("_"):
            continue
        summary = ast.get_docstring(tree).splitlines()[0]
        assert listed[path.stem] == summary and len(summary) <= 120, path.name
        main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
        assert [a.arg for a in main.args.args] == ["argv"], path.name
        # Every benchmark imports: an internal it uses that was renamed fails here, not at its next run.
        importlib.import_module(f"benchmarks.{path.stem}")


def test_an_unknown_benchmark_is_a_one_line_error():
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "no_such"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "error: no benchmark 'no_such'; `python -m benchmarks` lists them"
    ]


def test_alternate_warms_each_call_up_then_times_them_in_turn():
    calls = []
    timed = _common.alternate(
        {"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b")}, 2, warmup=1
    )
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert len(timed["a"].seconds) == 2 and timed["a"].output == 1
    assert timed["b"].best <= timed["b"].median <= timed["b"].total


def test_report_prints_markdown_and_writes_the_table_settings_and_results(tmp_path, capsys):
    path = tmp_path / "out" / "demo.json"
    report = _common.Report("benchmarks.demo", argparse.Namespace(json=path, threads=2, runs=[Path("a")]))
    report.table("model | s/epoch", [["sasrec [x]", "1.5"], ["hstu", 12.25]], title="Speed")
    report.results = {"sasrec": 1.5}
    report.save()
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["Speed", ""]
    assert out[2:] == [
        "| model      | s/epoch |",
        "|------------|---------|",
        "| sasrec [x] | 1.5     |",
        "| hstu       | 12.25   |",
    ]
    data = read_report(path)
    assert data["benchmark"] == "demo" and data["settings"] == {
        "json": str(path),
        "threads": 2,
        "runs": ["a"],
    }
    assert data["tables"] == [
        {
            "title": "Speed",
            "columns": ["model", "s/epoch"],
            "rows": [["sasrec [x]", "1.5"], ["hstu", "12.25"]],
        }
    ]
    assert data["results"] == {"sasrec": 1.5} and data["machine"]["cores"] == os.cpu_count()


def test_fresh_process_returns_the_result_of_a_new_interpreter_and_reports_its_failure():
    facts = _common.fresh_process(_common.cpu_facts)
    assert facts["cores"] == os.cpu_count() and "torch" not in facts  # torch is imported here, not there
    assert _common.fresh_process(_common.recipe_for, "sasrec", check=False) == {"error": "exit 1"}
    with pytest.raises(RuntimeError, match="TypeError"):
        _common.fresh_process(_common.recipe_for, "sasrec")


def test_leaderboard_row_command_carries_the_settings_the_run_differs_in(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    overrides = ["train.epochs=10", "model.dropout=0.25", "eval.ks=[5,10]"]
    cfg = load_config("tiger-amazon-sports", overrides, "amazon-sports")
    (run / "config.yaml").write_text(dump_config(cfg))
    assert sorted(leaderboard.run_overrides(run, "tiger-amazon-sports", "amazon-sports")) == sorted(overrides)
    # A run of the plain recipe reproduces with the plain command.
    (run / "config.yaml").write_text(dump_config(load_config("tiger-amazon-sports", [], "amazon-sports")))
    assert leaderboard.run_overrides(run, "tiger-amazon-sports", "amazon-sports") == []


def test_optimizer_step_benchmark_prints_each_implementation(tmp_path):
    path = tmp_path / "report.json"
    argv = ["--recipes", "sasrec-ml-100k", "--steps", "3", "--repeats", "1", "--train-steps", "2"]
    optimizer_step.main([*argv, "--json", str(path)])
    (table,) = read_report(path)["tables"]
    rows = [dict(zip(table["columns"], row)) for row in table["rows"]]
    assert [r["implementation"] for r in rows] == ["loop", "multi_tensor", "fused"]
    diffs = {r["implementation"]: float(r["max weight diff vs loop"]) for r in rows}
    assert diffs["loop"] == 0.0 and diffs["multi_tensor"] == 0.0 and diffs["fused"] < 1e-5
    assert all(float(r["ms per training step"]) > 0 for r in rows)


def test_allocator_benchmark_alternates_both_malloc_settings_in_fresh_processes(tmp_path, monkeypatch):
    """The parent: each round runs both settings, each in a fresh process without MALLOC_* variables, and the
    table gives medians and ratios to glibc's defaults (the child's figures are faked here; `measure` below)."""
    calls = []

    def fake(function, recipe, keep, train_steps, val_passes, threads, env):
        calls.append(keep)
        assert function is allocator.measure and not any(k.startswith("MALLOC_") for k in env)
        assert (recipe, train_steps, val_passes, threads) == ("sasrec-ml-100k", 2, 1, 2)
        return {"applied": keep, "train_ms": 8.0 if keep else 10.0, "val_s": 1.0 if keep else 2.0}

    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setattr(allocator, "fresh_process", fake)
    path = tmp_path / "report.json"
    allocator.main(["--recipe", "sasrec-ml-100k", "--rounds", "2", "--train-steps", "2", "--val-passes", "1",
                    "--json", str(path)])  # fmt: skip
    assert calls == [False, True, False, True]
    data = read_report(path)
    assert data["tables"][0]["rows"] == [
        ["glibc defaults", "10.0", "1.00x", "2.00", "1.00x"],
        ["keep freed memory", "8.0", "1.25x", "1.00", "2.00x"],
    ]
    assert data["lines"][-1] == "\nspeedup validation: 2.00x train: 1.25x"


def test_allocator_measurement_times_training_steps_and_validation_passes():
    figures = allocator.measure("sasrec-ml-100k", False, 2, 1, 2)
    assert figures["applied"] is False and figures["train_ms"] > 0 and figures["val_s"] > 0


def test_decode_benchmark_decodes_every_synthetic_user(tmp_path):
    path = tmp_path / "report.json"
    decode.main(
        ["--items", "40", "--users", "6", "--beam", "4", "-k", "3", "--batch-size", "4", "--json", str(path)]
    )
    data = read_report(path)
    assert data["results"]["users"] == 6 and data["results"]["items"] == 40
    assert data["tables"][0]["rows"][0][:3] == ["6", "3", "4"]


def test_rank_by_item_support_buckets_add_up_and_pairs_of_one_run_differ_by_zero(tmp_path, tiny_ratings):
    from genrec.runs import train_run

    over = ["model.dim=8", "model.max_len=10", "train.epochs=1", f"data.data_dir={tiny_ratings}"]
    metrics = train_run(load_config("din", over), tmp_path / "run", progress=False)
    run = str(tmp_path / "run")
    rank_by_item_support.main([run, "--bins", "2", "5", "--json", str(tmp_path / "runs.json")])
    (table,) = read_report(tmp_path / "runs.json")["tables"]
    rows = [dict(zip(table["columns"], row)) for row in table["rows"]]
    assert [r["items with"] for r in rows] == ["0-1", "2-4", ">= 5", "all"]
    assert all(int(r["impressions"]) > 0 for r in rows)
    assert sum(int(r["impressions"]) for r in rows[:3]) == int(rows[3]["impressions"])
    assert int(rows[3]["impressions"]) == metrics["test"]["impressions"]
    assert float(rows[3]["AUC"]) == round(metrics["test"]["auc"], 4)
    rank_by_item_support.main(
        ["--pairs", run, run, "--bins", "2", "5", "--json", str(tmp_path / "pairs.json")]
    )
    (table,) = read_report(tmp_path / "pairs.json")["tables"]
    assert table["rows"][-1][0] == "all" and table["rows"][-1][3:] == ["+0.0000 [+0.0000, +0.0000]"] * 3


def test_speed_report_prints_no_share_for_a_precision_the_cpu_cannot_run():
    """The 2026-11-30 AMD report printed a bfloat16 share of 16342% against a bfloat16 peak of ~0."""
    row = {"model": "genrec sasrec", "s_per_epoch": 10.0, "sequences_per_s": 2236.0, "peak_rss_mb": 900.0,
           "achieved_flops": 48e9, "flops_per_epoch": 480e9, "flops_by_dtype": {"float32": 480e9},
           "softmax_dtype": "float32", "adam": "loop"}  # fmt: skip
    amd = {"cpu": "AMD EPYC", "cores": 2, "torch_capability": "AVX2", "flags": ["avx2"], "native_bf16": False,
           "mkldnn": True}  # fmt: skip
    slow_bf16 = {"float32": 144e9, "bfloat16": 0.3e9}
    text = "\n".join(speed.header([row], slow_bf16, amd, 2))
    assert "AMD EPYC" in text and "AVX2" in text and "no bfloat16 share" in text
    (cells,) = speed.rows([row], slow_bf16, amd)
    assert cells[6:8] == ["33%", "(all fp32)"]
    # Emulated bfloat16 FLOPs get no share either; on a native-bf16 CPU the mixed peak is used.
    mixed = {**row, "flops_by_dtype": {"float32": 80e9, "bfloat16": 400e9}, "softmax_dtype": "bfloat16"}
    assert speed.rows([mixed], slow_bf16, amd)[0][6:8] == ["33%", "-"]
    intel = {**amd, "cpu": "Intel Xeon", "native_bf16": True, "flags": ["avx512_bf16"]}
    # Bound: 80e9 / 100e9 + 400e9 / 400e9 = 1.8 s, so the mixed peak is 480e9 / 1.8 = 267 GFLOP/s: 18%.
    assert speed.rows([mixed], {"float32": 100e9, "bfloat16": 400e9}, intel)[0][6:8] == ["48%", "18%"]


def test_valid_test_gap_records_both_splits_per_epoch_and_selects_on_validation(
    tiny_p5, monkeypatch, capsys, tmp_path
):
    bench = valid_test_gap
    out = tmp_path / "gap.json"
    argv = ["--recipe", "sasrec", "--dataset", str(tiny_p5), "--out", str(out)]
    bench.main([*argv, "--set", "train.epochs=3", "--set", "model.dim=16"])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert [e["epoch"] for e in res["epochs"]] == [1, 2, 3]
    best = max(res["epochs"], key=lambda e: e["valid"])  # selection reads validation only
    assert res["selected_epoch"] == best["epoch"] and f"| {best['epoch']} (selected) |" in printed
    shares: dict = {}
    for g in res["groups"]:
        if "valid_share" in g:
            shares.setdefault(g["family"], {})[g["group"]] = (g["valid_share"], g["test_share"])
    for family, members in shares.items():  # each family's groups cover both splits
        for split in (0, 1):
            assert sum(m[split] for m in members.values()) == pytest.approx(1), family
    assert shares["newest history item"]["untrained"][0] == 0  # a validation history is a training sequence
    low, high = res["ratio_interval"]
    assert low <= best["test"] / best["valid"] <= high and 0 <= res["test_without_validation_item"] <= 1
    # Two runs compare on the same examples: a run against itself differs by exactly zero.
    same = bench.compare(out, out)
    assert same["difference"] == 0 and same["interval"] == [0, 0]
    # At chosen epochs: the first and the last validation of one run, each ratio as per-epoch figures give it.
    first_last = bench.compare(out, out, [1, 3])
    ratio = [e["test"] / e["valid"] for e in (res["epochs"][0], res["epochs"][2])]
    assert first_last["ratios"] == pytest.approx(ratio, rel=1e-3)
    with pytest.raises(SystemExit, match="no validated epoch 9"):
        bench.compare(out, out, [1, 9])


def test_gpu_check_says_in_one_line_that_there_is_no_cuda_device():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: python -m benchmarks gpu would run the whole check")
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [gpu.NO_CUDA]
