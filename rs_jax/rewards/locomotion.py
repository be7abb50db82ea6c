"""Locomotion rewards from brax's own metrics (paper Appendix G).

Components c = [x_velocity, -Σa²] per env step; a reward is w · c:

* pre-training (brax default form): w = (1, 0.1)  ->  vx - 0.1·Σa²
* risky expert R₁:                  w = (1, 0)    ->  vx
* cautious expert R₂:               w = (1, 1)    ->  vx - Σa²
* MORL (1-μ)R₁ + μR₂:               w = (1, μ)

``env_reward`` instead makes the env's own reward (e.g. ant's forward + healthy - costs) the
single component, to train PPO on exactly what brax's ``ppo.train`` optimizes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

COMPONENT_NAMES = ("x_velocity", "neg_action_sq")
PRETRAIN_WEIGHTS = (1.0, 0.1)
RISKY_WEIGHTS = (1.0, 0.0)
CAUTIOUS_WEIGHTS = (1.0, 1.0)


def velocity_and_control(state: Any, action: jax.Array, next_state: Any) -> jax.Array:
    """(E, 2) components [x_velocity after the step, -Σ action²] of a batched brax step."""
    del state
    return jnp.stack([next_state.metrics["x_velocity"], -jnp.sum(jnp.square(action), axis=-1)], axis=-1)


def morl_weights(mu: float) -> tuple[float, float]:
    """Component weights of (1-μ)·R₁ + μ·R₂ with R₁ = vx, R₂ = vx - Σa²."""
    return (1.0, float(mu))


def risky_cautious(component_returns: jax.Array) -> jax.Array:
    """(..., 2) returns of [vx, -Σa²] -> (..., 2) returns of [R₁ risky, R₂ cautious]."""
    return jnp.stack(
        [component_returns[..., 0], component_returns[..., 0] + component_returns[..., 1]], axis=-1
    )


def env_reward(state: Any, action: jax.Array, next_state: Any) -> jax.Array:
    """(E, 1) the environment's own reward of a batched brax step as the one component (weights (1,))."""
    del state, action
    return next_state.reward[..., None]
