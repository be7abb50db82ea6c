"""The configs' shared fields (``TaskConfig``), budget and merge-rule groups, and command-line
overrides of the frozen configs.

``override(config, ["ppo.num_envs=128", "budget.finetune_updates=40"])`` returns a new config;
an unknown key or a value that does not parse as the field's type is a ValueError naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, get_args, get_type_hints


@dataclasses.dataclass(frozen=True)
class BudgetConfig:
    """Updates and optimizer of the two training phases; every task config has one as ``budget``.

    Both phases use Adam after global-norm gradient clipping (``pipeline.clipped_adam``).

    Attributes:
      pretrain_updates / finetune_updates: updates of each phase (0 pre-training updates: the
        init is the freshly initialized model).
      pretrain_learning_rate / finetune_learning_rate: Adam's step sizes.
      pretrain_cosine: pre-training's step size rises linearly from 0 over the first 2% of its
        optimizer steps to ``pretrain_learning_rate``, then decays to 0 along a cosine (False:
        constant).
      max_grad_norm: the clipping threshold.
      num_epochs / num_minibatches: passes over each update's batch and its split.
      pretrain_num_epochs / pretrain_num_minibatches: the same for pre-training (None: as
        fine-tuning).
      checkpoint_every: updates between checkpoints.
      value_warmup_updates: updates at the start of fine-tuning that train only the leaves the
        task's ``FineTuning.warmup_trainable`` marks (e.g. a freshly initialized value head) on
        rollouts of the unchanged policy, with an Adam state of their own; the
        ``finetune_updates`` follow with a fresh Adam state (0: no warm-up).
      value_warmup_learning_rate: Adam's step size in the warm-up (None: ``finetune_learning_rate``).
    """

    pretrain_updates: int
    finetune_updates: int
    pretrain_learning_rate: float
    finetune_learning_rate: float
    max_grad_norm: float = 1.0
    num_epochs: int = 1
    num_minibatches: int = 1
    pretrain_num_epochs: int | None = None
    pretrain_num_minibatches: int | None = None
    pretrain_cosine: bool = False
    checkpoint_every: int = 20
    value_warmup_updates: int = 0
    value_warmup_learning_rate: float | None = None


class MergeRuleSetting(NamedTuple):
    """How a ``MergeRulesConfig`` field sets one rule of ``rs_jax.merge_rules.RULES``.

    Attributes:
      title: the rule's name in front labels, e.g. "TIES".
      keyword: the rule's parameter, e.g. "density".
      field: the ``MergeRulesConfig`` field that holds its value, e.g. "ties_density".
      symbol: the parameter's name in front labels, e.g. "density" in "TIES (density 0.2)".
    """

    title: str
    keyword: str
    field: str
    symbol: str


MERGE_RULES = {
    "ties": MergeRuleSetting("TIES", "density", "ties_density", "density"),
    "dare": MergeRuleSetting("DARE", "drop_probability", "dare_drop_probability", "p"),
    "task_arithmetic": MergeRuleSetting("task arithmetic", "scale", "task_arithmetic_scale", "scale"),
}


@dataclasses.dataclass(frozen=True)
class MergeRulesConfig:
    """Merge rules (``rs_jax.merge_rules``) whose fronts every task evaluates beside RS, at the RS
    grid's λ, base θ₀ = the pre-trained init; every task config has one as ``merge_rules``.

    Attributes:
      rules: names among ``MERGE_RULES``; () evaluates none.
      ties_density: TIES's kept fraction of each task vector, per leaf (the TIES paper's top 20%).
      dare_drop_probability: DARE's p (mergekit's and PEFT's examples keep half: p = 0.5).
      task_arithmetic_scale: α of task arithmetic θ₀ + α Σᵢ λᵢτᵢ (α = 1 is the linear soup).
    """

    rules: tuple[str, ...] = ("ties", "dare")
    ties_density: float = 0.2
    dare_drop_probability: float = 0.5
    task_arithmetic_scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The fields every task config has (``configs/<task>.py`` subclasses it; ``pipeline.Task``
    reads them).

    Attributes:
      budget: the two training phases (each task config sets its default).
      seed: the run's seed (``pipeline.phase_keys``).
      rs_points: points per edge of the RS λ grid (N = 2: λ in steps of 1/(rs_points − 1)).
      merge_rules: the merge rules whose fronts are evaluated beside RS.
    """

    budget: BudgetConfig
    seed: int = 0
    rs_points: int = 11
    merge_rules: MergeRulesConfig = dataclasses.field(default_factory=MergeRulesConfig)


def _parse(raw: str, current: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() not in {"true", "false", "1", "0"}:
                raise ValueError
            return raw.lower() in {"true", "1"}
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, str):
            return raw
        if isinstance(current, tuple):
            if current and all(isinstance(item, str) for item in current) and not raw.startswith("["):
                return tuple(item.strip() for item in raw.split(",") if item.strip())
            values = json.loads(raw if raw.startswith("[") else f"[{raw}]")
            return tuple(values)
        if current is None:
            return json.loads(raw)
    except (ValueError, json.JSONDecodeError) as error:
        raise ValueError(f"Config key {key!r}: cannot parse {raw!r} as {type(current).__name__}.") from error
    raise ValueError(f"Config key {key!r} holds a {type(current).__name__}; it cannot be set from the CLI.")


