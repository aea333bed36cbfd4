"""Scaling laws: a sweep of runs over width, depth, history length and data size, and power-law fits to it.

`sweep(recipe, grid, out)` trains one normal run directory per grid point (`out/NAME`, resumable: finished points
are kept, interrupted ones continue, a folder holding a run of another config or other data is an error), smallest
estimated compute first, within an optional budget; `summarise(out)` reads them back: per point its parameters,
a training-compute estimate, validation loss (mean -log p(target) under the full softmax, nats) and validation /
test N@10; `fit_power_law` fits L(x) = a x^-b + c (Kaplan et al. 2020, https://arxiv.org/abs/2001.08361, with the
irreducible floor c of Hoffmann et al. 2022) by least squares in log space of x, with bootstrap confidence
intervals; `holdout_check` fits the smaller 2/3 of the points and predicts the rest.

Compute estimate (FLOPs): 6 x (non-embedding parameters + attention's L d per layer + the output layer's d x
n_items) per trained position (forward + backward = 3 x the forward's 2 FLOPs per multiply-add), times the
positions of the epochs run. It ignores dropout, norms and the optimiser; it orders runs, it does not time them.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import yaml

from genrec.config import RunConfig, load_config
from genrec.data.provenance import PATH_KEYS, absolute_path, check_same_data, resolve_data_paths
from genrec.data.registry import REGISTRY
from genrec.errors import ConfigError
from genrec.eval.likelihood import mean_negative_log_likelihood
from genrec.io import check_out_dir, read_json, read_yaml, write_bytes, write_json, write_text
from genrec.runs import load_run, make_split, prepare_dataset, train_run

POINTS_FILE = "sweep.json"


def parse_grid(specs: list[str]) -> dict[str, list]:
    """["model.dim=32,64", "model.layers=1,2"] -> {"model.dim": [32, 64], "model.layers": [1, 2]} (values parsed as
    YAML scalars). Raises ConfigError for a spec without `=` or values."""
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not parts:
            raise ConfigError(f"--grid expects key=v1,v2,..., got {spec!r}")
        grid[key.strip()] = [yaml.safe_load(v) for v in parts]
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point: dict) -> str:
    return "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in point.items()) or "base"


def model_size(cfg: RunConfig, n_items: int, n_users: int) -> tuple[int, int]:
    """(all parameters, non-embedding parameters) of the config's model on a catalogue of `n_items`."""
    from genrec.models import build_model

    model = build_model(cfg.model, n_items, n_users)
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if type(m).__name__ == "Embedding")
    return total, total - embedding


def compute_flops(non_embedding: int, cfg: RunConfig, n_items: int, positions: int) -> float:
    """Training FLOPs estimate (see the module docstring); `positions`: trained positions over all epochs."""
    m = cfg.model
    dim, layers, length = getattr(m, "dim", 0), getattr(m, "layers", 0), getattr(m, "max_len", 0)
    return 6.0 * (non_embedding + layers * length * dim + dim * n_items) * positions


