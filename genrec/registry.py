"""One registry of model names for every task (name -> model class), and the metrics each task reports.

Built-in models are listed as "module:Class" and imported on first use, so that reading a config does not import
every model (and the config layer sits below the models). A model defined anywhere else joins with
`genrec.register(MyModel)`; its class says which task it serves (`task = "retrieval"` or `"ranking"`) and carries
its config class (`config_class`, whose `name` field's default is the registered name).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from genrec.errors import ConfigError

BUILTIN: dict[str, str] = {
    "popularity": "genrec.models.popularity:Popularity",
    "itemknn": "genrec.models.itemknn:ItemKNN",
    "mf": "genrec.models.mf:MF",
    "sasrec": "genrec.models.sasrec:SASRec",
    "hstu": "genrec.models.hstu:HSTU",
    "kuaiformer": "genrec.models.kuaiformer:KuaiFormer",
    "textrec": "genrec.models.textrec:TextRec",
    "unified": "genrec.models.unified:Unified",
    "tiger": "genrec.models.tiger:Tiger",
    "llm_tree": "genrec.models.llm_tree:LLMTree",
    "onerec": "genrec.models.onerec:OneRec",
    "sid_llm": "genrec.models.sid_llm:SidLlm",
    "hllm": "genrec.models.hllm:HLLM",
    "rpg": "genrec.models.rpg:RPG",
    "din": "genrec.models.ranking.din:DIN",
    "hstu_ranker": "genrec.models.ranking.hstu_ranker:HSTURanker",
    "genrank": "genrec.models.ranking.genrank:GenRank",
    "mtgr": "genrec.models.ranking.mtgr:MTGR",
}
_REGISTERED: dict[str, type] = {}
TASKS = ("retrieval", "ranking")


def model_name(cls: type) -> str:
    """The name a model class registers under: its config's `name` default."""
    field = cls.config_class.model_fields.get("name")
    if field is None or not isinstance(field.default, str):
        raise ConfigError(f"{cls.__name__}.config_class needs a `name` field with a string default")
    return field.default


def register(cls: type) -> type:
    """Class decorator: make a model available to configs, `genrec train`, the API and the server.

    Raises ConfigError when the class lacks `config_class` or declares an unknown task.
    """
    if getattr(cls, "task", None) not in TASKS:
        raise ConfigError(f"{cls.__name__}.task must be one of {TASKS}")
    _REGISTERED[model_name(cls)] = cls
    return cls


def get(name: str) -> type:
    """The model class registered as `name` (importing a built-in on first use). Raises ConfigError."""
    if name not in _REGISTERED and name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        _REGISTERED.setdefault(name, cls)
    if name not in _REGISTERED:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(names())}")
    return _REGISTERED[name]


def names(task: str | None = None) -> list[str]:
    """Registered model names, optionally only those of one task."""
    every = sorted(set(BUILTIN) | set(_REGISTERED))
    return every if task is None else [n for n in every if get(n).task == task]


@dataclass(frozen=True)
class Metric:
    """A metric a task reports: its name (`ndcg` in `ndcg@10`), whether it takes a cut-off K, its direction."""

    name: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    at_k: bool
    description: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("recall", ("retrieval",), True, True, "share of examples whose target is in the top K"),
        Metric("hr", ("retrieval",), True, True, "hit rate at K (= recall@K: one target per example)"),
        Metric("ndcg", ("retrieval", "ranking"), True, True, "discounted gain of the target(s) in the top K"),
        Metric("mrr", ("retrieval",), True, False, "mean reciprocal rank of the target in the full ranking"),
        Metric("auc", ("ranking",), True, False, "AUC over all labelled impressions"),
        Metric("gauc", ("ranking",), True, False, "impression-weighted per-user AUC"),
        Metric("logloss", ("ranking",), False, False, "binary cross-entropy of the like-probability"),
    )
}


def metric(key: str, task: str | None = None, ks: list[int] | None = None) -> Metric:
    """The metric of a key such as `ndcg@10` or `gauc`, checked against a task and its cut-offs `ks`.
    Raises ConfigError naming the metrics that would be valid."""
    name, _, k = key.partition("@")
    m = METRICS.get(name)
    valid = m is not None and (task is None or task in m.tasks) and (bool(k) == m.at_k)
    if valid and k:
        valid = k.isdigit() and (ks is None or int(k) in ks)
    if not valid:
        names = [f"{n}@K" if x.at_k else n for n, x in METRICS.items() if task is None or task in x.tasks]
        where = f" with K in {ks}" if ks else ""
        raise ConfigError(f"metric {key!r} is not one of {', '.join(names)}{where}")
    return m
