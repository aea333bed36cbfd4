"""Scaling-law harness: grid parsing, the power-law fit with a floor, the holdout check, a tiny sweep end to end."""

import json

import numpy as np
import pytest
from conftest import write_p5
from typer.testing import CliRunner

from genrec.cli import app
from genrec.errors import ConfigError
from genrec.experiments import scaling


def test_parse_grid_and_points():
    grid = scaling.parse_grid(["model.dim=16,32", "model.layers=1,2,3", "data.sample_users=0.5"])
    assert grid == {"model.dim": [16, 32], "model.layers": [1, 2, 3], "data.sample_users": [0.5]}
    points = scaling.grid_points(grid)
    assert len(points) == 6 and scaling.point_name(points[0]) == "dim16-layers1-sample_users0.5"
    for bad in ("model.dim", "model.dim=", "=1,2"):
        with pytest.raises(ConfigError, match="--grid"):
            scaling.parse_grid([bad])


def test_power_law_fit_recovers_known_parameters_with_intervals():
    x = np.geomspace(1e4, 1e7, 9)
    y = 30.0 * x**-0.3 + 2.0
    y_noisy = y * (1 + np.random.default_rng(0).normal(0, 0.002, len(x)))
    fit = scaling.fit_power_law(x, y_noisy, bootstrap=50)
    assert fit["b"] == pytest.approx(0.3, rel=0.15) and fit["c"] == pytest.approx(2.0, abs=0.1)
    lo, hi = fit["ci95"]["b"]
    assert lo <= fit["b"] <= hi and fit["bootstrap"] > 30
    check = scaling.holdout_check(
        [{"name": str(i), "x": a, "y": b} for i, (a, b) in enumerate(zip(x, y))], "x", "y"
    )
    assert len(check["fitted_on"]) == 6 and check["max_rel_error"] < 1e-3
    with pytest.raises(ConfigError, match="at least 3"):
        scaling.fit_power_law([1, 2], [3, 4])


def test_sweep_trains_each_point_and_writes_fits_and_plots(tmp_path):
    rows = [[u] + [(u * 3 + j) % 25 + 1 for j in range(6 + u % 5)] for u in range(1, 61)]
    data = write_p5(tmp_path / "tiny", rows)
    out = tmp_path / "sweep"
    r = CliRunner().invoke(
        app,
        ["sweep", "sasrec", "--dataset", str(data), "--grid", "model.dim=8,16,24,32", "--out", str(out),
         "--set", "train.epochs=1", "--set", "model.max_len=8", "--bootstrap", "5"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in sorted(summary, key=lambda s: s["params"])] == [
        "dim8",
        "dim16",
        "dim24",
        "dim32",
    ]
    assert all(s["valid_loss"] > 0 and s["flops"] > 0 for s in summary)
    fits = json.loads((out / "fits.json").read_text())
    assert "valid_loss~params" in fits["fits"] and "max_rel_error" in fits["holdout"]["params"]
    assert (out / "summary.csv").read_text().startswith("name,")
    assert (out / "scaling_params.png").stat().st_size > 1000
    assert (out / "dim8" / "metrics.json").exists()  # each point is a normal run directory
    # A second call keeps the finished points and only refits.
    again = CliRunner().invoke(app, ["sweep", "sasrec", "--out", str(out), "--fit-only", "--bootstrap", "0"])
    assert again.exit_code == 0 and "holdout" in again.output
