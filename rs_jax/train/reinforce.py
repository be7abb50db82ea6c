"""REINFORCE and self-critical REINFORCE for sequence-level rewards, learners of the one trainer.

The policy samples whole outputs (captions, answers, boxes…) for a batch of
inputs; each output gets reward components scored on the host-free path
(jit-able) and the reward ``reward_weights · components``. With
``num_samples = K > 1`` samples per input and ``baseline="others"`` this is
self-critical sequence training with the mean-of-other-samples baseline used
by the paper's captioning experiments (Appendix D):

    Aᵢ = rᵢ − 1/(K−1) Σ_{j≠i} rⱼ

``baseline="batch"`` subtracts the batch mean, ``baseline="none"`` is plain REINFORCE.

An optional supervised term turns it into the paper's grounding objective (Appendix F,
"CE + 5 × REINFORCE"): ``loss = supervised_weight · supervised_loss + policy_weight · PG``
with ``supervised_loss`` e.g. the cross-entropy of the inputs' true outputs and
``policy_weight = 5``. Without it the loss is the plain policy gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
BASELINES = ("others", "batch", "none")


def leave_one_out_advantages(rewards: jax.Array) -> jax.Array:
    """(B, K) rewards of K samples per input -> rᵢ − mean of the other K−1 samples."""
    num_samples = rewards.shape[-1]
    if num_samples < 2:
        raise ValueError("The mean-of-others baseline needs num_samples >= 2.")
    others = (rewards.sum(axis=-1, keepdims=True) - rewards) / (num_samples - 1)
    return rewards - others


@dataclasses.dataclass(frozen=True)
class ReinforceLearner:
    """Sequence-level REINFORCE on a sampling policy.

    Attributes:
      sample_inputs: key -> a batch of inputs (pytree with leading axis B); with
        ``inputs_by_weights``, (key, reward_weights (C,)) -> the batch, so a run may draw more
        of the inputs its rewards score.
      sample_outputs: (params, inputs, key) -> outputs for each input (leading axis B).
      log_prob: (params, inputs, outputs) -> (B,) log-probability of each output.
      reward_components: (inputs, outputs) -> (B, C) reward components.
      num_samples: K outputs per input.
      baseline: "others" (self-critical), "batch" or "none".
      supervised_loss: optional (params, inputs) -> scalar loss added to the policy gradient
        (e.g. cross-entropy of the true outputs); it sees the minibatch's inputs, each input
        repeated K times.
      supervised_weight: weight of ``supervised_loss``.
      policy_weight: weight of the REINFORCE loss (5 in the paper's grounding).
      inputs_by_weights: ``sample_inputs`` also takes the run's reward weights.

    ``carry`` is unused (pass ``None``); the batch has B·K rows.
    """

    sample_inputs: Callable[..., PyTree]
    sample_outputs: Callable[[PyTree, PyTree, jax.Array], PyTree]
    log_prob: Callable[[PyTree, PyTree, PyTree], jax.Array]
    reward_components: Callable[[PyTree, PyTree], jax.Array]
    num_samples: int = 5
    baseline: str = "others"
    supervised_loss: Callable[[PyTree, PyTree], jax.Array] | None = None
    supervised_weight: float = 1.0
    policy_weight: float = 1.0
    inputs_by_weights: bool = False

    def __post_init__(self) -> None:
        if self.supervised_weight < 0 or self.policy_weight < 0:
            raise ValueError(
                f"supervised_weight and policy_weight must be >= 0; got {self.supervised_weight} and "
                f"{self.policy_weight}."
            )
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}.")
        if self.baseline == "others" and self.num_samples < 2:
            raise ValueError("The self-critical baseline ('others') needs num_samples >= 2.")

    def collect(self, params, carry, reward_weights, key):
        inputs_key, outputs_key = jax.random.split(key)
        inputs = (
            self.sample_inputs(inputs_key, reward_weights)
            if self.inputs_by_weights
            else self.sample_inputs(inputs_key)
        )
        repeated = jax.tree.map(lambda leaf: jnp.repeat(leaf, self.num_samples, axis=0), inputs)
        outputs = self.sample_outputs(params, repeated, outputs_key)
        components = self.reward_components(repeated, outputs)
        rewards = components @ reward_weights
        per_input = rewards.reshape(-1, self.num_samples)
        if self.baseline == "others":
            advantages = leave_one_out_advantages(per_input).reshape(-1)
        elif self.baseline == "batch":
            advantages = rewards - rewards.mean()
        else:
            advantages = rewards
        batch = {"inputs": repeated, "outputs": outputs, "advantages": advantages}
        metrics = {"reward": rewards.mean(), "components": components.mean(axis=0)}
        return batch, carry, metrics

    def loss(self, params, minibatch, key):
        del key
        log_probs = self.log_prob(params, minibatch["inputs"], minibatch["outputs"])
        advantages = jax.lax.stop_gradient(minibatch["advantages"])
        loss = -jnp.mean(advantages * log_probs)
        metrics = {"mean_log_prob": log_probs.mean()}
        if self.supervised_loss is None and self.policy_weight == 1.0:
            return loss, metrics
        total = self.policy_weight * loss
        metrics["policy_loss"] = loss
        if self.supervised_loss is not None:
            supervised = self.supervised_loss(params, minibatch["inputs"])
            total = total + self.supervised_weight * supervised
            metrics["supervised_loss"] = supervised
        return total, metrics
