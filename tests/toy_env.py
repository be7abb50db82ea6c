"""A brax-API environment whose optimum is known: obs = [x, last action], vx = action.

With reward vx - c·a² the best constant action is min(1, 1/(2c)).
"""

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State


class Cart(Env):
    def reset(self, rng: jax.Array) -> State:
        obs = jnp.concatenate([jax.random.uniform(rng, (1,), minval=-1.0, maxval=1.0), jnp.zeros(1)])
        zero = jnp.zeros(())
        return State(pipeline_state=None, obs=obs, reward=zero, done=zero, metrics={"x_velocity": zero})

    def step(self, state: State, action: jax.Array) -> State:
        velocity = action[0]
        obs = jnp.stack([state.obs[0] + 0.05 * velocity, velocity])
        reward = velocity - 0.1 * jnp.sum(jnp.square(action))
        return state.replace(obs=obs, reward=reward, metrics={"x_velocity": velocity})

    @property
    def observation_size(self) -> int:
        return 2

    @property
    def action_size(self) -> int:
        return 1

    @property
    def backend(self) -> str:
        return "toy"
