"""Running observation statistics (mean/variance), as a pure pytree.

PPO normalizes observations with statistics gathered during pre-training; the
paper keeps them frozen during fine-tuning so every expert sees the same inputs
(and their weights stay interpolable).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RunningStats(NamedTuple):
    """Mean and (population) variance of the observations seen so far.

    Attributes:
      mean: (D,) float32.
      var: (D,) float32.
      count: () float32, number of observations merged.
    """

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def init_stats(size: int) -> RunningStats:
    """Statistics of zero observations of dimension ``size`` (normalizes to identity)."""
    return RunningStats(jnp.zeros(size), jnp.ones(size), jnp.zeros(()))


def update_stats(stats: RunningStats, observations: jax.Array) -> RunningStats:
    """Merges a batch (..., D) of observations (Chan et al.'s parallel variance update)."""
    batch = observations.reshape(-1, observations.shape[-1]).astype(jnp.float32)
    batch_count = jnp.asarray(batch.shape[0], jnp.float32)
    batch_mean = batch.mean(axis=0)
    batch_var = batch.var(axis=0)
    total = stats.count + batch_count
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * batch_count / total
    # With count 0 the prior var (ones) must not leak in: weight it by the old count.
    m2 = (
        stats.var * stats.count
        + batch_var * batch_count
        + jnp.square(delta) * stats.count * batch_count / total
    )
    return RunningStats(mean, m2 / total, total)


def normalize(stats: RunningStats, observations: jax.Array, clip: float = 10.0) -> jax.Array:
    """(obs - mean) / std, clipped to ±clip; identity before any update."""
    std = jnp.sqrt(jnp.maximum(stats.var, 1e-8))
    leading = (1,) * (observations.ndim - 1)
    return jnp.clip(
        (observations - stats.mean.reshape((*leading, -1))) / std.reshape((*leading, -1)), -clip, clip
    )
