"""PPO for continuous control on brax-style environments, as a learner of the one trainer.

The environment follows brax's ``Env`` API (``reset(key) -> State``,
``step(State, action) -> State``, batched over envs, with auto-reset and
``state.info["truncation"]``, i.e. ``brax.envs.training.wrap``). The reward is
``reward_weights · reward_components(state, action, next_state)``, so one
learner trains the pre-trained policy, each expert and each MORL μ: only the
(vmappable) ``reward_weights`` change.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rs_jax.train import normalizer

PyTree = Any
RewardComponents = Callable[[Any, jax.Array, Any], jax.Array]  # (state, action, next_state) -> (E, C)
LOG_2PI_E = math.log(2 * math.pi * math.e)


SQUASHES = ("clip", "tanh")


def check_squash(squash: str) -> None:
    """ValueError unless ``squash`` names one of ``SQUASHES``."""
    if squash not in SQUASHES:
        raise ValueError(f"Config key 'ppo.squash' must be one of {list(SQUASHES)}; got {squash!r}.")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (names as in brax's ``ppo.train``).

    Attributes:
      num_envs: parallel environments.
      unroll_length: steps per env per update; batch size = num_envs × unroll_length.
      discount: γ.
      gae_lambda: λ of GAE.
      clip_epsilon: PPO ratio clip.
      value_coef: weight of the value loss.
      entropy_coef: weight of the entropy bonus.
      reward_scaling: multiplies rewards before GAE.
      normalize_advantages: whiten advantages per minibatch.
      normalize_observations: keep running observation statistics.
      freeze_normalizer: use the statistics without updating them (fine-tuning).
      policy_layers / value_layers: hidden sizes of the MLPs.
      bound_coef: weight of a penalty on the policy mean outside the executed range [-1, 1],
        mean over the batch of Σ max(|mean| - 1, 0)² (actions are clipped to [-1, 1] before the
        env steps, so outside it the reward gives the mean no gradient back; 0: no penalty).
      squash: how a Gaussian sample becomes the executed action in [-1, 1]: "clip", or "tanh"
        (brax's ``NormalTanhDistribution``; the PPO ratio is that of the Gaussian samples, the
        tanh Jacobian cancelling in it).
    """

    num_envs: int = 64
    unroll_length: int = 10
    discount: float = 0.97
    gae_lambda: float = 0.95
    clip_epsilon: float = 0.3
    value_coef: float = 0.5
    entropy_coef: float = 1e-3
    reward_scaling: float = 1.0
    normalize_advantages: bool = True
    normalize_observations: bool = True
    freeze_normalizer: bool = False
    policy_layers: Sequence[int] = (64, 64)
    value_layers: Sequence[int] = (64, 64)
    bound_coef: float = 0.0
    squash: str = "clip"

    def __post_init__(self) -> None:
        check_squash(self.squash)


