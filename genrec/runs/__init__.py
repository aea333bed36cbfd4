"""Runs: everything that turns a config into a run directory and back (train, evaluate, load), for both tasks.

This layer builds trainers and objectives and writes files; models below it only compute.
"""

from genrec.runs.retrieval import make_split, prepare_dataset
from genrec.runs.run import Run, evaluate_run, load_run, train_run
from genrec.runs.store import MODEL_FILE, fit

__all__ = [
    "MODEL_FILE",
    "Run",
    "evaluate_run",
    "fit",
    "load_run",
    "make_split",
    "prepare_dataset",
    "train_run",
]
