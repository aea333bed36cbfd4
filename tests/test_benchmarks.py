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


def test_rank_by_item_support_buckets_add_up_and_pairs_of_one_run_differ_by_zero(
    tmp_path, monkeypatch, capsys
):
    from genrec.config import load_config as load_rank_config
    from genrec.runs import train_run as rank_train

    cfg = load_rank_config(
        "din", ["model.dim=8", "model.max_len=10", "train.epochs=1", "train.batch_size=256"]
    )
    metrics = rank_train(cfg, tmp_path / "run", progress=False)
    bench = load_script("rank_by_item_support")
    run = str(tmp_path / "run")
    monkeypatch.setattr("sys.argv", ["rank_by_item_support.py", run])
    bench.main()
    rows = [
        line.split(" | ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| run | ") and "items with" not in line
    ]
    assert [r[1] for r in rows] == ["0-19", "20-99", ">= 100", "all"]
    assert sum(int(r[2]) for r in rows[:3]) == int(rows[3][2]) == metrics["test"]["impressions"]
    assert float(rows[3][4]) == round(metrics["test"]["auc"], 4)
    monkeypatch.setattr("sys.argv", ["rank_by_item_support.py", "--pairs", run, run])
    bench.main()
    diffs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| all |")]
    assert diffs and diffs[0].count("+0.0000 [+0.0000, +0.0000]") == 3


def test_speed_report_prints_no_share_for_a_precision_the_cpu_cannot_run():
    """The 2026-11-30 AMD report printed a bfloat16 share of 16342% against a bfloat16 peak of ~0."""
    speed = load_script("speed")
    row = {"model": "genrec sasrec", "s_per_epoch": 10.0, "sequences_per_s": 2236.0, "peak_rss_mb": 900.0,
           "achieved_flops": 48e9, "flops_per_epoch": 480e9, "flops_by_dtype": {"float32": 480e9},
           "softmax_dtype": "float32", "adam": "loop"}  # fmt: skip
    amd = {"cpu": "AMD EPYC", "cores": 2, "torch_capability": "AVX2", "flags": ["avx2"], "native_bf16": False,
           "mkldnn": True}  # fmt: skip
    lines = speed.report([row], {"float32": 144e9, "bfloat16": 0.3e9}, amd, 2)
    text = "\n".join(lines)
    assert "AMD EPYC" in text and "AVX2" in text and "no bfloat16 share" in text
    table = next(line for line in lines if line.startswith("| genrec sasrec"))
    assert "| 33% | (all fp32) |" in table and "16000%" not in text
    # Emulated bfloat16 FLOPs get no share either; on a native-bf16 CPU the mixed peak is used.
    mixed = {**row, "flops_by_dtype": {"float32": 80e9, "bfloat16": 400e9}, "softmax_dtype": "bfloat16"}
    assert "| 33% | - |" in speed.report([mixed], {"float32": 144e9, "bfloat16": 0.3e9}, amd, 2)[-2]
    intel = {**amd, "cpu": "Intel Xeon", "native_bf16": True, "flags": ["avx512_bf16"]}
    line = speed.report([mixed], {"float32": 100e9, "bfloat16": 400e9}, intel, 2)[-2]
    # Bound: 80e9 / 100e9 + 400e9 / 400e9 = 1.8 s, so the mixed peak is 480e9 / 1.8 = 267 GFLOP/s: 18%.
    assert "| 48% | 18% |" in line, line


def test_gpu_check_says_in_one_line_that_there_is_no_cuda_device():
    import subprocess
    import sys

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: benchmarks/gpu.py would run the whole check")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["benchmarks/gpu.py: no CUDA device is available on this machine"]
