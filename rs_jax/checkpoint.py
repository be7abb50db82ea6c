"""Expert checkpoints: orbax params plus a manifest that says what the expert is.

Layout of an expert directory (an orbax ``CheckpointManager`` root)::

    <dir>/<step>/params/     orbax PyTree of the params
    <dir>/<step>/manifest/   JSON Manifest

Orbax writes each step into a temporary folder and renames it on commit, so a
crash mid-save leaves the previous step as the latest readable one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
ITEMS = ("params", "manifest")
MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What an expert is.

    Attributes:
      reward: the reward it was fine-tuned on (e.g. "risky", "0.5*R1+0.5*R2", "soup").
      base_model: id of the shared initialization; soups only mix equal ids.
      step: training step of this checkpoint.
      config: JSON-serializable training config.
      param_count: number of scalars in the params (checked at restore).
      dtype: the params' dtype, or a comma-separated list if mixed (checked at restore).
      version: manifest format version.
    """

    reward: str
    base_model: str
    step: int = 0
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    param_count: int = 0
    dtype: str = ""
    version: int = MANIFEST_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {field.name for field in dataclasses.fields(cls)}
        missing = {"reward", "base_model"} - set(data)
        if missing:
            raise ValueError(f"Manifest lacks required fields {sorted(missing)}.")
        return cls(**{key: value for key, value in data.items() if key in known})


def param_count(params: PyTree) -> int:
    """Number of scalars in a pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def params_dtype(params: PyTree) -> str:
    """The leaves' dtype name, or the sorted comma-separated names if they differ."""
    return ",".join(sorted({str(np.asarray(leaf).dtype) for leaf in jax.tree.leaves(params)}))


def fingerprint(params: PyTree) -> str:
    """SHA-256 of leaf paths, shapes, dtypes and values: an id for a base model."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{array.shape}|{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _manager(directory: str | os.PathLike, create: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(create=create, max_to_keep=None)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=ITEMS)


def _read_manifest(manager: ocp.CheckpointManager, step: int, where: str) -> Manifest:
    try:
        restored = manager.restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
        data = restored.manifest
    except Exception as error:  # orbax raises several types for a missing/corrupt item
        raise ValueError(f"{where}: no readable manifest at step {step} ({error}).") from error
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the manifest at step {step} is not a JSON object.")
    return Manifest.from_dict(data)


def save_expert(
    directory: str | os.PathLike,
    params: PyTree,
    *,
    reward: str,
    base_model: str,
    step: int = 0,
    config: dict[str, Any] | None = None,
) -> Manifest:
    """Saves params and their manifest as step ``step`` of ``directory`` (atomically).

    Refuses (ValueError) a step that already exists, a directory that holds
    experts of another base model, and a config that is not JSON-serializable;
    nothing on disk is changed in those cases.
    """
    config = dict(config or {})
    try:
        json.dumps(config)
    except TypeError as error:
        raise ValueError(f"config must be JSON-serializable: {error}") from error
    manifest = Manifest(
        reward=reward,
        base_model=base_model,
        step=int(step),
        config=config,
        param_count=param_count(params),
        dtype=params_dtype(params),
    )
    where = os.fspath(directory)
    with _manager(directory, create=True) as manager:
        existing = manager.all_steps()
        if step in existing:
            raise ValueError(f"{where} already has step {step}; nothing was overwritten.")
        if existing:
            previous = _read_manifest(manager, max(existing), where)
            if previous.base_model != base_model:
                raise ValueError(
                    f"{where} holds an expert of base model {previous.base_model!r}, not "
                    f"{base_model!r}; save to another directory."
                )
        manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                manifest=ocp.args.JsonSave(dataclasses.asdict(manifest)),
            ),
        )
        manager.wait_until_finished()
    return manifest


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest committed step of an expert directory, or None if it has none."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory, create=False) as manager:
        return manager.latest_step()


def restore_expert(
    directory: str | os.PathLike,
    *,
    step: int | None = None,
    expected_base: str | None = None,
    target: PyTree | None = None,
) -> tuple[PyTree, Manifest]:
    """Restores an expert's params and manifest, checking both.

    Args:
      directory: an expert directory written by ``save_expert``.
      step: which step; default the latest committed one.
      expected_base: if given, refuse an expert of another base model.
      target: optional params pytree giving the structure/shapes to restore into.

    Raises:
      FileNotFoundError: no such directory or no committed step.
      ValueError: missing or inconsistent manifest, foreign base, corrupt arrays.
    """
    where = os.fspath(directory)
    if not os.path.isdir(where):
        raise FileNotFoundError(f"No expert checkpoint at {where}.")
    with _manager(directory, create=False) as manager:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise FileNotFoundError(
                f"{where} has no committed checkpoint"
                + (f" at step {step}" if step is not None else "")
                + f" (steps: {manager.all_steps()})."
            )
        manifest = _read_manifest(manager, step, where)
        if expected_base is not None and manifest.base_model != expected_base:
            raise ValueError(
                f"{where} was fine-tuned from base model {manifest.base_model!r}, not "
                f"{expected_base!r}: soups need experts from one shared initialization."
            )
        restore_args = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
        try:
            params = manager.restore(step, args=ocp.args.Composite(params=restore_args)).params
        except Exception as error:  # tensorstore/orbax errors on truncated or corrupt files
            raise ValueError(f"{where} step {step}: params are unreadable ({error}).") from error
    found = (param_count(params), params_dtype(params))
    if found != (manifest.param_count, manifest.dtype):
        raise ValueError(
            f"{where} step {step}: params have {found[0]} scalars of {found[1]} but the manifest "
            f"says {manifest.param_count} of {manifest.dtype}; the checkpoint is corrupt."
        )
    return params, manifest


def restore_experts(
    directories: Sequence[str | os.PathLike], *, expected_base: str | None = None
) -> tuple[list[PyTree], list[Manifest]]:
    """Restores several experts and checks that they share one base model."""
    if not directories:
        raise ValueError("No expert directories given.")
    experts, manifests = [], []
    for directory in directories:
        params, manifest = restore_expert(directory, expected_base=expected_base)
        expected_base = manifest.base_model
        experts.append(params)
        manifests.append(manifest)
    logging.info("Restored %d experts of base %s.", len(experts), expected_base)
    return experts, manifests