class MLP(nn.Module):
    """Swish MLP with a linear output of size ``out``."""

    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        hidden = inputs
        for width in self.hidden:
            hidden = nn.swish(nn.Dense(width)(hidden))
        return nn.Dense(self.out, kernel_init=nn.initializers.variance_scaling(0.01, "fan_in", "normal"))(
            hidden
        )


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian over actions: an MLP mean and a state-independent log-std."""

    hidden: Sequence[int]
    action_size: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = MLP(self.hidden, self.action_size)(observations)
        log_std = self.param("log_std", nn.initializers.constant(-0.5), (self.action_size,))
        return mean, jnp.broadcast_to(log_std, mean.shape)


def executed_actions(actions: jax.Array, squash: str) -> jax.Array:
    """(..., A) Gaussian samples (or means) -> the actions the env executes, in [-1, 1]."""
    check_squash(squash)
    return jnp.tanh(actions) if squash == "tanh" else jnp.clip(actions, -1.0, 1.0)


def gaussian_log_prob(actions: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log N(actions; mean, exp(log_std)²) summed over the last axis."""
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gae(
    rewards: jax.Array,
    values: jax.Array,
    bootstrap_value: jax.Array,
    terminations: jax.Array,
    truncations: jax.Array,
    discount: float,
    gae_lambda: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation over time-major arrays.

    Args:
      rewards, values, terminations, truncations: (T, E); terminations/truncations
        are 1.0 where the episode ended at that step (truncation: time limit, the
        env auto-reset, so that step's TD error is masked rather than cut).
      bootstrap_value: (E,) value of the observation after the last step.

    Returns:
      (advantages, value_targets), both (T, E).
    """
    next_values = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
    keep = 1.0 - truncations
    deltas = (rewards + discount * (1.0 - terminations) * next_values - values) * keep

    def backward(advantage, inputs):
        delta, termination, mask = inputs
        advantage = delta + discount * gae_lambda * (1.0 - termination) * mask * advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(bootstrap_value), (deltas, terminations, keep), reverse=True
    )
    return advantages, advantages + values


@dataclasses.dataclass(frozen=True)
class PPOLearner:
    """PPO on a batched brax-style env (see module docstring).

    ``carry`` is ``(env_state, obs_stats)``; ``params`` is ``{"policy", "value"}``.
    """

    env: Any
    reward_components: RewardComponents
    observation_size: int
    action_size: int
    config: PPOConfig = PPOConfig()

    @property
    def policy(self) -> GaussianPolicy:
        return GaussianPolicy(tuple(self.config.policy_layers), self.action_size)

    @property
    def value(self) -> MLP:
        return MLP(tuple(self.config.value_layers), 1)

    def init_params(self, key: jax.Array) -> PyTree:
        policy_key, value_key = jax.random.split(key)
        dummy = jnp.zeros((1, self.observation_size))
        return {
            "policy": self.policy.init(policy_key, dummy)["params"],
            "value": self.value.init(value_key, dummy)["params"],
        }

    def init_carry(self, key: jax.Array) -> tuple[Any, normalizer.RunningStats]:
        return self.env.reset(jax.random.split(key, self.config.num_envs)), normalizer.init_stats(
            self.observation_size
        )

    def act(self, params: PyTree, stats: normalizer.RunningStats, observations: jax.Array) -> tuple:
        mean, log_std = self.policy.apply(
            {"params": params["policy"]}, normalizer.normalize(stats, observations)
        )
        return mean, log_std

    def _values(self, params: PyTree, stats: normalizer.RunningStats, observations: jax.Array) -> jax.Array:
        normalized = normalizer.normalize(stats, observations)
        return self.value.apply({"params": params["value"]}, normalized)[..., 0]

    def collect(self, params, carry, reward_weights, key):
        """One run's rollout of ``num_envs × unroll_length`` steps: ``collect_runs`` with M = 1."""
        batch, carry, metrics = self.collect_runs(
            *jax.tree.map(lambda leaf: leaf[None], (params, carry, reward_weights, key))
        )
        return jax.tree.map(lambda leaf: leaf[0], (batch, carry, metrics))

    def collect_runs(self, params, carry, reward_weights, keys):
        """M runs' rollouts, equal to ``jax.vmap(collect)``, with the physics of all runs in one batch.

        The networks, the sampling and the advantages are vmapped over the runs; the env steps
        one batch of M·E environments. Measured on a shared 2-core CPU (jax 0.9.2, brax 0.14.2,
        positional backend, 10 steps of 2 × 256 envs, process CPU seconds, median of 5):
        halfcheetah 1.40 s folded vs 1.43 s vmapped over (M, E) vs 0.79 s for one run of 256;
        ant 0.754 vs 0.767 vs 0.387 s.

        Args:
          params, carry: every leaf with a leading axis M (env states: (M, E, ...)).
          reward_weights: (M, C).
          keys: (M, 2) one PRNG key per run.

        Returns:
          (batch, carry, metrics), each leaf with a leading axis M; batch rows: E·unroll_length.
        """
        env_state, stats = carry
        runs, envs = env_state.obs.shape[:2]

        def fold(tree):
            return jax.tree.map(lambda leaf: leaf.reshape((runs * envs, *leaf.shape[2:])), tree)

        def unfold(tree):
            return jax.tree.map(lambda leaf: leaf.reshape((runs, envs, *leaf.shape[1:])), tree)

        def sample(params, stats, observations, key):
            mean, log_std = self.act(params, stats, observations)
            actions = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
            return actions, gaussian_log_prob(actions, mean, log_std)

        def step(env_state, step_keys):
            actions, log_probs = jax.vmap(sample)(params, stats, env_state.obs, step_keys)
            executed = fold(executed_actions(actions, self.config.squash))
            flat_state = fold(env_state)
            flat_next = self.env.step(flat_state, executed)
            components = unfold(self.reward_components(flat_state, executed, flat_next))
            next_state = unfold(flat_next)
            truncation = next_state.info["truncation"]
            transition = {
                "obs": env_state.obs,
                "actions": actions,
                "log_probs": log_probs,
                "rewards": jnp.einsum("rec,rc->re", components, reward_weights),
                "components": components,
                "terminations": next_state.done * (1.0 - truncation),
                "truncations": truncation,
            }
            return next_state, transition

        step_keys = jax.vmap(lambda key: jax.random.split(key, self.config.unroll_length), out_axes=1)(keys)
        env_state, rollout = jax.lax.scan(step, env_state, step_keys)
        batch, stats, metrics = jax.vmap(self._advantages, in_axes=(0, 0, 1, 0))(
            params, stats, rollout, env_state.obs
        )
        return batch, (env_state, stats), metrics

    def _advantages(
        self,
        params: PyTree,
        stats: normalizer.RunningStats,
        rollout: dict[str, jax.Array],
        last_observations: jax.Array,
    ) -> tuple[dict[str, jax.Array], normalizer.RunningStats, dict[str, jax.Array]]:
        """One run's training batch from its time-major (T, E, ...) rollout: statistics, GAE, flattening."""
        config = self.config
        if config.normalize_observations and not config.freeze_normalizer:
            stats = normalizer.update_stats(stats, rollout["obs"])
        values = self._values(params, stats, rollout["obs"])
        advantages, targets = gae(
            rollout["rewards"] * config.reward_scaling,
            values,
            self._values(params, stats, last_observations),
            rollout["terminations"],
            rollout["truncations"],
            config.discount,
            config.gae_lambda,
        )
        batch = {
            "obs": normalizer.normalize(stats, rollout["obs"]),
            "actions": rollout["actions"],
            "log_probs": rollout["log_probs"],
            "advantages": advantages,
            "targets": targets,
        }
        flat = jax.tree.map(lambda leaf: leaf.reshape((-1, *leaf.shape[2:])), batch)
        metrics = {
            "reward": rollout["rewards"].mean(),
            "components": rollout["components"].mean(axis=(0, 1)),
        }
        return flat, stats, metrics

    def loss(self, params, minibatch, key):
        del key  # PPO's loss is deterministic given the minibatch
        config = self.config
        mean, log_std = self.policy.apply({"params": params["policy"]}, minibatch["obs"])
        log_probs = gaussian_log_prob(minibatch["actions"], mean, log_std)
        ratio = jnp.exp(log_probs - minibatch["log_probs"])
        advantages = minibatch["advantages"]
        if config.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        clipped = jnp.clip(ratio, 1.0 - config.clip_epsilon, 1.0 + config.clip_epsilon)
        policy_loss = -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages))
        values = self.value.apply({"params": params["value"]}, minibatch["obs"])[..., 0]
        value_loss = 0.5 * jnp.mean(jnp.square(values - minibatch["targets"]))
        entropy = jnp.mean(jnp.sum(log_std + 0.5 * LOG_2PI_E, axis=-1))
        out_of_bounds = jnp.mean(jnp.sum(jnp.square(jax.nn.relu(jnp.abs(mean) - 1.0)), axis=-1))
        total = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
        total = total + config.bound_coef * out_of_bounds
        return total, {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "out_of_bounds": out_of_bounds,
        }


