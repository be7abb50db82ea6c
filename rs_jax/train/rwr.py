"""Reward-weighted regression (RWR) on an offline set, a learner of the one trainer.

Paper Appendix E (text-to-image): generate images with the pre-trained model, score them, keep
the best ``keep_fraction`` (50%), rescale the kept rewards so that their minimum is 0 and their
mean is 1, and fine-tune on the reward-weighted loss (Eq. 19 for diffusion)

    L = E_{x₀ kept} [ r(x₀) · ℓ_θ(x₀) ],   ℓ_θ = ‖ε_θ(x_t, t, Q) − ε‖² for a denoiser.

The offline set lives in the learner's ``carry`` (a jit argument, never a closed-over
constant): ``{"examples": pytree with leading axis N, "components": (N, C) reward components}``.
A run's reward is ``reward_weights · components``, computed *before* the filtering, so a one-hot
weighting trains an expert and any other weighting μ is the MORL baseline on the scalarized
reward. With ``standardize`` each component is z-scored over the set first: filtering and the
min-0/mean-1 rescaling make an expert's training invariant to its reward's scale and offset,
and z-scoring extends that to the mixtures μ (otherwise the reward with the larger spread would
dominate every MORL run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def rescale_rewards(rewards: jax.Array) -> jax.Array:
    """(K,) rewards -> (K,) weights with min 0 and mean 1 (all ones if the rewards are all equal)."""
    shifted = rewards - rewards.min()
    mean = shifted.mean()
    return jnp.where(mean > 0, shifted / jnp.where(mean > 0, mean, 1.0), jnp.ones_like(rewards))


def keep_count(size: int, keep_fraction: float) -> int:
    """How many of ``size`` examples the filter keeps: round(fraction · size), at least 1."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1]; got {keep_fraction}.")
    return max(1, round(keep_fraction * size))


def filter_and_rescale(rewards: jax.Array, keep_fraction: float) -> tuple[jax.Array, jax.Array]:
    """The best ``keep_fraction`` of (N,) rewards and their RWR weights.

    Returns:
      kept: (K,) indices of the kept examples, best first (ties: lower index first).
      weights: (K,) their rescaled rewards (min 0, mean 1).
    """
    kept = jnp.argsort(-rewards, stable=True)[: keep_count(rewards.shape[0], keep_fraction)]
    return kept, rescale_rewards(rewards[kept])


def standardize_components(components: jax.Array) -> jax.Array:
    """(N, C) -> each column minus its mean over N, divided by its standard deviation (if > 0)."""
    std = components.std(axis=0, keepdims=True)
    return (components - components.mean(axis=0, keepdims=True)) / jnp.where(std > 0, std, 1.0)


def offline_set(examples: PyTree, components: jax.Array) -> dict[str, Any]:
    """The learner's carry from N examples (leading axis N) and their (N, C) reward components."""
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(examples)}
    if sizes != {components.shape[0]} or components.ndim != 2:
        raise ValueError(
            f"examples (leading axes {sorted(sizes)}) and components {components.shape} must share N, "
            "and components must be (N, C)."
        )
    return {"examples": examples, "components": jnp.asarray(components, jnp.float32)}


@dataclasses.dataclass(frozen=True)
class RWRLearner:
    """Reward-weighted regression on the offline set held in ``carry`` (see ``offline_set``).

    Attributes:
      example_loss: (params, examples, key) -> (B,) per-example loss ℓ_θ (e.g. noise prediction).
      batch_size: examples drawn (uniformly, with replacement) from the kept set per update.
      keep_fraction: fraction of the set kept by the filter (0.5 in the paper).
      standardize: z-score each reward component over the set before weighting them.
    """

    example_loss: Callable[[PyTree, PyTree, jax.Array], jax.Array]
    batch_size: int
    keep_fraction: float = 0.5
    standardize: bool = True

    def __post_init__(self) -> None:
        keep_count(1, self.keep_fraction)  # validates the fraction
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}.")

    def scalarized(self, components: jax.Array, reward_weights: jax.Array) -> jax.Array:
        """(N, C) components -> (N,) the run's reward μ · (standardized) components."""
        if self.standardize:
            components = standardize_components(components)
        return components @ reward_weights

    def collect(self, params, carry, reward_weights, key):
        del params  # offline: the set was generated once, by the pre-trained model
        components = carry["components"]
        kept, weights = filter_and_rescale(self.scalarized(components, reward_weights), self.keep_fraction)
        rows = jax.random.randint(key, (self.batch_size,), 0, kept.shape[0])
        chosen = kept[rows]
        batch = {
            "examples": jax.tree.map(lambda leaf: leaf[chosen], carry["examples"]),
            "weights": weights[rows],
        }
        metrics = {
            "reward": (components[kept] @ reward_weights).mean(),
            "components": components[kept].mean(axis=0),
        }
        return batch, carry, metrics

    def loss(self, params, minibatch, key):
        losses = self.example_loss(params, minibatch["examples"], key)
        weights = jax.lax.stop_gradient(minibatch["weights"])
        return jnp.mean(weights * losses), {"unweighted_loss": losses.mean()}
