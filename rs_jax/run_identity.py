"""What a run directory holds, recorded in ``identity.json``, so ``--out``/``--resume`` are checked first.

A run's identity is its task, every config field that defines its weights (all fields but
the budget and bookkeeping ones in ``BUDGET_FIELDS``: update counts, checkpoint interval,
evaluation and figure sizes and measures, the soup grid), and the fingerprint of a base model
or starting point loaded from disk. ``check_run_dir`` refuses, before anything is written:

* a non-empty ``--out`` that holds no run (no ``identity.json``) or a run of another task;
* a run of this task without ``--resume`` (nothing is overwritten);
* a ``--resume`` whose identity differs (naming the fields, e.g. ``seed: 0 in the run, 1 now``).

Changing only budget fields on ``--resume`` is allowed: training continues to the new
update counts and evaluation uses the new sizes. ``identity.json`` also records the
rs_jax version that wrote the run; it is not compared.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import rs_jax
from rs_jax import config as config_lib

IDENTITY_FILE = "identity.json"
# A dotted config key is a budget field if it, a group it lies in, or its field name (the last
# part, e.g. ``budget.finetune_updates``) is named here.
BUDGET_FIELDS = frozenset(
    {
        "pretrain_updates",
        "finetune_updates",
        "pretrain_steps",
        "finetune_steps",
        "checkpoint_every",
        "rs_points",
        "extrapolation",
        "eval_images",
        "eval_prompts",
        "eval_questions",
        "eval_objects",
        "eval_episodes",
        "eval_episode_length",
        "eval_deterministic",
        "sample_prompts",
        "figure_scenes",
        "figure_prompts",
        "figure_questions",
        "reference_images",
        "cider_reference_scenes",
        "feature_dim",
        "classifier",
    }
)


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """What defines a run's weights.

    Attributes:
      task: the task's name, e.g. "text".
      config: the weights-defining config fields, dotted key -> JSON value.
      base_fingerprint: ``checkpoint.fingerprint`` of a base model loaded from disk ("" when
        the base is built from the config).
      version: the rs_jax version that wrote the run (recorded, not compared).
    """

    task: str
    config: dict[str, Any]
    base_fingerprint: str = ""
    version: str = dataclasses.field(default_factory=lambda: rs_jax.__version__)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def is_budget_field(key: str, budget_fields: frozenset[str] = BUDGET_FIELDS) -> bool:
    """True if the dotted ``key``, one of its groups, or its field name is in ``budget_fields``."""
    parts = key.split(".")
    return parts[-1] in budget_fields or any(
        ".".join(parts[: end + 1]) in budget_fields for end in range(len(parts))
    )


def identify(
    task: str, config: Any, *, base_fingerprint: str = "", budget_fields: frozenset[str] = BUDGET_FIELDS
) -> RunIdentity:
    """The identity of a run of ``task`` with the (nested dataclass) ``config``."""
    fields = _flatten(config_lib.to_dict(config))
    kept = {key: value for key, value in fields.items() if not is_budget_field(key, budget_fields)}
    return RunIdentity(task, kept, base_fingerprint)


def differences(recorded: RunIdentity, current: RunIdentity) -> list[str]:
    """The weights-defining differences between a recorded run and the current one, in words."""
    found = []
    if recorded.base_fingerprint != current.base_fingerprint:
        found.append(
            f"base model fingerprint: {recorded.base_fingerprint[:16] or '(built from the config)'} in the "
            f"run, {current.base_fingerprint[:16] or '(built from the config)'} now"
        )
    for key in sorted(set(recorded.config) | set(current.config)):
        if key not in recorded.config:
            found.append(f"{key}: absent in the run, {current.config[key]!r} now")
        elif key not in current.config:
            found.append(f"{key}: {recorded.config[key]!r} in the run, absent now")
        elif recorded.config[key] != current.config[key]:
            found.append(f"{key}: {recorded.config[key]!r} in the run, {current.config[key]!r} now")
    return found


def read_identity(run_dir: str | os.PathLike) -> RunIdentity | None:
    """The identity recorded in ``run_dir``, None if it has no ``identity.json``.

    Raises:
      ValueError: an ``identity.json`` that is not a recorded identity (naming the file).
    """
    path = os.path.join(os.fspath(run_dir), IDENTITY_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            data = json.load(handle)
        return RunIdentity(
            task=str(data["task"]),
            config=dict(data["config"]),
            base_fingerprint=str(data.get("base_fingerprint", "")),
            version=str(data.get("version", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a run identity ({type(error).__name__}: {error}).") from error


def check_run_dir(run_dir: str | os.PathLike, identity: RunIdentity, *, resume: bool) -> None:
    """Refuses (one-line ValueError) a run directory this run must not write into; reads only.

    Accepted: a missing or empty ``run_dir``; with ``resume``, a run of the same identity
    (budget fields may differ). Refused: a path that is a file, a non-empty folder without
    ``identity.json`` or holding another task's run, a run of this task without ``resume``,
    and a ``resume`` whose identity differs (every differing field is named).
    """
    where = os.fspath(run_dir)
    if os.path.exists(where) and not os.path.isdir(where):
        raise ValueError(f"--out {where} is a file, not a run directory.")
    if not os.path.isdir(where) or not os.listdir(where):
        return
    recorded = read_identity(where)
    if recorded is None:
        raise ValueError(
            f"--out {where} is not empty and holds no rs_jax run ({IDENTITY_FILE} is missing); "
            "choose a new or empty folder."
        )
    if recorded.task != identity.task:
        raise ValueError(
            f"--out {where} holds a run of task {recorded.task!r}, not {identity.task!r}; "
            "choose another folder."
        )
    if not resume:
        raise ValueError(
            f"--out {where} already holds a {identity.task} run; pass --resume to continue it, "
            "or choose a new folder."
        )
    changed = differences(recorded, identity)
    if changed:
        raise ValueError(
            f"Cannot --resume {where}: its weights were defined otherwise ({'; '.join(changed)}); "
            "only budget fields may change on --resume. Start a new --out for this config."
        )


def write_identity(run_dir: str | os.PathLike, identity: RunIdentity) -> None:
    """Writes ``identity.json`` into ``run_dir`` (created if needed) atomically."""
    where = os.fspath(run_dir)
    os.makedirs(where, exist_ok=True)
    path = os.path.join(where, IDENTITY_FILE)
    with open(path + ".tmp", "w") as handle:
        json.dump(dataclasses.asdict(identity), handle, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
