import pytest
from pydantic import ValidationError

from genrec.config import dump_config, list_recipes, load_config, parse_overrides, recipe_dict
from genrec.errors import ConfigError


def test_every_recipe_resolves():
    for name in list_recipes():
        if "model" not in recipe_dict(name):  # preference recipes take the model of their init_from run
            continue
        cfg = load_config(name)
        assert cfg.model.name and cfg.task == type(cfg.model).task


def test_overrides_are_typed_and_frozen():
    cfg = load_config("mf", ["model.dim=8", "train.lr=0.1", "eval.ks=[1,10]"], dataset="amazon-beauty")
    assert cfg.model.dim == 8 and cfg.train.lr == 0.1 and cfg.eval.ks == [1, 10]
    assert cfg.data.dataset == "amazon-beauty"
    with pytest.raises(ValidationError):
        cfg.model.dim = 3
    assert "dim: 8" in dump_config(cfg)


def test_parse_overrides_nests():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["model.nope=1"], "model.nope"),
        (["model.name=nope"], "unknown model"),
        (["eval.select_metric=ndcg@7"], "select_metric"),
        (["data.split=random"], "data.split"),
        (["novalue"], "key=value"),
    ],
)
def test_bad_config_is_rejected(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config("mf", overrides)


def test_yaml_recipe_with_base(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: mf\nmodel:\n  dim: 16\n")
    cfg = load_config(str(path))
    assert cfg.model.name == "mf" and cfg.model.dim == 16 and cfg.train.batch_size == 4096


def test_docs_config_reference_is_in_sync_with_the_typed_configs():
    """docs/config.md is the output of `genrec config --markdown` under its header: regenerate it with
    `(head -4 docs/config.md; genrec config --markdown) > new && mv new docs/config.md` after changing a config."""
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    r = subprocess.run(
        [sys.executable, "-m", "genrec", "config", "--markdown"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert doc.split("\n", 4)[4] == r.stdout


@pytest.mark.parametrize(
    "sets,expected",
    [
        (["train.epochz=1"], "config train.epochz: unknown key (did you mean train.epochs?)"),
        (["epochs=1"], "config epochs: unknown key (did you mean train.epochs?)"),
        (["trian.lr=1"], "config trian.lr: unknown key (did you mean train.lr?)"),
        (["model.dimm=8"], "config model.dimm: unknown key (did you mean model.dim?)"),
    ],
)
def test_unknown_set_keys_name_the_nearest_valid_one(sets, expected):
    from genrec.config import load_config
    from genrec.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config("mf", sets)
    assert str(err.value) == expected


def test_built_in_recipes_bound_their_work_by_epochs_not_minutes():
    from genrec.config import list_recipes, recipe_dict

    timed = [name for name in list_recipes() if recipe_dict(name).get("train", {}).get("max_minutes")]
    assert timed == []
    tiger = load_config("tiger-amazon-beauty")
    assert tiger.train.epochs == 14 and tiger.train.max_minutes is None
    assert load_config("textrec-amazon-beauty").train.epochs == 57