def override(config: Any, assignments: Sequence[str]) -> Any:
    """Applies ``key=value`` assignments (dotted keys reach nested dataclasses)."""
    for assignment in assignments:
        key, separator, raw = assignment.partition("=")
        if not separator:
            raise ValueError(f"Override {assignment!r} must look like key=value.")
        config = _set(config, key.strip().split("."), raw.strip(), key.strip())
    return config


def _set(config: Any, path: list[str], raw: str, full_key: str) -> Any:
    names = {field.name for field in dataclasses.fields(config)}
    if path[0] not in names:
        raise ValueError(f"Unknown config key {full_key!r}; known keys here: {sorted(names)}.")
    current = getattr(config, path[0])
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"Config key {full_key!r}: {path[0]!r} has no sub-keys.")
        value = _set(current, path[1:], raw, full_key)
    elif dataclasses.is_dataclass(current):
        raise ValueError(f"Config key {full_key!r} is a group; set its fields, e.g. {full_key}.<field>=…")
    else:
        value = _parse(raw, current, full_key)
        declared = get_args(get_type_hints(type(config))[path[0]])
        if current is None and type(value) is int and float in declared:
            value = float(value)  # an optional float given as "0" or "3"
    return dataclasses.replace(config, **{path[0]: value})


# Field names (the last part of a dotted key) whose values have other ranges than the defaults:
# every int ≥ 1 and every float finite and ≥ 0.
ZERO_ALLOWED = frozenset(
    {
        "pretrain_updates",
        "checkpoint_every",
        "value_warmup_updates",
        "seed",
        "max_images",
        "max_expressions",
        "max_questions",
        "prompt_style",
        "eval_objects",
        "prompt_words",
    }
)
AT_LEAST_TWO = frozenset({"rs_points"})
STRICTLY_POSITIVE = frozenset(
    {
        "pretrain_learning_rate",
        "finetune_learning_rate",
        "value_warmup_learning_rate",
        "max_grad_norm",
        "lora_alpha",
        "clip_epsilon",
        "kl_target",
        "reward_scaling",
        "value_clip",
        "encoder_init_scale",
        "keep_fraction",
        "ties_density",
        "task_arithmetic_scale",
    }
)
UNIT_INTERVAL = frozenset(
    {
        "ties_density",
        "keep_fraction",
        "uncond_probability",
        "iou_threshold",
        "discount",
        "gae_lambda",
        "rewarded_share",
    }
)
UNIT_INTERVAL_TUPLES = frozenset({"morl_mus"})


def _check_number(key: str, value: Any) -> None:
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        low = 2 if name in AT_LEAST_TWO else 0 if name in ZERO_ALLOWED else 1
        if value < low:
            raise ValueError(f"Config key {key!r} must be >= {low}; got {value}.")
        return
    if not math.isfinite(value):
        raise ValueError(f"Config key {key!r} must be finite; got {value}.")
    if value < 0 or (name in STRICTLY_POSITIVE and value == 0):
        raise ValueError(
            f"Config key {key!r} must be {'> 0' if name in STRICTLY_POSITIVE else '>= 0'}; got {value}."
        )
    if name in UNIT_INTERVAL and value > 1:
        raise ValueError(f"Config key {key!r} must lie in [0, 1]; got {value}.")


def _check_merge_rules(config: MergeRulesConfig, prefix: str) -> None:
    unknown = [rule for rule in config.rules if rule not in MERGE_RULES]
    if unknown or len(set(config.rules)) != len(config.rules):
        raise ValueError(
            f"Config key {prefix + 'rules'!r} must name distinct rules among {list(MERGE_RULES)}; "
            f"got {list(config.rules)}."
        )
    if not 0 <= config.dare_drop_probability < 1:
        raise ValueError(
            f"Config key {prefix + 'dare_drop_probability'!r} must lie in [0, 1); "
            f"got {config.dare_drop_probability}."
        )


def validate(config: Any, prefix: str = "") -> None:
    """Checks every field's range before any work: ints ≥ 1 (≥ 0 or ≥ 2 where named above), floats
    finite and ≥ 0 (> 0 or in [0, 1] where named above), numbers in tuples likewise (λ extrapolation
    values only finite), μ in [0, 1], names of rewards distinct.

    Raises:
      ValueError: naming the ``--set`` key, its range and the value.
    """
    if isinstance(config, MergeRulesConfig):
        _check_merge_rules(config, prefix)
    for field in dataclasses.fields(config):
        key, value = prefix + field.name, getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            validate(value, key + ".")
        elif isinstance(value, int | float):
            _check_number(key, value)
        elif isinstance(value, tuple):
            if field.name == "rewards" and len(set(value)) != len(value):
                raise ValueError(f"Config key {key!r} must name distinct rewards; got {list(value)}.")
            for item in value:
                if isinstance(item, str):
                    continue
                if field.name == "extrapolation":
                    if not math.isfinite(item):
                        raise ValueError(f"Config key {key!r} must hold finite numbers; got {list(value)}.")
                elif field.name in UNIT_INTERVAL_TUPLES and not 0 <= item <= 1:
                    raise ValueError(f"Config key {key!r} must hold numbers in [0, 1]; got {list(value)}.")
                else:
                    _check_number(key, item)


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a (nested) dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))