def evaluate(
    learner: PPOLearner,
    params: PyTree,
    stats: normalizer.RunningStats,
    eval_env: Any,
    num_episodes: int,
    episode_length: int,
    key: jax.Array,
    deterministic: bool = True,
) -> jax.Array:
    """Per-episode sums of the reward components of the policy, actions squashed (``config.squash``).

    Args:
      eval_env: the env batched over episodes without auto-reset (an episode stops
        counting once ``done``).
      deterministic: act with the policy's mean (brax's ``deterministic_eval``); False samples
        the Gaussian the PPO objective optimizes, with keys split from ``key``.

    Returns:
      (num_episodes, C) returns of each reward component.
    """
    reset_key, action_key = jax.random.split(key)
    state = eval_env.reset(jax.random.split(reset_key, num_episodes))

    def step(carry, step_key):
        state, alive, totals = carry
        mean, log_std = learner.act(params, stats, state.obs)
        if not deterministic:
            mean = mean + jnp.exp(log_std) * jax.random.normal(step_key, mean.shape)
        actions = executed_actions(mean, learner.config.squash)
        next_state = eval_env.step(state, actions)
        totals = totals + alive[:, None] * learner.reward_components(state, actions, next_state)
        return (next_state, alive * (1.0 - next_state.done), totals), None

    # A zero-action call only to learn the number of components C for the accumulator.
    components = learner.reward_components(state, jnp.zeros((num_episodes, learner.action_size)), state)
    init = (state, jnp.ones(num_episodes), jnp.zeros_like(components))
    (_, _, totals), _ = jax.lax.scan(step, init, jax.random.split(action_key, episode_length))
    return totals
