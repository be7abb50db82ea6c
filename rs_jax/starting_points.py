"""Pre-trained starting points: a task's pre-trained params kept once, with their recipe and hash.

``python -m tasks.starting_points build <task> --out DIR`` pre-trains a task once and writes::

    <out>/params.safetensors   one tensor per params leaf, named by its path (``a/b/0``)
    <out>/manifest.json        task, preset, overrides, seed, pre-training updates, the file's
                               SHA-256 and size, parameter count, quality, jax version, date,
                               wall time, and the command that rebuilds it

A task whose config sets ``starting_point`` skips pre-training (``pipeline.loaded_or_supervised``):
``load`` re-hashes the file against the manifest and fills the task's params tree (its leaf names,
shapes and dtypes); a missing or altered file is a one-line error naming it and the rebuild command.
``starting_point="shipped"`` names the task's starting point that ships with the package,
``rs_jax/pretrained/<task>`` (built by ``--preset pretrain``; the CPU presets start from it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from rs_jax import assets, checkpoint

PyTree = Any
PARAMS_FILE = "params.safetensors"
MANIFEST_FILE = "manifest.json"
SHIPPED = "shipped"
SHIPPED_ROOT = Path(__file__).parent / "pretrained"


def resolve(starting_point: str, task: str) -> str:
    """The directory of a ``starting_point`` setting: ``SHIPPED`` is the package's
    ``rs_jax/pretrained/<task>``; any other value is a directory already."""
    return str(SHIPPED_ROOT / task) if starting_point == SHIPPED else starting_point


def quality_text(quality: dict[str, dict[str, float | None]], separator: str = ", ") -> str:
    """A manifest's ``quality`` in words: ``name mean ± stderr`` (the mean alone where the
    measure has no standard error, e.g. a Fréchet distance), joined by ``separator``."""
    return separator.join(
        f"{name} {value['mean']:.3f}" + ("" if value["stderr"] is None else f" ± {value['stderr']:.3f}")
        for name, value in quality.items()
    )


def save(directory: str, params: PyTree, record: dict[str, Any]) -> dict[str, Any]:
    """Writes ``params`` and a manifest (``record`` plus the file's hash, size and parameter count)
    into ``directory``; returns the manifest."""
    os.makedirs(directory, exist_ok=True)
    tensors = {
        checkpoint.leaf_name(path): np.ascontiguousarray(np.asarray(leaf))
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    path = os.path.join(directory, PARAMS_FILE)
    save_file(tensors, path)
    manifest = {
        **record,
        "file": PARAMS_FILE,
        "sha256": assets.sha256_of(Path(path)),
        "bytes": os.path.getsize(path),
        "param_count": checkpoint.param_count(params),
    }
    with open(os.path.join(directory, MANIFEST_FILE), "w") as handle:
        json.dump(manifest, handle, indent=2)
    return manifest


def read_manifest(directory: str) -> dict[str, Any]:
    """The manifest of a starting point; ValueError naming what is missing."""
    path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"Starting point {directory}: no {MANIFEST_FILE} (build one with python -m "
            "tasks.starting_points build <task> --out DIR)."
        )
    with open(path) as handle:
        return json.load(handle)


def verify(directory: str) -> dict[str, Any]:
    """Re-hashes the params file against the manifest; returns the manifest.

    Raises:
      ValueError: the file is missing or its bytes differ, naming it and the rebuild command.
    """
    manifest = read_manifest(directory)
    path = os.path.join(directory, manifest["file"])
    rebuild = manifest.get("rebuild", "python -m tasks.starting_points build")
    if not os.path.isfile(path):
        raise ValueError(f"Starting point file {path} is missing; rebuild it with: {rebuild}")
    if assets.sha256_of(Path(path)) != manifest["sha256"]:
        raise ValueError(
            f"Starting point file {path} does not match its manifest's SHA-256 (altered or truncated); "
            f"rebuild it with: {rebuild}"
        )
    return manifest


def load(directory: str, like: PyTree, task: str) -> tuple[PyTree, dict[str, Any]]:
    """The params of the verified starting point in ``directory`` (or ``SHIPPED``), in the tree of
    ``like`` (arrays or shape structs), and the manifest they were verified against.

    Raises:
      ValueError: a missing or altered file (``verify``), another task's starting point, or leaves
        that differ in name, shape or dtype from ``like``.
    """
    directory = resolve(directory, task)
    manifest = verify(directory)
    if manifest.get("task") != task:
        raise ValueError(f"Starting point {directory} is {manifest.get('task')!r}'s, not {task!r}'s.")
    tensors = load_file(os.path.join(directory, manifest["file"]))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = [checkpoint.leaf_name(path) for path, _ in leaves]
    missing, extra = sorted(set(names) - tensors.keys()), sorted(tensors.keys() - set(names))
    if missing or extra:
        raise ValueError(
            f"Starting point {directory} does not fit this config's model: "
            f"{len(missing)} leaves missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})."
        )
    for name, (_, leaf) in zip(names, leaves):
        stored = tensors[name]
        if stored.shape != tuple(leaf.shape) or stored.dtype != leaf.dtype:
            raise ValueError(
                f"Starting point {directory}: leaf {name} is {stored.dtype}{list(stored.shape)}, "
                f"this config's model has {leaf.dtype}{list(leaf.shape)}."
            )
    return jax.tree_util.tree_unflatten(treedef, [tensors[name] for name in names]), manifest
