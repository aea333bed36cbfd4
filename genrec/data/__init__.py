"""Data layer: canonical schema, loaders, registry of named datasets, filters, splits, batching."""

from genrec.data.batching import HistoryBatch, history_batch, pad_left
from genrec.data.ids import IdMap
from genrec.data.loaders import dataset_from_frame
from genrec.data.registry import REGISTRY, load_dataset
from genrec.data.schema import Dataset, Sequences
from genrec.data.split import Csr, EvalSet, Split, leave_one_out, temporal

__all__ = [
    "REGISTRY", "Csr", "Dataset", "EvalSet", "HistoryBatch", "IdMap", "Sequences", "Split",
    "dataset_from_frame", "history_batch", "leave_one_out", "load_dataset", "pad_left", "temporal",
]  # fmt: skip
