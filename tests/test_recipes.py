"""`--recipe`: one switch of training settings, the same for every model, in train.py and reproduce.py alike."""

import dataclasses
import math

import pytest
from torch import nn

import reproduce
import train
from configuration_hyfuser import HyFusERConfig
from hyfuser.training import TRAINING_RECIPES
from modeling_hyfuser import TRAINABLE_MODELS


def _settings(parsed) -> dict:
    return {
        name: value
        for arguments in parsed
        for name, value in dataclasses.asdict(arguments).items()
        if name != "recipe"
    }


def _changed(before: dict, after: dict) -> dict:
    return {name: after[name] for name in before if before[name] != after[name]}


@pytest.mark.parametrize("dataset", ["kemdy", "demo"])
@pytest.mark.parametrize("model", list(TRAINABLE_MODELS))
def test_train_py_s_stable_recipe_changes_exactly_its_documented_settings_and_paper_none(dataset, model):
    argv = ["--dataset", dataset, "--model", model] + (["--kemdy20_dir", "KEMDy20"] if dataset == "kemdy" else [])
    today = _settings(train.parse_arguments(argv))
    assert _settings(train.parse_arguments([*argv, "--recipe", "paper"])) == today
    stable = _settings(train.parse_arguments([*argv, "--recipe", "stable"]))
    assert _changed(today, stable) == TRAINING_RECIPES["stable"]


@pytest.mark.parametrize("dataset", ["kemdy", "demo"])
def test_reproduce_py_s_stable_recipe_changes_exactly_its_documented_settings_and_paper_none(dataset):
    argv = ["--dataset", dataset, "--models", "all"] + (["--kemdy20_dir", "KEMDy20"] if dataset == "kemdy" else [])
    today = _settings(reproduce.parse_arguments(argv))
    assert _settings(reproduce.parse_arguments([*argv, "--recipe", "paper"])) == today
    stable = _settings(reproduce.parse_arguments([*argv, "--recipe", "stable"]))
    assert _changed(today, stable) == TRAINING_RECIPES["stable"]


def test_an_explicit_flag_wins_over_the_recipe():
    argv = ["--dataset", "demo", "--recipe", "stable", "--early_stopping_patience", "5"]
    assert reproduce.parse_arguments(argv)[0].early_stopping_patience == 5
    assert train.parse_arguments(argv)[0].early_stopping_patience == 5


@pytest.mark.parametrize("model", list(TRAINABLE_MODELS))
def test_the_glorot_initializer_starts_every_linear_and_convolution_of_every_model_at_glorot_scale(model):
    config = HyFusERConfig(hidden_size=32, sequence_length=8, intermediate_size=64, initializer="glorot_uniform")
    glorot = TRAINABLE_MODELS[model](config)
    layers = [module for module in glorot.modules() if isinstance(module, (nn.Linear, nn.Conv1d))]
    assert layers
    for layer in layers:
        receptive = layer.weight[0, 0].numel()  # 1 for a linear, the kernel width for a convolution
        fan_in, fan_out = layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound
        assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.25)
        assert not layer.bias.any()
    normal = TRAINABLE_MODELS[model](HyFusERConfig(hidden_size=32, sequence_length=8, intermediate_size=64))
    for layer in normal.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d)):
            assert layer.weight.std().item() == pytest.approx(normal.config.initializer_range, rel=0.25)

