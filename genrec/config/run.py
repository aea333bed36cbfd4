"""Typed, frozen run configuration: recipes (YAML) + `--set key=value` overrides, unknown keys rejected.

One `RunConfig` serves every task. The model section is validated against the chosen model's own config class
(looked up by `model.name` in `genrec.registry`), so `--set model.dim=64` is checked by the model that uses it.
`task` (default: the model's) picks the classes of the data and eval sections from the task's spec
(`genrec.config.tasks`: `DataConfig` / `EvalConfig` for retrieval, `RankDataConfig` / `RankEvalConfig` for
ranking), and `train.objective` defaults to the task's choice for the model. `init_from` names a finished run
that training starts from: a recipe without a model section takes the model, data and eval sections of that run.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from genrec import registry
from genrec.config.base import ModelConfig, StrictModel
from genrec.config.objectives import ObjectiveConfig, objective_config
from genrec.errors import ConfigError

RECIPES_DIR = Path(__file__).parents[1] / "recipes"


def selectable(section, task: str):
    """An eval section whose `select_metric` is one of the task's metrics (with K in `ks`); ValueError if not."""
    try:
        registry.metric(section.select_metric, task, section.ks)
    except ConfigError as e:
        raise ValueError(f"select_metric: {e}") from None
    return section


class CleanConfig(StrictModel):
    """Quality filtering of the interactions (genrec.data.quality), after the other filters; all off by default."""

    exact_duplicates: bool = Field(False, description="drop repeats of the same (user, item, timestamp)")
    drop_users: float = Field(
        0.0, ge=0, lt=1, description="share of users with the highest bot score dropped (0 = none)"
    )
    drop_events: float = Field(
        0.0, ge=0, lt=1, description="share of events with the highest noise score dropped (0 = none)"
    )
    burst_seconds: int = Field(60, ge=1, description="events of a user closer than this count as a burst")
    context: int = Field(3, ge=1, description="neighbours each side an event's co-occurrence score reads")
    keep_last: int = Field(
        2, ge=0, description="each user's newest events never dropped (leave-one-out's valid / test targets)"
    )
    model_run: str | None = Field(
        None,
        description="a trained retrieval run whose model's log-likelihood of each event joins the event score",
    )


class DataConfig(StrictModel):
    dataset: str = "ml-100k"
    data_dir: str | None = None
    download: bool = Field(False, description="fetch ml-100k / ml-1m from GroupLens (md5-checked) if missing")
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical name -> column in the user's file"
    )
    items_path: str | None = None
    unreadable_ratings: Literal["error", "drop"] = Field(
        "error",
        description="rating values that are not numbers: a one-line error, or their rows dropped (noted)",
    )
    unordered_users: Literal["drop", "keep"] = "drop"
    dedup: Literal["none", "first", "last"] = "none"
    kcore: int = Field(0, ge=0)
    min_seq_len: int = Field(0, ge=0)
    sample_users: float = Field(
        1.0, gt=0, le=1, description="share of users kept (seeded random sample; scaling sweeps' data size)"
    )
    clean: CleanConfig = Field(
        default_factory=CleanConfig, description="quality filtering (docs/cleaning.md)"
    )
    split: Literal["leave_one_out", "temporal"] = "leave_one_out"
    valid_quantile: float = 0.8
    test_quantile: float = 0.9


class EvalConfig(StrictModel):
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20, 50])
    exclude_history: bool = True  # the headline convention; the other one is always reported beside it
    sampled_negatives: int = Field(
        0, ge=0, description="0 = off; N adds labelled target-vs-N-sampled metrics"
    )
    batch_size: int = Field(1024, ge=1)
    select_metric: str = "ndcg@10"
    seed: int = 0
    session_len: int = Field(
        0,
        ge=0,
        description="0 = off; N adds session recall@N on a temporal split's test users (eval/sessions.py)",
    )
    session_beam: int = Field(10, ge=1, description="beam width over sessions for models that generate them")
    session_users: int = Field(
        0, ge=0, description="0 = every evaluated user; else a seeded sample of that many"
    )

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must be positive integers")
        return sorted(set(ks))

    @model_validator(mode="after")
    def _selectable(self) -> EvalConfig:
        return selectable(self, "retrieval")


