"""Merge rules as pure functions over expert pytrees (minimal: linear and task arithmetic only).

Every rule takes N experts (pytrees of one structure; a single array is a pytree) and
their weights, and returns one pytree like ``experts[0]``. The arithmetic runs in the
leaves' dtype: pass float32 leaves to accumulate in float32.

>>> import jax.numpy as jnp
>>> float(linear([jnp.float32(1.0), jnp.float32(3.0)], [0.25, 0.75]))
2.5
>>> float(task_arithmetic([jnp.float32(2.0), jnp.float32(4.0)], [1.0, 1.0], base=jnp.float32(1.0)))
5.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _weighted_sum(trees: Sequence[PyTree], weights: Sequence[float]) -> PyTree:
    return jax.tree.map(
        lambda *leaves: sum(w * leaf for w, leaf in zip(jnp.asarray(weights, leaves[0].dtype), leaves)),
        *trees,
    )


def linear(experts: Sequence[PyTree], weights: Sequence[float], *, base: PyTree | None = None) -> PyTree:
    """θ = Σᵢ wᵢθᵢ; with ``base``, θ = base + Σᵢ wᵢ(θᵢ − base) (the same when Σwᵢ = 1)."""
    if base is None:
        return _weighted_sum(experts, weights)
    return task_arithmetic(experts, weights, base=base)


def task_arithmetic(
    experts: Sequence[PyTree], weights: Sequence[float], *, base: PyTree, scale: float = 1.0
) -> PyTree:
    """θ = base + scale·Σᵢ wᵢ(θᵢ − base) (Ilharco et al., 2023: task vectors θᵢ − base)."""
    task_vectors = [jax.tree.map(jnp.subtract, expert, base) for expert in experts]
    return jax.tree.map(lambda b, t: b + scale * t, base, _weighted_sum(task_vectors, weights))


RULES: dict[str, Callable[..., PyTree]] = {"linear": linear, "task_arithmetic": task_arithmetic}
