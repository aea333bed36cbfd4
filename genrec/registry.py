"""The registries of names: models, objectives, tasks, and the metrics each task reports.

A registered part has two classes: its config side (a typed config, torch-free, under `genrec.config`) and its
implementation (the torch code). Built-ins are listed as two "module:Class" strings, each imported on first
use, so that reading a config imports config classes only (no torch) and the config layer sits below the
code it configures. A model defined anywhere else joins with `genrec.register(MyModel)`; its class carries its
config class (`config_class`, whose `name` field's default is the registered name and whose `task` ClassVar
says which task it serves by default); an objective with `genrec.register_objective(MyObjective)`, a task
with `genrec.register_task(MyTask)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from genrec.errors import ConfigError


def load(path: str):
    """The object a "module:attr" string names (the module is imported)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def default_name(config_side) -> str | None:
    """The name a config-side class registers under: its pydantic `name` field's default, else its `name`."""
    fields = getattr(config_side, "model_fields", None)
    if fields is not None and "name" in fields:
        default = fields["name"].default
        return default if isinstance(default, str) else None
    name = getattr(config_side, "name", None)
    return name if isinstance(name, str) else None


class Registry:
    """Names of one kind of part -> (config side, implementation). `side` is the implementation's attribute
    that holds its config side (`config_class`)."""

    def __init__(self, kind: str, builtin: dict[str, tuple[str, str]], side: str = "config_class") -> None:
        self.kind, self.builtin, self.side = kind, builtin, side
        self._config: dict[str, type] = {}
        self._impl: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: make `cls` (an implementation with its config side) known by its config's name.
        Raises ConfigError when the config side or its name is missing."""
        config_side = getattr(cls, self.side, None)
        name = default_name(config_side) if config_side is not None else None
        if name is None:
            raise ConfigError(f"{cls.__name__}.{self.side} needs a `name` with a string default")
        self._config[name], self._impl[name] = config_side, cls
        return cls

    def config(self, name: str) -> type:
        """The config side of `name`, without importing its implementation. Raises ConfigError."""
        if name not in self._config:
            self._check(name)
            self._config[name] = load(self.builtin[name][0])
        return self._config[name]

    def get(self, name: str) -> type:
        """The implementation of `name` (importing a built-in on first use). Raises ConfigError."""
        if name not in self._impl:
            self._check(name)
            self._impl[name] = load(self.builtin[name][1])
        return self._impl[name]

    def names(self) -> list[str]:
        return sorted(set(self.builtin) | set(self._impl))

    def _check(self, name: str) -> None:
        if name not in self.builtin:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")


MODELS = Registry(
    "model",
    {
        "popularity": (
            "genrec.config.models.popularity:PopularityConfig",
            "genrec.models.popularity:Popularity",
        ),
        "itemknn": ("genrec.config.models.itemknn:ItemKNNConfig", "genrec.models.itemknn:ItemKNN"),
        "mf": ("genrec.config.models.mf:MFConfig", "genrec.models.mf:MF"),
        "sasrec": ("genrec.config.models.sasrec:SASRecConfig", "genrec.models.sasrec:SASRec"),
        "hstu": ("genrec.config.models.hstu:HSTUConfig", "genrec.models.hstu:HSTU"),
        "kuaiformer": (
            "genrec.config.models.kuaiformer:KuaiFormerConfig",
            "genrec.models.kuaiformer:KuaiFormer",
        ),
        "textrec": ("genrec.config.models.textrec:TextRecConfig", "genrec.models.textrec:TextRec"),
        "unified": ("genrec.config.models.unified:UnifiedConfig", "genrec.models.unified:Unified"),
        "tiger": ("genrec.config.models.tiger:TigerConfig", "genrec.models.tiger:Tiger"),
        "llm_tree": ("genrec.config.models.llm_tree:LLMTreeConfig", "genrec.models.llm_tree:LLMTree"),
        "onerec": ("genrec.config.models.onerec:OneRecConfig", "genrec.models.onerec:OneRec"),
        "sid_llm": ("genrec.config.models.sid_llm:SidLlmConfig", "genrec.models.sid_llm:SidLlm"),
        "hllm": ("genrec.config.models.hllm:HLLMConfig", "genrec.models.hllm:HLLM"),
        "rpg": ("genrec.config.models.rpg:RPGConfig", "genrec.models.rpg:RPG"),
        "din": ("genrec.config.models.ranking.din:DINConfig", "genrec.models.ranking.din:DIN"),
        "hstu_ranker": (
            "genrec.config.models.ranking.hstu_ranker:HSTURankerConfig",
            "genrec.models.ranking.hstu_ranker:HSTURanker",
        ),
        "genrank": (
            "genrec.config.models.ranking.genrank:GenRankConfig",
            "genrec.models.ranking.genrank:GenRank",
        ),
        "mtgr": ("genrec.config.models.ranking.mtgr:MTGRConfig", "genrec.models.ranking.mtgr:MTGR"),
    },
)
MODEL_TASKS = ("retrieval", "ranking")

OBJECTIVES = Registry(
    "objective",
    {
        "full_softmax": ("genrec.config.objectives:FullSoftmaxConfig", "genrec.objectives.base:FullSoftmax"),
        "sampled_softmax": (
            "genrec.config.objectives:SampledSoftmaxConfig",
            "genrec.objectives.base:SampledSoftmax",
        ),
        "bce": ("genrec.config.objectives:BCEConfig", "genrec.objectives.base:BCEOneNegative"),
        "contrastive": (
            "genrec.config.objectives:ContrastiveConfig",
            "genrec.objectives.base:WithContrastive",
        ),
        "bpr": ("genrec.config.objectives:BPRConfig", "genrec.objectives.base:BPR"),
        "bce_logits": ("genrec.config.objectives:RankerBCEConfig", "genrec.objectives.base:WeightedBCE"),
        "code_cross_entropy": (
            "genrec.config.objectives:CodeCrossEntropyConfig",
            "genrec.objectives.base:CodeCrossEntropy",
        ),
        "token_cross_entropy": (
            "genrec.config.objectives:TokenCrossEntropyConfig",
            "genrec.objectives.base:TokenCrossEntropy",
        ),
        "dpo": ("genrec.config.objectives:DPOConfig", "genrec.objectives.preference:DPO"),
        "sdpo": ("genrec.config.objectives:SDPOConfig", "genrec.objectives.preference:SDPO"),
    },
)


TASKS = Registry(
    "task",
    {
        "retrieval": ("genrec.config.tasks:RetrievalSpec", "genrec.runs.retrieval:RetrievalTask"),
        "ranking": ("genrec.config.tasks:RankingSpec", "genrec.runs.ranking:RankingTask"),
        "preference": ("genrec.config.tasks:PreferenceSpec", "genrec.runs.preference:PreferenceTask"),
    },
    side="spec",
)


def register_task(cls: type) -> type:
    """Class decorator: make a task (a `genrec.runs.task.Task` whose `spec`, a `genrec.config.tasks.TaskSpec`,
    names it and its sections) available as `task:` in configs. Raises ConfigError."""
    return TASKS.register(cls)


def register_objective(cls: type) -> type:
    """Class decorator: make an objective (a `genrec.objectives.Objective` with its `config_class`, whose `name`
    default is the registered name) available as `train.objective`. Raises ConfigError."""
    return OBJECTIVES.register(cls)


def register(cls: type) -> type:
    """Class decorator: make a model available to configs, `genrec train`, the API and the server.

    Raises ConfigError when the class lacks `config_class` or its config declares an unknown task.
    """
    task = getattr(getattr(cls, "config_class", None), "task", None)
    if task not in MODEL_TASKS:
        raise ConfigError(f"{cls.__name__}.config_class.task must be one of {MODEL_TASKS}")
    return MODELS.register(cls)


def config_class(name: str) -> type:
    """The config class of the model registered as `name`, without importing the model. Raises ConfigError."""
    return MODELS.config(name)


def get(name: str) -> type:
    """The model class registered as `name` (importing a built-in on first use). Raises ConfigError."""
    return MODELS.get(name)


def names(task: str | None = None) -> list[str]:
    """Registered model names, optionally only those whose config says `task`."""
    every = MODELS.names()
    return every if task is None else [n for n in every if config_class(n).task == task]


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
