"""Merge config files: ``python -m rs_jax.merge --config merge.yml`` (YAML, or JSON).

The fields are a documented subset of mergekit's, each the spelling of one CLI flag::

    merge_method: task_arithmetic      # --method (default linear)
    base_model: models/pretrained      # --base
    models:                            # --experts and --weights, in order
      - model: models/helpful
        parameters: {weight: 0.3}
      - model: models/harmless
        parameters: {weight: 0.7}
    parameters: {scale: 1.0}           # density, drop_probability, scale, seed
    dtype: bfloat16                    # --dtype (float32, float16, bfloat16)
    lora_mode: delta                   # --lora-mode (PEFT adapters: delta or factors)
    allow_extrapolation: false         # --allow-extrapolation
    out: merged/                       # --out

Paths are taken as written (relative to the working directory). Any other key is an error.
"""

from __future__ import annotations

import os

import yaml

FLAGS = {
    "merge_method": "--method",
    "base_model": "--base",
    "dtype": "--dtype",
    "lora_mode": "--lora-mode",
    "out": "--out",
}
PARAMETERS = {
    "density": "--density",
    "drop_probability": "--drop-probability",
    "scale": "--scale",
    "seed": "--seed",
}
KEYS = (*FLAGS, "models", "parameters", "allow_extrapolation")


def _mapping(value: object, where: str, known: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {type(value).__name__}.")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}.")
    return value


def to_argv(path: str | os.PathLike) -> list[str]:
    """The ``python -m rs_jax.merge`` arguments a config file stands for.

    Raises:
      ValueError: unreadable YAML, unknown keys, a model without a weight.
      FileNotFoundError: no such file.
    """
    where = os.fspath(path)
    with open(where) as handle:
        try:
            config = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"{where} is not valid YAML ({str(error).splitlines()[0]}).") from error
    config = _mapping(config, where, KEYS)
    models = config.get("models")
    if not isinstance(models, list) or not models:
        raise ValueError(f"{where}: 'models' must be a list of {{model: path, parameters: {{weight: λ}}}}.")
    experts, weights = [], []
    for position, entry in enumerate(models):
        entry = _mapping(entry, f"{where}: models[{position}]", ("model", "parameters"))
        parameters = _mapping(
            entry.get("parameters", {}), f"{where}: models[{position}].parameters", ("weight",)
        )
        if "model" not in entry or "weight" not in parameters:
            raise ValueError(f"{where}: models[{position}] needs 'model' and 'parameters: {{weight: λ}}'.")
        experts.append(str(entry["model"]))
        weights.append(str(parameters["weight"]))
    argv = ["--experts", *experts, "--weights", *weights]
    for key, flag in FLAGS.items():
        if config.get(key) is not None:
            argv += [flag, str(config[key])]
    for key, value in _mapping(
        config.get("parameters", {}), f"{where}: parameters", tuple(PARAMETERS)
    ).items():
        argv += [PARAMETERS[key], str(value)]
    if config.get("allow_extrapolation"):
        argv.append("--allow-extrapolation")
    return argv
