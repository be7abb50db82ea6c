"""Supervised pre-training (cross-entropy, regression…) as a learner of the one trainer.

The paper's vision-language experiments start from a model trained by maximum
likelihood before any reward is seen; with this learner that phase runs through
the same ``make_update``/``fit`` (progress bar, JSONL, checkpoints, resume) as
the RL phases. ``reward_weights`` are ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

PyTree = Any


@dataclasses.dataclass(frozen=True)
class SupervisedLearner:
    """Minimizes ``loss_fn`` on batches drawn by ``sample_batch``.

    Attributes:
      sample_batch: key -> a batch (pytree whose leaves share a leading axis B), drawn
        inside jit (e.g. procedurally generated scenes).
      loss_fn: (params, minibatch, key) -> (scalar loss, metrics dict).

    ``carry`` is unused (pass ``None``).
    """

    sample_batch: Callable[[jax.Array], PyTree]
    loss_fn: Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]

    def collect(self, params, carry, reward_weights, key):
        del params, reward_weights
        return self.sample_batch(key), carry, {}

    def loss(self, params, minibatch, key):
        return self.loss_fn(params, minibatch, key)