class TrainConfig(StrictModel):
    objective: SerializeAsAny[ObjectiveConfig] | None = Field(
        None,
        description="what training minimises: an objective's name or {name: ..., its keys} (`genrec config` lists "
        "every objective's keys); unset = the model's default, written out in the run's config.yaml",
    )
    epochs: int = Field(30, ge=0)
    batch_size: int = Field(
        256,
        ge=1,
        description="the global batch: with --nproc N (torchrun) each process trains batch_size / N rows",
    )
    lr: float = Field(1e-3, gt=0)
    adam_beta2: float = Field(
        0.999, gt=0, lt=1, description="AdamW's second-moment decay (0.98 adapts faster, as in SASRec's code)"
    )
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine", "linear", "inverse_sqrt"] = Field(
        "constant",
        description="after the linear warm-up: constant, cosine or linear decay to 0 at the last step, or "
        "inverse_sqrt (lr x sqrt(S / step) from step S = warmup_steps + lr_hold_steps on, as T5 and TIGER)",
    )
    lr_hold_steps: int = Field(
        0, ge=0, description="inverse_sqrt: steps at the full rate after the warm-up, before the decay starts"
    )
    grad_clip: float | None = 1.0
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    eval_every: int = Field(1, ge=1)
    # How the process runs: its seed, threads, device, numeric precision, compiled step, input workers, time limit.
    seed: int = 42
    threads: int | None = None
    device: str = Field(
        "auto",
        description="where the model trains, validates and is evaluated: auto (the first CUDA GPU when there is "
        "one, else the CPU), cpu, cuda, cuda:N or mps; --device on the command line",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="autocast dtype of the training step: auto = bf16 on CUDA GPUs that have it, else fp32 "
        "(fp16 scales the loss with a GradScaler); evaluation metrics are always float32",
    )
    compile: bool = Field(
        False,
        description="compile the training step with torch.compile (eager, with a warning, where it fails)",
    )
    workers: int = Field(
        0,
        ge=0,
        description="DataLoader processes building the batches (0: built in the training process); results do "
        "not depend on it",
    )
    max_minutes: float | None = Field(
        None,
        ge=0,
        description="0 or unset = none. A safety net, not a budget: training stops at the first epoch boundary "
        "past this many minutes, validates the weights it has and says so on stderr and in the protocol; results "
        "then depend on the machine's speed, so built-in recipes bound their work by epochs instead",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        name = value.strip().lower()
        kind, sep, index = name.partition(":")
        if name in ("auto", "cpu", "cuda", "mps") or (kind == "cuda" and sep and index.isdigit()):
            return name
        raise ValueError(f"{value!r} is not a device: auto, cpu, cuda, cuda:N or mps")

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, value: Any) -> ObjectiveConfig | None:
        if value is None:
            return None
        try:
            return objective_config(value)
        except ConfigError as e:
            raise ValueError(str(e)) from None


class RankDataConfig(StrictModel):
    """Data of a ranking run: explicit feedback split by time into train / valid / test impressions."""

    dataset: str = "ml-100k"
    data_dir: str | None = None
    download: bool = False
    unordered_users: Literal["drop"] = Field("drop", description="ranking needs real time order")
    unreadable_ratings: Literal["error", "drop"] = Field(
        "error",
        description="rating values that are not numbers: a one-line error, or their rows dropped (noted)",
    )
    valid_quantile: float = 0.8
    test_quantile: float = 0.9
    rating_scale: tuple[float, float] | None = Field(
        None, description="[lowest, highest] rating; None = the range of the data's ratings (docs/data.md)"
    )
    like_threshold: float | None = Field(
        None,
        description="like = rating >= this; None = the lowest rating in the top quarter of the scale (1-5: 4, "
        "0/1: 1, -1/+1: 1, 1-10: 8)",
    )
    candidate_time: Literal["impression", "last_event"] = Field(
        "impression", description="the candidate's time models see: its own, or its history's last event's"
    )

    @field_validator("rating_scale")
    @classmethod
    def _ordered(cls, scale):
        if scale is not None and not scale[0] < scale[1]:
            raise ValueError(f"rating_scale needs [lowest, highest] with lowest < highest, got {list(scale)}")
        return scale


