"""One process of a multi-process run on CPU, for tests/test_distributed.py.

    RS_JAX_NUM_PROCESSES=2 RS_JAX_PROCESS_ID=0 JAX_COORDINATOR_ADDRESS=localhost:PORT \\
        python tests/multiprocess_run.py OUT.npz

Every process runs the same program: ``distributed.initialize()`` joins the run
(JAX's own multi-controller runtime), a mesh spans every process's devices, and
the process computes a sharded λ-sweep and a 2-expert training sharded over
``expert`` × ``data``. Process 0 writes the results (gathered from all processes)
to OUT.npz.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rs_jax import distributed, soup
from rs_jax.train import trainer


def experts() -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "kernel": rng.normal(size=(3, 4)).astype(np.float32),
            "bias": rng.normal(size=(4,)).astype(np.float32),
        }
        for _ in range(3)
    ]


def eval_rewards(params):
    inputs = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    hidden = jnp.tanh(inputs @ params["kernel"] + params["bias"][None, :])
    return jnp.stack([hidden.mean(), -jnp.square(hidden).mean()])


class Regression:
    """Fits w (3,) to reward_weights[0] + noise; a batch of 8 rows."""

    def collect(self, params, carry, reward_weights, key):
        targets = reward_weights[0] + jax.random.normal(key, (8, 3))
        return {"targets": targets}, carry, {"reward": -jnp.mean(jnp.square(params["w"][None, :] - targets))}

    def loss(self, params, minibatch, key):
        noise = 0.01 * jax.random.normal(key, minibatch["targets"].shape)
        return jnp.mean(jnp.square(params["w"][None, :] - minibatch["targets"] + noise)), {}


REWARD_WEIGHTS = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
OPTIMIZER = optax.adam(0.1)


@functools.lru_cache(maxsize=4)
def make_update(mesh=None):
    """One update per mesh, so that repeated runs in one process share a compilation."""
    return trainer.make_update(Regression(), OPTIMIZER, num_epochs=1, num_minibatches=2, mesh=mesh)


def two_expert_states() -> trainer.TrainState:
    """Two fresh runs stacked (leading axis 2)."""
    return trainer.stack_states(
        [trainer.init_state({"w": jnp.zeros(3)}, OPTIMIZER, None, seed) for seed in (0, 1)]
    )


def train_two_experts(mesh=None, updates: int = 3) -> trainer.TrainState:
    """Two experts (different reward weights) trained vmapped, optionally on ``mesh``."""
    state, _ = trainer.fit(
        make_update(mesh), two_expert_states(), jnp.asarray(REWARD_WEIGHTS), updates, vmapped=True, mesh=mesh
    )
    return state


def main(out: str) -> None:
    assert distributed.initialize(), "this script is meant to run as one of several processes"
    mesh = distributed.make_mesh(expert=2)
    rewards = soup.sweep(eval_rewards, experts(), soup.simplex_grid(3, 5), strategy="map", mesh=mesh)
    state = train_two_experts(mesh)
    params = distributed.to_host(state.params)
    if jax.process_index() == 0:
        np.savez(
            out,
            rewards=np.asarray(rewards),
            w=params["w"],
            process_count=jax.process_count(),
            device_count=jax.device_count(),
        )
    print(f"process {jax.process_index()} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
