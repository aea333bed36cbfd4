import importlib.util
from pathlib import Path

from genrec.config import dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_leaderboard_row_command_carries_the_settings_the_run_differs_in(tmp_path):
    leaderboard = load_script("leaderboard")
    run = tmp_path / "run"
    run.mkdir()
    overrides = ["train.epochs=10", "model.dropout=0.25", "eval.ks=[5,10]"]
    cfg = load_config("tiger-amazon-sports", overrides, "amazon-sports")
    (run / "config.yaml").write_text(dump_config(cfg))
    assert sorted(leaderboard.run_overrides(run, "tiger-amazon-sports", "amazon-sports")) == sorted(overrides)
    # A run of the plain recipe reproduces with the plain command.
    (run / "config.yaml").write_text(dump_config(load_config("tiger-amazon-sports", [], "amazon-sports")))
    assert leaderboard.run_overrides(run, "tiger-amazon-sports", "amazon-sports") == []


def test_optimizer_step_benchmark_prints_each_implementation(monkeypatch, capsys):
    bench = load_script("optimizer_step")
    monkeypatch.setattr(
        "sys.argv",
        [
            "optimizer_step.py",
            "--recipes",
            "sasrec-ml-100k",
            "--steps",
            "3",
            "--repeats",
            "1",
            "--train-steps",
            "2",
        ],
    )
    bench.main()
    rows = [
        line.split(" | ") for line in capsys.readouterr().out.splitlines() if "| sasrec-ml-100k |" in line
    ]
    assert [r[2] for r in rows] == ["loop", "multi_tensor", "fused"]
    diffs = {r[2]: float(r[5].rstrip(" |")) for r in rows}
    assert diffs["loop"] == 0.0 and diffs["multi_tensor"] == 0.0 and diffs["fused"] < 1e-5


def test_allocator_benchmark_compares_both_malloc_settings_in_fresh_processes(monkeypatch, capsys):
    bench = load_script("allocator")
    argv = ["allocator.py", "--recipe", "sasrec-ml-100k", "--rounds", "1", "--train-steps", "2"]
    monkeypatch.setattr("sys.argv", [*argv, "--val-passes", "1"])
    bench.main()
    out = capsys.readouterr().out
    rows = [
        line.split(" | ")
        for line in out.splitlines()
        if line.startswith("| glibc") or line.startswith("| keep")
    ]
    assert [r[0] for r in rows] == ["| glibc defaults", "| keep freed memory"]
    assert rows[0][2] == "1.00x" and rows[0][4] == "1.00x |"
    assert all(float(r[1]) > 0 and float(r[3]) > 0 for r in rows)
    assert out.strip().splitlines()[-1].startswith("speedup validation: ")