class RankEvalConfig(StrictModel):
    select_metric: str = Field(
        "gauc", description="auc, gauc, logloss (lower is better) or ndcg@K with K in ks"
    )
    ks: list[int] = Field(default_factory=lambda: [10])
    batch_size: int = Field(64, ge=1, description="history rows per evaluation batch")

    @model_validator(mode="after")
    def _selectable(self) -> RankEvalConfig:
        return selectable(self, "ranking")


class PreferenceDataConfig(DataConfig):
    """Data of a preference run: the data section of the run it aligns (same dataset, filters and split), and how
    preference pairs are built from the training events (docs/alignment.md)."""

    pairs: Literal["ratings", "self-play", "reward-beams"] = Field(
        "ratings",
        description="pair source: ratings (chosen = a next item rated >= like, rejected = items rated <= "
        "dislike later, else sampled unseen items); self-play (rejected = the model's own top predictions the "
        "user did not like, SPRec); reward-beams (best vs worst of the model's own candidates by the reward "
        "model, OneRec's iterative alignment). Built afresh every epoch",
    )
    negatives: int = Field(
        1, ge=1, description="rejected items (or sessions) per pair; S-DPO's softmax is over them"
    )
    anchors_per_user: int = Field(
        4, ge=1, description="ratings / self-play: pairs per training user, at their latest liked events"
    )
    like: float = Field(4.0, description="a rating at or above it is a like")
    dislike: float = Field(2.0, description="a rating at or below it is a dislike")
    self_play_top: int = Field(20, ge=1, description="self-play: the model's top list the rejected come from")
    reward_run: str | None = Field(None, description="ranking run directory of the reward model")
    reward_diversity: float = Field(
        0.0, ge=0, description="reward: weight of the list's genre diversity (intra-list Jaccard distance)"
    )
    beams: int = Field(10, ge=2, description="reward-beams: candidates per user (sessions or top items)")
    session_len: int = Field(5, ge=1, description="reward-beams: items per generated session (N)")
    users_per_round: int = Field(1000, ge=1, description="reward-beams: users sampled per epoch")

    @model_validator(mode="after")
    def _reward_beams(self) -> PreferenceDataConfig:
        if self.pairs == "reward-beams" and not self.reward_run:
            raise ValueError(
                "pairs reward-beams needs a reward model: --reward-run RANKING_RUN_DIR (data.reward_run)"
            )
        if self.pairs == "reward-beams" and self.negatives >= self.beams:
            raise ValueError(f"reward-beams needs negatives ({self.negatives}) < beams ({self.beams})")
        return self