def sweep(
    recipe: str,
    grid: dict[str, list],
    out: Path,
    dataset: str | None = None,
    overrides: list[str] | None = None,
    budget_minutes: float | None = None,
    log=print,
) -> list[dict]:
    """Train every grid point of `recipe` (plus `overrides`) into `out/NAME`; returns the points' records (name,
    overrides, status, data fingerprint). With a budget, points run smallest first and each gets
    `train.max_minutes` = what is left divided by the points left; points that do not start within the budget
    are recorded as `skipped`. A finished point is kept and an interrupted one continues (with the time cap it
    started with) only when its folder holds the same config and data (`check_point`)."""
    out = Path(out)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    base = list(overrides or [])
    points = []
    for point in grid_points(grid):
        over = base + [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in point.items()]
        cfg = load_config(recipe, over, dataset)  # every point's config is checked before anything trains
        points.append({"name": point_name(point), "point": point, "overrides": over, "cfg": cfg})
    sizes, prints = {}, {}
    for p in points:  # order by parameters x length, a proxy of compute known before training
        key = (p["cfg"].model.model_dump_json(), p["cfg"].data.model_dump_json())
        if key not in sizes:
            ds = prepare_dataset(p["cfg"].data)
            split = make_split(ds, p["cfg"].data)
            sizes[key] = model_size(p["cfg"], split.n_items, split.n_users)[0] * getattr(
                p["cfg"].model, "max_len", 1
            )
            prints[key[1]] = ds.fingerprint()
        p["order"], p["data"] = sizes[key], prints[key[1]]
    # Every point's folder is checked before anything trains.
    caps = {p["name"]: check_point(out / p["name"], p["cfg"], p["data"]) for p in points}
    points.sort(key=lambda p: p["order"])
    t0 = time.perf_counter()
    records = []
    for i, p in enumerate(points):
        run_dir = out / p["name"]
        record = {"name": p["name"], "point": p["point"], "overrides": p["overrides"], "data": p["data"]}
        left = None if budget_minutes is None else budget_minutes - (time.perf_counter() - t0) / 60
        resume = (run_dir / "config.yaml").exists()
        if (run_dir / "metrics.json").exists():
            record["status"] = "done"
        elif left is not None and left <= 0:
            record["status"] = "skipped"
        else:
            over = p["overrides"]
            if resume:  # the interrupted point's own cap: --resume needs the config it started with
                over = over + [f"train.max_minutes={json.dumps(caps[p['name']])}"]
            elif left is not None:
                over = over + [f"train.max_minutes={left / (len(points) - i):.3f}"]
            cfg = load_config(recipe, over, dataset)
            log(f"[{i + 1}/{len(points)}] {p['name']}")
            train_run(cfg, run_dir, resume=resume, progress=False)
            record["status"] = "done"
        records.append(record)
        write_json(out / POINTS_FILE, {"recipe": recipe, "dataset": dataset, "grid": grid, "points": records})
    return records


def check_point(run_dir: Path, cfg: RunConfig, fingerprint: str) -> float | None:
    """The time cap (`train.max_minutes`) of the run already in `run_dir`, after checking that it is a run of
    `cfg` (the cap aside: a budget share is not part of a point's identity) on data of `fingerprint`; None when
    the folder holds no run. Raises ConfigError / DataError (one line) naming the first difference."""
    if not (run_dir / "config.yaml").exists():
        return None
    stored = read_yaml(run_dir / "config.yaml")
    if not isinstance(stored, dict):
        raise ConfigError(f"{run_dir}/config.yaml is damaged: it holds no config; sweep into another --out")
    wanted = cfg.model_copy(update={"data": resolve_data_paths(cfg.data)}).model_dump(mode="json")
    stored_flat, wanted_flat = _flat(stored), _flat(wanted)
    cap = stored_flat.pop("train.max_minutes", None)
    wanted_flat.pop("train.max_minutes", None)
    for key in sorted(stored_flat.keys() | wanted_flat.keys()):
        if stored_flat.get(key) != wanted_flat.get(key):
            raise ConfigError(
                f"{run_dir} holds a run of another config ({key}: {stored_flat.get(key)!r} there, "
                f"{wanted_flat.get(key)!r} now); sweep into another --out"
            )
    if (run_dir / "meta.json").exists():
        check_same_data(
            read_json(run_dir / "meta.json").get("data"),
            fingerprint,
            str(run_dir),
            "sweep into another --out",
        )
    return cap


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; data paths made absolute (a point written before they were stored so)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            is_path = name.startswith("data.") and name[5:] in PATH_KEYS and isinstance(value, str)
            out[name] = absolute_path(value) if is_path and value not in REGISTRY else value
    return out


