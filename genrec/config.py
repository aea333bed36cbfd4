"""Typed, frozen run configuration: recipes (YAML) + `--set key=value` overrides, unknown keys rejected.

The model section is validated against the chosen model's own config class (looked up by `model.name`), so
`--set model.dim=64` is checked by the model that uses it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from genrec.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(StrictModel):
    """Base of every model's config; subclasses add their hyper-parameters and fix `name`."""

    name: str
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DataConfig(StrictModel):
    dataset: str = "ml-100k"
    data_dir: str | None = None
    download: bool = Field(False, description="fetch ml-100k / ml-1m from GroupLens (md5-checked) if missing")
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical name -> column in the user's file"
    )
    items_path: str | None = None
    unordered_users: Literal["drop", "keep"] = "drop"
    dedup: Literal["none", "first", "last"] = "none"
    kcore: int = Field(0, ge=0)
    min_seq_len: int = Field(0, ge=0)
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

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must be positive integers")
        return sorted(set(ks))

    @model_validator(mode="after")
    def _selectable(self) -> EvalConfig:
        name, _, k = self.select_metric.partition("@")
        if name not in ("recall", "hr", "ndcg", "mrr") or (k and (not k.isdigit() or int(k) not in self.ks)):
            raise ValueError(
                f"select_metric {self.select_metric!r} must be recall/hr/ndcg@K with K in ks, or mrr"
            )
        return self


class TrainConfig(StrictModel):
    epochs: int = Field(30, ge=0)
    batch_size: int = Field(256, ge=1)
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
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights (updated every step with this decay) and "
        "validate, select and save the average instead of the live weights",
    )


class RunConfig(StrictModel):
    model: SerializeAsAny[ModelConfig]
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _dispatch(cls, value: Any) -> ModelConfig:
        from genrec.models import MODELS

        if isinstance(value, ModelConfig):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError(f"model needs a name, one of {sorted(MODELS)}")
        if value["name"] not in MODELS:
            raise ValueError(f"unknown model {value['name']!r}; known: {', '.join(sorted(MODELS))}")
        return MODELS[value["name"]].config_class.model_validate(value)


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


def config_keys(cls: type[BaseModel], prefix: str = "", model_name: str | None = None) -> list[str]:
    """Every dotted key a config class accepts (nested sections followed; `model` as the named model's config)."""
    keys = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        sub = field.annotation
        if name == "model":  # a registry picks the class by name (retrieval models or rankers)
            sub = model_classes().get(model_name)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys += config_keys(sub, f"{key}.")
        else:
            keys.append(key)
    return keys


def model_classes() -> dict[str, type[BaseModel]]:
    """Config class of every model and ranker, by name."""
    from genrec.models import MODELS
    from genrec.models.ranking import RANKERS

    return {name: cls.config_class for name, cls in {**MODELS, **RANKERS}.items()}


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
        keys = config_keys(RunConfig, model_name=model.get("name") if isinstance(model, dict) else None)
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
