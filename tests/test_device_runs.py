"""Device, precision, compiled steps and input workers through the run pipeline, on the CPU: config validation,
the protocol's record of them, `--device` on every command that runs a model, a compiled step equal to the eager
one, and DataLoader workers that change nothing."""

import json
import sys

import numpy as np
import pytest
import torch

from genrec import cli
from genrec.config import EvalConfig, load_config
from genrec.errors import ConfigError
from genrec.models import build_model
from genrec.runs import load_run, make_split, prepare_dataset, train_run
from genrec.runs.retrieval import fit_retrieval
from genrec.training.trainer import FitContext, lr_lambda

TINY = ["model.dim=8", "model.max_len=8", "model.layers=1", "model.dropout=0", "train.batch_size=8"]


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`genrec ARGS` in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["genrec", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda1", "tpu:0"])
def test_a_device_that_is_no_device_name_is_a_one_line_config_error(spec):
    with pytest.raises(ConfigError, match=r"config train\.device: .* is not a device: auto, cpu, cuda") as e:
        load_config("sasrec", [f"train.device={spec}"])
    assert "\n" not in str(e.value)


def test_device_names_are_normalised_and_precision_is_one_of_four():
    assert load_config("sasrec", ["train.device=CUDA:1"]).train.device == "cuda:1"
    assert load_config("sasrec").train.device == "auto" and load_config("sasrec").train.precision == "auto"
    with pytest.raises(ConfigError, match="train.precision"):
        load_config("sasrec", ["train.precision=fp8"])
    with pytest.raises(ConfigError, match="train.workers"):
        load_config("sasrec", ["train.workers=-1"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_on_cuda_without_cuda_fails_before_writing_anything(monkeypatch, capsys, tiny_p5, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "popularity",
        "--dataset",
        str(tiny_p5),
        "--device",
        "cuda",
        "--out",
        str(out),
    )
    assert code == 2 and err.strip().splitlines() == [
        "error: train.device cuda: no CUDA device is available on this machine"
    ]
    assert not out.exists()


def test_inverse_sqrt_schedule_holds_then_decays_as_one_over_root_step():
    f = lr_lambda("inverse_sqrt", warmup=0, total=100, hold=4)
    assert [f(s) for s in range(4)] == [1.0] * 4
    assert f(15) == pytest.approx(0.5) and f(63) == pytest.approx(0.25)
    ramp = lr_lambda("inverse_sqrt", warmup=2, total=100)
    assert ramp(0) == 0.5 and ramp(1) == 1.0 and ramp(7) == pytest.approx(0.5)


def test_a_cpu_run_records_its_device_and_precision_in_the_protocol(tiny_sequences, tmp_path):
    cfg = load_config("sasrec", [*TINY, "train.epochs=1", "train.device=cpu"], str(tiny_sequences))
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    protocol = metrics["protocol"]
    assert protocol["device"] == "cpu" and protocol["precision"] == "fp32"
    assert protocol["device_name"].startswith("cpu (")
    assert metrics["training"]["device"] == "cpu"
    # Keys the protocol had before devices were recorded are all still there.
    assert {"checkpoint_selection", "seed", "data_parallel", "task", "dataset"} <= set(protocol)
    # Re-evaluating keeps how the weights were trained.
    assert load_run(tmp_path / "run").evaluate()["protocol"]["device"] == "cpu"


def tiny_fit(split, **train) -> tuple[list[float], dict]:
    """One epoch of a tiny SASRec through the Trainer: (the losses it recorded, the final weights)."""
    sets = [f"train.{key}={value}" for key, value in train.items()]
    cfg = load_config("sasrec", [*TINY, "train.objective.dtype=float32", "train.epochs=1", *sets])
    torch.manual_seed(0)
    model = build_model(cfg.model, split.n_items, split.n_users)
    summary = fit_retrieval(model, split, FitContext(cfg.train, EvalConfig(ks=[1, 10]), progress=False))
    return [h["loss"] for h in summary["history"]], model.state_dict()


@pytest.fixture(scope="module")
def split(tiny_sequences):
    cfg = load_config("sasrec", [], str(tiny_sequences))
    return make_split(prepare_dataset(cfg.data), cfg.data)


def test_dataloader_workers_give_the_same_training_as_the_training_process(split):
    alone, weights = tiny_fit(split, workers=0)
    workers, weights_w = tiny_fit(split, workers=2)
    assert len(alone) == 1 and np.isfinite(alone[0])
    assert workers == alone
    assert all(torch.equal(weights[k], weights_w[k]) for k in weights)


@pytest.mark.slow  # compiling with inductor takes 20-40 s on 2 cores
def test_a_compiled_trainer_step_equals_the_eager_one_after_three_steps(split):
    assert np.ceil(len(split.train.users) / 8) >= 3  # the epoch has at least three steps
    eager, weights = tiny_fit(split, compile="false")
    compiled, weights_c = tiny_fit(split, compile="true")
    assert compiled == pytest.approx(eager, abs=1e-5)
    for k in weights:
        torch.testing.assert_close(weights_c[k], weights[k], atol=1e-5, rtol=1e-5)


def test_every_command_that_runs_a_model_takes_device(monkeypatch, capsys, tiny_p5, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "sasrec", "--dataset", str(tiny_p5), "--out", str(run),
        *(f"--set={s}" for s in [*TINY, "train.epochs=1"]), "--examples", "0", "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["protocol"]["device"] == "cpu"
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(run), "--no-progress", "--device", "cpu")
    assert code == 0 and "test" in out, err
    code, out, err = run_cli(
        monkeypatch, capsys, "recommend", str(run), "--history", "2,3", "--device", "cpu"
    )
    assert code == 0 and "Item" in out, err
    parquet = tmp_path / "recs.parquet"
    code, _, err = run_cli(
        monkeypatch, capsys, "recommend", str(run), "--all-users", "--out", str(parquet), "--device", "cpu"
    )
    assert code == 0 and parquet.exists(), err

    served = {}

    class NoServer:
        def run(self):
            served["ran"] = True

    def make_server(application, *args):
        served["device"] = application.state.engine.device
        return NoServer()

    monkeypatch.setattr("genrec.serve.server.make_server", make_server)
    code, _, err = run_cli(monkeypatch, capsys, "serve", str(run), "--state", ":memory:", "--device", "cpu")
    assert code == 0 and served == {"device": torch.device("cpu"), "ran": True}, err

    # align and sweep pass --device on as train.device: the config each would train is checked here.
    seen = {}

    def record(cfg, *args, **kwargs):
        seen["align"] = cfg.train.device

    monkeypatch.setattr(cli, "run_config", record)
    code, _, err = run_cli(monkeypatch, capsys, "align", str(run), "--device", "cpu")
    assert code == 0 and seen["align"] == "cpu", err

    def sweep(recipe, grid, out, dataset, overrides, budget, log):
        seen["sweep"] = load_config(recipe, overrides).train.device
        raise ConfigError("stopped after the config")

    monkeypatch.setattr("genrec.experiments.scaling.sweep", sweep)
    code, _, err = run_cli(
        monkeypatch, capsys, "sweep", "sasrec", "--grid", "model.dim=8", "--out", str(tmp_path / "s"),
        "--device", "cpu",
    )  # fmt: skip
    assert code == 2 and seen["sweep"] == "cpu", err
    # A name that is no device is the same one-line error on every command.
    for args in (["evaluate", str(run)], ["serve", str(run)], ["align", str(run)]):
        code, _, err = run_cli(monkeypatch, capsys, *args, "--device", "tpu")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "'tpu'" in err, (args, err)