def summarise(out: Path) -> list[dict]:
    """One row per finished point of a sweep directory: its grid values, params, non-embedding params, FLOPs,
    epochs, validation loss, valid / test N@10."""
    out = Path(out)
    meta = json.loads((out / POINTS_FILE).read_text())
    rows, splits = [], {}
    for rec in meta["points"]:
        run_dir = out / rec["name"]
        if not (run_dir / "metrics.json").exists():
            continue
        run = load_run(run_dir)
        metrics = run.metrics
        data_key = run.cfg.data.model_dump_json()
        if data_key not in splits:
            ds = prepare_dataset(run.cfg.data)
            splits[data_key] = make_split(
                ds, run.cfg.data, run.items["item_id"].to_numpy(), run.users["user_id"].to_numpy()
            )
        split = splits[data_key]
        total, non_emb = model_size(run.cfg, split.n_items, split.n_users)
        length = getattr(run.cfg.model, "max_len", None) or int(split.train.lengths().max())
        positions = int(np.maximum(np.minimum(split.train.lengths() - 1, length), 0).sum())
        epochs = metrics.get("training", {}).get("epochs_run", 1)
        row = {
            "name": rec["name"],
            **rec["point"],
            "params": total,
            "non_embedding_params": non_emb,
            "flops": compute_flops(non_emb, run.cfg, split.n_items, positions * epochs),
            "epochs": epochs,
            "valid_loss": mean_negative_log_likelihood(run.model, split.valid),
            "valid_ndcg@10": metrics["valid"].get("ndcg@10"),
            "test_ndcg@10": metrics["test"].get("ndcg@10"),
            "train_seconds": metrics.get("training", {}).get("train_seconds"),
        }
        rows.append(row)
    return rows


def power_law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * np.power(x, -b) + c


def fit_power_law(x, y, bootstrap: int = 200, seed: int = 0) -> dict:
    """Fit y = a x^-b + c (b >= 0, a >= 0; x > 0) and bootstrap 95% intervals of a, b, c (resampling points).
    x is divided by its smallest value for conditioning; a is reported on the original scale. Needs >= 3 points.
    Raises ConfigError otherwise."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or (x <= 0).any():
        raise ConfigError("a power law with a floor needs at least 3 points with x > 0")
    scale = x.min()

    def one(xs, ys):
        import warnings

        from scipy.optimize import OptimizeWarning, curve_fit

        warnings.simplefilter(
            "ignore", OptimizeWarning
        )  # a CI is reported by the bootstrap, not the covariance

        xn = xs / scale
        floor0 = max(ys.min() - 0.1 * (np.ptp(ys) + 1e-9), 0.0)
        best = None
        for b0 in (0.1, 0.5, 1.0):
            try:
                p, _ = curve_fit(
                    power_law, xn, ys, p0=[max(ys.max() - floor0, 1e-6), b0, floor0],
                    bounds=([0, 0, -np.inf], [np.inf, 5, np.inf]), maxfev=20_000,
                )  # fmt: skip
            except (RuntimeError, ValueError):
                continue
            err = float(((power_law(xn, *p) - ys) ** 2).sum())
            if best is None or err < best[0]:
                best = (err, p)
        if best is None:
            return None
        a, b, c = best[1]
        return a * scale**b, b, c  # a on the original x scale

    params = one(x, y)
    if params is None:
        raise ConfigError("the power-law fit did not converge")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(x), len(x))
        if len(np.unique(x[pick])) < 3:
            continue
        p = one(x[pick], y[pick])
        if p is not None:
            draws.append(p)
    draws = np.array(draws) if draws else np.empty((0, 3))
    ci = {
        name: [float(np.percentile(draws[:, i], 2.5)), float(np.percentile(draws[:, i], 97.5))]
        if len(draws)
        else None
        for i, name in enumerate("abc")
    }
    a, b, c = params
    return {"a": float(a), "b": float(b), "c": float(c), "ci95": ci, "bootstrap": len(draws), "n": len(x)}


def predict(fit: dict, x) -> np.ndarray:
    return power_law(np.asarray(x, dtype=np.float64), fit["a"], fit["b"], fit["c"])


def holdout_check(rows: list[dict], x_key: str, y_key: str, share: float = 2 / 3) -> dict:
    """Fit on the rows with the smallest `share` of x, predict the others' y: the largest relative error."""
    rows = sorted(rows, key=lambda r: r[x_key])
    cut = max(3, int(math.ceil(len(rows) * share)))
    if cut >= len(rows):
        raise ConfigError(f"holdout needs more than {cut} points, the sweep has {len(rows)}")
    fit = fit_power_law([r[x_key] for r in rows[:cut]], [r[y_key] for r in rows[:cut]], bootstrap=0)
    held = rows[cut:]
    pred = predict(fit, [r[x_key] for r in held])
    errors = [abs(p - r[y_key]) / abs(r[y_key]) for p, r in zip(pred, held)]
    return {
        "x": x_key,
        "y": y_key,
        "fitted_on": [r["name"] for r in rows[:cut]],
        "predicted": [
            {"name": r["name"], "actual": r[y_key], "predicted": float(p), "rel_error": float(e)}
            for r, p, e in zip(held, pred, errors)
        ],
        "max_rel_error": float(max(errors)),
    }


