"""Runs: everything that turns a config into a run directory and back (train, evaluate, load), for every task.

`pipeline.train_run` is the one pipeline; tasks (`task.Task`: retrieval, ranking, preference) plug into it. This
layer builds trainers and objectives and writes files; models below it only compute.
"""

from genrec.runs.pipeline import evaluate_run, fit, train_run
from genrec.runs.retrieval import make_split, prepare_dataset
from genrec.runs.run import Run, load_run
from genrec.runs.store import MODEL_FILE
from genrec.runs.task import Task

__all__ = [
    "MODEL_FILE",
    "Run",
    "Task",
    "evaluate_run",
    "fit",
    "load_run",
    "make_split",
    "prepare_dataset",
    "train_run",
]
