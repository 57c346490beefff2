import json

import pytest

from tinyfm.config import RunConfig, list_recipes, load_recipe
from tinyfm.errors import ConfigError


def test_round_trip_through_json():
    cfg = load_recipe("fashion-mnist", {"train.epochs": 1, "model.kwargs": {"width": 0.5}})
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_precedence_defaults_recipe_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: 3\n  lr: 0.01\n")
    cfg = load_recipe(recipe, {"train.lr": 0.5, "train.batch_size": None})
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (3, 0.5, 64)


def test_builtin_recipes_load():
    assert "fashion-mnist" in list_recipes()
    for name in list_recipes():
        load_recipe(name)


@pytest.mark.parametrize("overrides, message", [
    ({"train.optimizer": "adagrad"}, "--optimizer: got 'adagrad', expected one of adam, adamw, sgd"),
    ({"train.epochs": -1}, "--epochs"),
    ({"train.device": "tpu"}, "--device"),
    ({"train.amp": "fp8"}, "--amp"),
    ({"train.epoch": 2}, "unknown setting train.epoch .did you mean epochs"),
    ({"data.train_subset": 0}, "--train-subset"),
])
def test_bad_settings_name_the_flag(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe("fashion-mnist", overrides)


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a built-in recipe"):
        load_recipe("fashon-mnist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
