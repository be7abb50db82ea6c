import importlib
import pkgutil

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
