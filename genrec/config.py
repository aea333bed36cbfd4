"""Typed, frozen run configuration: recipes (YAML) + `--set key=value` overrides, unknown keys rejected.

One `RunConfig` serves both tasks. The model section is validated against the chosen model's own config class
(looked up by `model.name` in `genrec.registry`), so `--set model.dim=64` is checked by the model that uses it;
the model's class names the task (`retrieval` or `ranking`), and the task picks the data and eval sections'
classes (`DataConfig` / `EvalConfig` for retrieval, `RankDataConfig` / `RankEvalConfig` for ranking).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from genrec import registry
from genrec.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(StrictModel):
    """Base of every model's config; subclasses add their hyper-parameters and fix `name`."""

    name: str
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


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
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    grad_clip: float | None = 1.0
    adam_kernel: Literal["loop", "multi_tensor", "fused"] = Field(
        "loop",
        description="AdamW implementation: PyTorch's per-tensor loop; multi_tensor (the same bits per step, "
        "faster); fused (fastest, equal up to float rounding)",
    )
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    eval_every: int = Field(1, ge=1)
    seed: int = 42
    threads: int | None = None
    max_minutes: float | None = Field(
        None,
        ge=0,
        description="0 or unset = none. A safety net, not a budget: training stops at the first epoch boundary "
        "past this many minutes, validates the weights it has and says so on stderr and in the protocol; results "
        "then depend on the machine's speed, so built-in recipes bound their work by epochs instead",
    )


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


SECTIONS = {"retrieval": (DataConfig, EvalConfig), "ranking": (RankDataConfig, RankEvalConfig)}


class RunConfig(StrictModel):
    task: Literal["retrieval", "ranking"] = Field(
        "retrieval", description="set by the model: retrieval ranks the catalogue, ranking scores impressions"
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
            task = registry.get(name).task
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if value.get("task", task) != task:
            raise ValueError(f"model {name!r} is a {task} model, not a {value['task']} one")
        return dict(value, task=task)

    @field_validator("model", mode="before")
    @classmethod
    def _model_section(cls, value: Any) -> ModelConfig:
        if isinstance(value, ModelConfig):
            return value
        model_cls = registry.get(value["name"])
        cfg = model_cls.config_class.model_validate(value)
        check = getattr(model_cls, "check_config", None)  # rules that span several keys of the model
        if check is not None:
            check(cfg)
        return cfg

    @field_validator("data", "eval", mode="before")
    @classmethod
    def _task_section(cls, value: Any, info: ValidationInfo) -> StrictModel:
        section = SECTIONS[info.data.get("task", "retrieval")][0 if info.field_name == "data" else 1]
        return value if isinstance(value, section) else section.model_validate(value)

    @model_validator(mode="after")
    def _sessions_need_time(self) -> RunConfig:
        # Checked before training: only a temporal split says which events follow each user's cut-off.
        if getattr(self.eval, "session_len", 0) and getattr(self.data, "split", "temporal") != "temporal":
            raise ValueError(
                "eval.session_len needs data.split=temporal (the events after each user's cut-off)"
            )
        return self


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
        return ["task", *(row[0] for row in reference(model_name))]
    return [
        "task",
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
    more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"config {where}: {msg}{more}"


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


def load_config(recipe: str, overrides: list[str] | None = None, dataset: str | None = None) -> RunConfig:
    raw = recipe_dict(recipe)
    if "model" not in raw:
        raise ConfigError(f"recipe {recipe!r} has no model section")
    raw = deep_merge(raw, parse_overrides(overrides or []))
    if dataset:
        raw = deep_merge(raw, {"data": {"dataset": dataset}})
    return build_config(raw)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def describe(section: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every field of a config class, nested sections flattened."""
    rows = []
    for name, field in section.model_fields.items():
        key = f"{prefix}.{name}"
        kind = field.annotation
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


def reference(model_name: str) -> list[tuple[str, str, str, str]]:
    """Every key a run of `model_name` accepts: its model section, then the task's data and eval sections and
    the train section."""
    cls = registry.get(model_name)
    data_cls, eval_cls = SECTIONS[cls.task]
    return [
        *describe(cls.config_class, "model"),
        *describe(data_cls, "data"),
        *describe(TrainConfig, "train"),
        *describe(eval_cls, "eval"),
    ]