class RunConfig(StrictModel):
    task: str = Field(
        "retrieval",
        description="retrieval ranks the catalogue, ranking scores impressions, preference aligns a run; "
        "default: the model's",
    )
    init_from: str | None = Field(
        None,
        description="a finished run directory that training starts from: its weights and its item and user index "
        "(and the frozen reference of preference objectives)",
    )
    model: SerializeAsAny[ModelConfig]
    data: SerializeAsAny[StrictModel] = Field(default_factory=dict, validate_default=True)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: SerializeAsAny[StrictModel] = Field(default_factory=dict, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _task_of_model(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        model = value.get("model")
        name = (
            model.name
            if isinstance(model, ModelConfig)
            else model.get("name")
            if isinstance(model, dict)
            else None
        )
        if name is None:
            raise ValueError(f"model needs a name, one of {', '.join(registry.names())}")
        try:
            model_cls = registry.config_class(name)
            task = value.get("task") or model_cls.task
            spec = registry.TASKS.config(task)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if spec.models != model_cls.task:
            raise ValueError(f"task {task} trains {spec.models} models; {name!r} is a {model_cls.task} model")
        train = with_default_objective(value.get("train", {}), spec.default_objective(model_cls))
        return dict(value, task=task, train=train)

    @field_validator("model", mode="before")
    @classmethod
    def _model_section(cls, value: Any) -> ModelConfig:
        if isinstance(value, ModelConfig):
            return value
        return registry.config_class(value["name"]).model_validate(value)

    @field_validator("data", "eval", mode="before")
    @classmethod
    def _task_section(cls, value: Any, info: ValidationInfo) -> StrictModel:
        spec = registry.TASKS.config(info.data.get("task", "retrieval"))
        section = spec.data if info.field_name == "data" else spec.eval
        return value if isinstance(value, section) else section.model_validate(value)

    @model_validator(mode="after")
    def _sections_agree(self) -> RunConfig:
        if self.train.objective is not None and type(self.model).default_objective is None:
            raise ValueError(
                f"model {self.model.name!r} is fitted in closed form: it takes no train.objective"
            )
        self.model.check_objective(self.train.objective)
        registry.TASKS.config(self.task).check(self)
        return self


def with_default_objective(train: Any, default: str | None) -> Any:
    """A train section (mapping or `TrainConfig`) whose objective is the `default` objective's config when unset,
    and named `default` when given as keys without a name."""
    if isinstance(train, TrainConfig):
        if train.objective is None and default is not None:
            return train.model_copy(update={"objective": objective_config(default)})
        return train
    if not isinstance(train, dict) or default is None:
        return train
    objective = train.get("objective")
    if objective is None:
        return dict(train, objective=default)
    if isinstance(objective, dict) and "name" not in objective:
        return dict(train, objective=dict(objective, name=default))
    return train


# Loss settings that model sections held before `train.objective` did: where each went.
MOVED = {
    "loss": "train.objective (e.g. train.objective=bce)",
    "negatives": "train.objective.negatives (of sampled_softmax)",
    "loss_chunk": "train.objective.chunk (of full_softmax)",
    "softmax_dtype": "train.objective.dtype (of full_softmax)",
    "contrastive_weight": "train.objective.weight (of train.objective.name=contrastive)",
    "contrastive_temperature": "train.objective.temperature (of train.objective.name=contrastive)",
}


# Keys removed from the configs, with the value that meant "off": a stored run that has them off loads as before.
# ANY: a key whose value never changed what the stored weights compute (dropped whatever it was).
ANY = object()
REMOVED = {
    ("model", "item_dropout"): 0.0,
    ("model", "text_dropout"): 0.0,
    ("train", "ema_decay"): None,
    ("model", "output_proj"): False,
    ("model", "text_interest"): False,
    ("model", "text_interest_max"): ANY,  # read only with text_interest on
    ("train", "adam_kernel"): ANY,  # the optimiser's kernel: the trained weights are used the same way
}


def migrate(raw: dict) -> dict:
    """A stored config.yaml in today's keys: removed keys that were off are dropped, and the loss settings of a
    model section written before `train.objective` existed (`MOVED`) become that objective. Raises ConfigError
    for a removed key that was on."""
    if not isinstance(raw, dict):
        return raw
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for (section, key), off in REMOVED.items():
        part = raw.get(section)
        if isinstance(part, dict) and key in part:
            if off is not ANY and part[key] != off:
                raise ConfigError(f"{section}.{key}={part[key]}, which genrec no longer has")
            del part[key]
    model = raw.get("model")
    if not isinstance(model, dict) or not MOVED.keys() & model.keys():
        return raw
    model = dict(model)
    old = {key: model.pop(key) for key in list(model) if key in MOVED}
    objective = {"name": old.get("loss", "full_softmax")}
    if objective["name"] == "full_softmax":
        objective |= {"chunk": old.get("loss_chunk", 256), "dtype": old.get("softmax_dtype", "auto")}
    if objective["name"] == "sampled_softmax":
        objective["negatives"] = old.get("negatives", 256)
    if old.get("contrastive_weight"):
        objective = {
            "name": "contrastive",
            "base": objective,
            "weight": old["contrastive_weight"],
            "temperature": old.get("contrastive_temperature", 0.1),
        }
    train = dict(raw.get("train") or {})
    train.setdefault("objective", objective)
    return {**raw, "model": model, "train": train}


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_dict(recipe: str) -> dict:
    """A built-in recipe name or a YAML path -> raw dict, following `base:` to the recipe it extends."""
    path = Path(recipe)
    if recipe.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise ConfigError(f"recipe file {recipe} not found")
    else:
        path = RECIPES_DIR / f"{recipe}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown recipe {recipe!r}; built-in: {', '.join(list_recipes())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML{_yaml_where(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping")
    base = raw.pop("base", None)
    return deep_merge(recipe_dict(base), raw) if base else raw


def _yaml_where(e: yaml.YAMLError) -> str:
    """ " at line L, column C: problem" from a YAML error (1-based, as editors count)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem}"


def config_keys(model_name: str | None = None) -> list[str]:
    """Every dotted key a run of `model_name` accepts (its model section and its task's data / eval sections);
    for an unknown model, the retrieval sections' keys."""
    if model_name in registry.names():
        return ["task", "init_from", *(row[0] for row in reference(model_name))]
    return [
        "task",
        "init_from",
        "model.name",
        *(
            row[0]
            for s, p in ((DataConfig, "data"), (TrainConfig, "train"), (EvalConfig, "eval"))
            for row in describe(s, p)
        ),
    ]


def nearest_key(wrong: str, keys: list[str]) -> str | None:
    """The valid key a mistyped one most likely meant: the same last part under another section, else the
    closest spelling."""
    last = wrong.rsplit(".", 1)[-1]
    same = [k for k in keys if k.rsplit(".", 1)[-1] == last]
    if len(same) == 1:
        return same[0]
    close = difflib.get_close_matches(wrong, keys, n=1, cutoff=0.6)
    return close[0] if close else None


def validation_message(e: ValidationError, keys: list[str]) -> str:
    """A pydantic error as "config KEY: problem" (one line); an unknown key names the nearest valid one."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        wrong = where
        if isinstance(err.get("input"), dict) and err["input"]:  # a whole unknown section: name a key in it
            wrong = f"{where}.{next(iter(err['input']))}"
        guess = nearest_key(wrong, keys)
        where, msg = wrong, "unknown key" + (f" (did you mean {guess}?)" if guess else "")
        section, _, last = wrong.rpartition(".")
        if section == "model" and last in MOVED:
            msg = f"moved to {MOVED[last]}"
    more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"config {where}: {msg}{more}" if where else f"config: {msg}{more}"


def parse_overrides(pairs: list[str]) -> dict:
    """`a.b=1` strings -> nested dict; values are parsed as YAML scalars/lists (`3`, `true`, `[5,10]`)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw_value = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw_value) if raw_value != "" else ""
        except yaml.YAMLError:
            value = raw_value
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def build_config(raw: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        model = raw.get("model") if isinstance(raw, dict) else None
        keys = config_keys(model.get("name") if isinstance(model, dict) else None)
        raise ConfigError(validation_message(e, keys)) from None


def load_config(
    recipe: str, overrides: dict | list[str] | None = None, dataset: str | None = None
) -> RunConfig:
    """A resolved, validated config: a built-in recipe name or YAML path, with overrides as a dict
    ({"train.epochs": 3}) or `key=value` strings, and optionally another dataset. Raises ConfigError (unknown
    keys name the nearest one). Imports no torch."""
    raw = recipe_dict(recipe)
    train = raw.get("train")
    if isinstance(train, dict) and isinstance(train.get("objective"), str):  # so that --set can add its keys
        raw["train"] = dict(train, objective={"name": train["objective"]})
    raw = deep_merge(raw, parse_overrides(override_pairs(overrides)))
    if dataset:
        raw = deep_merge(raw, {"data": {"dataset": dataset}})
    if raw.get("init_from"):
        raw = deep_merge(init_sections(str(raw["init_from"])), raw)
    if "model" not in raw:
        raise ConfigError(f"recipe {recipe!r} has no model section (nor an init_from run to take it from)")
    return build_config(raw)


def init_sections(run_dir: str) -> dict:
    """The model, data and eval sections of the run a config starts from (`init_from`): its stored config.yaml
    (in today's keys). Raises ConfigError when `run_dir` holds none."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"init_from: {run_dir} is not a genrec run directory (no config.yaml)")
    stored = migrate(yaml.safe_load(path.read_text()) or {})
    return {key: stored[key] for key in ("model", "data", "eval") if isinstance(stored.get(key), dict)}


def override_pairs(overrides: dict | list[str] | None) -> list[str]:
    """Overrides as `key=value` strings, from a dict ({"train.epochs": 3}, values written as JSON) or a list."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return list(overrides)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def describe(section: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every field of a config class, nested sections flattened; a field
    that holds an objective is one row (its keys depend on the objective: `objective_reference`)."""
    rows = []
    for name, field in section.model_fields.items():
        key = f"{prefix}.{name}"
        kind = field.annotation
        inner = _unwrapped(kind)
        if isinstance(inner, type) and issubclass(inner, ObjectiveConfig):
            default = field.get_default(call_default_factory=True)
            rows.append((key, "objective", getattr(default, "name", "null"), field.description or ""))
            continue
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            rows += describe(kind, key)
            continue
        if get_origin(kind) is Literal:
            text = " | ".join(str(a) for a in get_args(kind))
        else:
            text = (
                str(kind).replace("typing.", "") if get_args(kind) else getattr(kind, "__name__", str(kind))
            )
        default = field.get_default(call_default_factory=True)
        rows.append(
            (
                key,
                text,
                yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip(),
                field.description or "",
            )
        )
    return rows


def _unwrapped(kind):
    """`X` of an annotation `X`, `X | None` or `Annotated[X, ...]` (else the annotation)."""
    while get_origin(kind) is not None:
        args = [a for a in get_args(kind) if a is not type(None)]
        if len(args) != 1 and get_origin(kind) is not Annotated:
            return kind
        kind = args[0]
    return kind


def train_reference(objective: str | None) -> list[tuple[str, str, str, str]]:
    """The train section's keys, with the keys of the objective it trains with by default."""
    rows = describe(TrainConfig, "train")
    if objective is None:
        return [r for r in rows if r[0] != "train.objective"]
    at = next(i for i, r in enumerate(rows) if r[0] == "train.objective")
    head = (rows[at][0], rows[at][1], objective, rows[at][3])
    return [*rows[:at], head, *objective_reference(objective, "train.objective")[1:], *rows[at + 1 :]]


def task_reference(name: str) -> list[tuple[str, str, str, str]]:
    """The keys a run of the task registered as `name` has beside its model's: `init_from`, its data and eval
    sections and its default objective (when the task names one of its own)."""
    spec = registry.TASKS.config(name)
    init = RunConfig.model_fields["init_from"]
    rows = [("init_from", "str | None", "null", init.description or "")]
    default = spec.default_objective(ModelConfig)
    objective = train_reference(default)[:1] if default else []
    return [*rows, *describe(spec.data, "data"), *objective, *describe(spec.eval, "eval")]


def objective_reference(name: str, prefix: str = "train.objective") -> list[tuple[str, str, str, str]]:
    """The keys of the objective registered as `name` (its `name` key first)."""
    return describe(registry.OBJECTIVES.config(name), prefix)


def reference(model_name: str) -> list[tuple[str, str, str, str]]:
    """Every key a run of `model_name` accepts: its model section, then the task's data and eval sections and
    the train section."""
    cls = registry.config_class(model_name)
    spec = registry.TASKS.config(cls.task)
    return [
        *describe(cls, "model"),
        *describe(spec.data, "data"),
        *train_reference(spec.default_objective(cls)),
        *describe(spec.eval, "eval"),
    ]
