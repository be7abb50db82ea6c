import dataclasses
import importlib
import pkgutil
import re

import pytest

import configs
from rs_jax import config as config_lib


def all_configs():
    for module_info in pkgutil.iter_modules(configs.__path__):
        module = importlib.import_module(f"configs.{module_info.name}")
        for preset in module.PRESETS:
            yield module_info.name, preset, module


@pytest.mark.parametrize("name, preset, module", list(all_configs()))
def test_every_shipped_config_loads_and_serializes(name, preset, module):
    config = module.get_config(preset)
    assert config_lib.to_dict(config)
    config_lib.validate(config)
    with pytest.raises(ValueError, match="Unknown preset"):
        module.get_config("nope")


def test_overrides():
    from configs.locomotion import get_config

    config = config_lib.override(
        get_config("cpu"),
        ["seed=3", "ppo.num_envs=32", "morl_mus=0,0.5,1", "ppo.normalize_advantages=false", "env=ant"],
    )
    assert (config.seed, config.ppo.num_envs, config.morl_mus, config.env) == (3, 32, (0, 0.5, 1), "ant")
    assert config.ppo.normalize_advantages is False
    with pytest.raises(ValueError, match=r"Unknown config key 'ppo\.num_env'"):
        config_lib.override(config, ["ppo.num_env=3"])
    with pytest.raises(ValueError, match="cannot parse 'many' as int"):
        config_lib.override(config, ["seed=many"])
    with pytest.raises(ValueError, match="key=value"):
        config_lib.override(config, ["seed"])
    with pytest.raises(ValueError, match="is a group"):
        config_lib.override(config, ["ppo=1"])


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_fields(config, prefix=""):
    """(dotted key, value) of every number and numeric tuple of a (nested) config."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from numeric_fields(value, f"{prefix}{field.name}.")
        elif _is_number(value) or (isinstance(value, tuple) and value and _is_number(value[0])):
            yield prefix + field.name, value


def invalid_value(key, value):
    """An out-of-range override for this field: -1 for counts, NaN for reals, a μ of 2."""
    if isinstance(value, tuple):
        return "[1e999]" if key.endswith("extrapolation") else "[2]" if key.endswith("morl_mus") else "[-1]"
    return "-1" if isinstance(value, int) else "nan"


CASES = [
    (name, key, invalid_value(key, value))
    for name, _, module in all_configs()
    if _ == "cpu"
    for key, value in numeric_fields(module.get_config("cpu"))
]


@pytest.mark.parametrize("name, key, bad", CASES)
def test_every_numeric_field_of_every_task_is_range_checked_by_name(name, key, bad):
    module = importlib.import_module(f"configs.{name}")
    config = config_lib.override(module.get_config("cpu"), [f"{key}={bad}"])
    with pytest.raises(ValueError, match=f"Config key '{re.escape(key)}' must"):
        config_lib.validate(config)


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("budget.finetune_updates=0", "must be >= 1"),
        ("rs_points=1", "must be >= 2"),
        ("budget.finetune_learning_rate=0", "must be > 0"),
        ("ppo.discount=1.5", r"must lie in \[0, 1\]"),
        ("rewards=positive,positive", "distinct rewards"),
        ("merge_rules.rules=ties,magic", "distinct rules among"),
        ("merge_rules.dare_drop_probability=1", r"must lie in \[0, 1\)"),
        ("merge_rules.ties_density=0", "must be > 0"),
    ],
)
def test_boundaries_and_cross_field_rules(assignment, message):
    from configs import text

    with pytest.raises(ValueError, match=message):
        config_lib.validate(config_lib.override(text.get_config("cpu"), [assignment]))


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("ppo.squash=sigmoid", r"'ppo.squash' must be one of \['clip', 'tanh'\]"),
        ("budget.value_warmup_learning_rate=0", "'budget.value_warmup_learning_rate' must be > 0"),
    ],
)
def test_named_choices_and_optional_floats_are_checked_before_any_work(assignment, message):
    from configs import locomotion

    with pytest.raises(ValueError, match=message):
        config_lib.validate(config_lib.override(locomotion.get_config("cpu"), [assignment]))


def test_an_optional_float_given_as_an_integer_is_a_float():
    from configs import locomotion

    config = config_lib.override(locomotion.get_config("cpu"), ["budget.value_warmup_learning_rate=3"])
    assert config.budget.value_warmup_learning_rate == 3.0
    assert isinstance(config.budget.value_warmup_learning_rate, float)


def test_a_task_without_an_expert_run_is_refused_before_any_work(tmp_path):
    import numpy as np

    from rs_jax import config as budget_config
    from rs_jax import pipeline

    task = pipeline.Task(
        name="toy",
        reward_names=("a", "b"),
        expert_names=("a", "b"),
        run_mus=np.array([[1.0, 0.0], [0.5, 0.5]]),
        run_weights=np.array([[1.0, 0.0], [0.5, 0.5]]),
        pretraining=pipeline.Pretrained(params=None),
        finetuning=None,
        budget=budget_config.BudgetConfig(1, 1, 1e-3, 1e-3),
        seed=0,
        rs_points=3,
    )
    with pytest.raises(ValueError, match=re.escape("No fine-tuning run has μ = [0.0, 1.0]")):
        pipeline.run(task, str(tmp_path / "run"), config=task.budget)
    assert not (tmp_path / "run").exists()
