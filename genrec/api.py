"""The Python API: train, load and query runs without the command line.

    import genrec
    run = genrec.train("sasrec", dataset="ml-100k", overrides={"train.epochs": 3}, out="runs/api-demo")
    run.metrics["test"]["ndcg@10"]; run.recommend(user="1", k=5); genrec.load_run("runs/api-demo")

Everything here is a thin layer over `genrec.runs`: the same run directories as `genrec train` writes.
"""

from __future__ import annotations

from pathlib import Path

from genrec.config import load_config
from genrec.data.loaders import dataset_from_frame
from genrec.errors import ConfigError
from genrec.runs import Run, load_run, train_run
from genrec.runs.store import INPUT_FILE, default_run_dir

__all__ = ["Run", "load_config", "load_run", "train"]


def train(
    recipe: str,
    dataset: str | None = None,
    overrides: dict | list[str] | None = None,
    out: str | Path | None = None,
    data=None,
    resume: bool = False,
    progress: bool = False,
) -> Run:
    """Train a recipe and return the finished `Run` (its metrics in `run.metrics`).

    `dataset`: a registered name, a folder or a CSV/Parquet file; or `data`: a pandas or Polars DataFrame with
    `user_id`, `item_id` and optional `timestamp` / `rating` columns, kept in the run directory as
    `data.parquet` so the run can be evaluated again. `out`: the run directory (default
    runs/RECIPE-DATASET-TIME). Raises ConfigError / DataError (one line) on bad input.
    """
    if data is not None and dataset is not None:
        raise ConfigError("give dataset or data, not both")
    out = (
        Path(out)
        if out is not None
        else default_run_dir(recipe, "dataframe" if data is not None else dataset or "default")
    )
    if data is not None:
        frame = dataset_from_frame(data).interactions  # validated and in canonical columns
        out.mkdir(parents=True, exist_ok=True)
        frame.drop("position").write_parquet(out / INPUT_FILE)
        dataset = str((out / INPUT_FILE).resolve())
    cfg = load_config(recipe, overrides, dataset)
    train_run(cfg, out, resume=resume, progress=progress)
    return load_run(out)
