import json

import pytest

from tinyfm.config import RunConfig, list_recipes, load_recipe, parse_set
from tinyfm.errors import ConfigError


def test_round_trip_through_json():
    cfg = load_recipe("fashion-mnist", {"train.epochs": 1, "model.kwargs": {"width": 0.5}})
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_overrides_are_copied_so_a_nested_key_never_writes_into_the_callers_dict():
    base = {"model.kwargs": {}}
    cfg = load_recipe("reviews", {**base, "model.name": "seed-text", "model.kwargs.init": "torch"})
    assert cfg.model.kwargs == {"init": "torch"}
    assert base == {"model.kwargs": {}}  # reused for the next run, it still means "no kwargs"
    assert load_recipe("reviews", {**base, "model.name": "seed-text"}).model.kwargs == {}


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


def test_set_overrides_are_read_as_yaml():
    overrides = parse_set(["train.lr=1e-3", "train.channels_last=true", "compress.variants=[]",
                           "model.name=tiny-resnet", "data.train_subset=1000"])
    cfg = load_recipe("fashion-mnist", overrides)
    assert (cfg.train.lr, cfg.train.channels_last, cfg.compress.variants) == (1e-3, True, [])
    assert (cfg.model.name, cfg.data.train_subset) == ("tiny-resnet", 1000)


@pytest.mark.parametrize(("items", "message"), [
    (["train.epochs"], "expected KEY=VALUE"),
    (["=3"], "expected KEY=VALUE"),
    (["train..epochs=3"], "expected KEY=VALUE"),
    (["train.epochs=[1"], "not valid YAML"),
])
def test_bad_set_items_are_clear_errors(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_set(items)


def test_set_into_a_value_or_an_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="train.epochs is a value"):
        load_recipe("fashion-mnist", parse_set(["train.epochs.x=1"]))
    with pytest.raises(ConfigError, match="unknown setting train.epoch"):
        load_recipe("fashion-mnist", parse_set(["train.epoch=1"]))


@pytest.mark.parametrize(("item", "message"), [
    ("train.epochs=1.5", "train.epochs: got 1.5, expected an integer"),
    ("train.epochs=true", "train.epochs: got True, expected an integer"),
    ("train.device=5", "train.device: got 5, expected a string"),
    ("model.kwargs=3", "model.kwargs: got 3, expected a mapping"),
    ("compress.variants=3", "compress.variants: got 3, expected a list"),
    ("train.lr=[1, 2]", "train.lr: got [1, 2], expected a number"),
    ("task=bogus", "task: got 'bogus', expected one of image-classification, text-classification"),
])
def test_values_of_the_wrong_type_name_the_field(item, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_recipe("fashion-mnist", parse_set([item]))


def test_yaml_off_is_the_word_off_where_a_string_belongs():
    assert load_recipe("fashion-mnist", parse_set(["train.amp=off"])).train.amp == "off"


def test_pass_settings_of_the_wrong_type_name_the_pass_and_field():
    from tinyfm.compress import pass_config

    with pytest.raises(ConfigError, match="compress.prune.lr_scale: got 'abc', expected a number"):
        pass_config("prune", {"lr_scale": "abc"})
    with pytest.raises(ConfigError, match="compress.quantize.exclude: got 5, expected a list"):
        pass_config("quantize", {"exclude": 5})


def test_unreadable_recipes_are_one_line_errors(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe train: {}")
    with pytest.raises(ConfigError, match="not UTF-8 text \\(bad byte at offset 0\\)"):
        load_recipe(binary)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: [1\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML at line 2") as info:
        load_recipe(broken)
    assert "\n" not in str(info.value)