TARGETS = {"valid_loss": "validation loss (nats)", "error@10": "1 - validation N@10"}
AXES = {"params": "parameters", "flops": "training FLOPs (estimate)"}


def analyse(out: Path, bootstrap: int = 200, plots: bool = True) -> dict:
    """Summarise a sweep directory, fit every (target, axis) pair, check the 2/3 holdout on validation loss, write
    summary.csv, summary.json, fits.json and (with matplotlib) one PNG per axis; returns fits.json's content."""
    out = Path(out)
    rows = summarise(out)
    if not rows:
        raise ConfigError(f"{out}: no finished sweep points")
    for r in rows:
        r["error@10"] = 1.0 - r["valid_ndcg@10"]
    write_json(out / "summary.json", rows)
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join(_cell(r.get(k)) for k in keys) for r in rows]
    write_text(out / "summary.csv", "\n".join(lines) + "\n")
    fits: dict = {}
    for y_key in TARGETS:
        for x_key in AXES:
            try:
                fits[f"{y_key}~{x_key}"] = fit_power_law(
                    [r[x_key] for r in rows], [r[y_key] for r in rows], bootstrap
                )
            except ConfigError as e:
                fits[f"{y_key}~{x_key}"] = {"error": str(e)}
    checks = {}
    for x_key in AXES:
        try:
            checks[x_key] = holdout_check(rows, x_key, "valid_loss")
        except ConfigError as e:
            checks[x_key] = {"error": str(e)}
    result = {"fits": fits, "holdout": checks, "points": len(rows)}
    write_json(out / "fits.json", result)
    if plots:
        result["plots"] = [str(p) for p in plot(out, rows, fits)]
    return result


def _cell(v) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def plot(out: Path, rows: list[dict], fits: dict) -> list[Path]:
    """scaling_{params,flops}.png: validation loss and 1 - N@10 against the axis, log x, with the fitted curves."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for x_key, x_label in AXES.items():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for ax, (y_key, y_label) in zip(axes, TARGETS.items()):
            x = np.array([r[x_key] for r in rows], dtype=float)
            y = np.array([r[y_key] for r in rows], dtype=float)
            ax.scatter(x, y, s=18)
            fit = fits.get(f"{y_key}~{x_key}", {})
            if "a" in fit:
                grid = np.geomspace(x.min(), x.max() * 2, 100)
                ax.plot(grid, predict(fit, grid), lw=1)
                ax.set_title(f"{fit['a']:.3g} x^-{fit['b']:.3f} + {fit['c']:.3f}", fontsize=9)
            ax.set_xscale("log")
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
        fig.tight_layout()
        path = out / f"scaling_{x_key}.png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        write_bytes(path, buf.getvalue())
        plt.close(fig)
        paths.append(path)
    return paths
