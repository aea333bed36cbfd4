"""The protocol record (`metrics.json["protocol"]`): what a run's numbers depend on, built in one place.

Four parts, from four sources:
- the data's (`DataPart`, from the task's data): dataset, its statistics, preprocessing notes, the split;
- the evaluator's (the task's `eval_protocol`): candidates, conventions, ties, metrics;
- the trainer's (`TrainingPart`, from the training summary): checkpoint selection, how training stopped, the
  seed, data parallelism;
- the task's own entries (`own_protocol`: ranking's history window, preference alignment's reference run).
A data fingerprint belongs to the data part, the device and numeric precision to the training part.

metrics.json holds the record flat (`Protocol.to_json`): every key at the top of `protocol`, as runs have
always written it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from genrec.eval.evaluator import code_version
from genrec.runs.task import Task
from genrec.training import distributed
from genrec.training.trainer import stop_note


@dataclass(frozen=True)
class DataPart:
    dataset: str
    dataset_stats: dict
    preprocessing: list[str]
    split: dict
    data_fingerprint: str | None = None  # content hash of the events and id tables (`Dataset.fingerprint`)


@dataclass(frozen=True)
class TrainingPart:
    checkpoint_selection: str
    seed: int
    data_parallel: dict
    training_stop: str | None = None  # what ended training (absent for models fitted in closed form)
    device: str | None = None  # where it trained (`cuda:0`), its name and the autocast precision (`bf16`);
    device_name: str | None = None  # absent in runs written before devices were recorded
    precision: str | None = None

    @classmethod
    def stored(cls, protocol: dict) -> TrainingPart | None:
        """The training part of a stored protocol (None when it has none)."""
        if "checkpoint_selection" not in protocol:
            return None
        keys = [f.name for f in fields(cls)]
        return cls(**{k: protocol[k] for k in keys if k in protocol})


@dataclass(frozen=True)
class Protocol:
    task: str
    data: DataPart
    evaluation: dict
    training: TrainingPart
    own: dict = field(default_factory=dict)
    code_version: str = ""

    def to_json(self) -> dict:
        training = {k: v for k, v in asdict(self.training).items() if v is not None}
        return {
            "task": self.task,
            **{k: v for k, v in asdict(self.data).items() if v is not None},
            **self.evaluation,
            **self.own,
            **training,
            "code_version": self.code_version,
        }


def build_protocol(task: Task, data, model, summary: dict) -> Protocol:
    """The protocol of `model` trained by `task` on `data`; `summary` is the training summary."""
    train = task.cfg.train
    return Protocol(
        task=task.name,
        data=DataPart(
            **task.data_protocol(data),
            data_fingerprint=None if task.dataset is None else task.dataset.fingerprint(),
        ),
        evaluation=task.eval_protocol(data, model),
        training=TrainingPart(
            checkpoint_selection=task.checkpoint_selection(model) + stop_note(summary),
            seed=train.seed,
            data_parallel=summary.get("data_parallel") or distributed.protocol(train.batch_size),
            training_stop=summary.get("stop"),
            device=summary.get("device"),
            device_name=summary.get("device_name"),
            precision=summary.get("precision"),
        ),
        own={**task.own_protocol(data, model), **_item_tokens(summary)},
        code_version=code_version(),
    )


def _item_tokens(summary: dict) -> dict:
    """A semantic-ID model's `semantic_ids`: what its codes were made from (encoder, input, tokenizer)."""
    made_from = (summary.get("semantic_ids") or {}).get("item_vectors")
    return {"semantic_ids": made_from} if made_from else {}


def reevaluated(protocol: Protocol, stored: dict) -> dict:
    """The protocol of a re-evaluation: data and evaluation as evaluated now; how the weights were trained as the
    run's stored protocol says (re-evaluating changes neither), with any stored entry the rebuilt one lacks kept."""
    training = TrainingPart.stored(stored)
    out = (protocol if training is None else replace(protocol, training=training)).to_json()
    return {**out, **{k: v for k, v in stored.items() if k not in out}}
