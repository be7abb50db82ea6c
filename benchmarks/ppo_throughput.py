"""Our PPO trainer vs brax's ``ppo.train``, side by side on one env and budget.

    python benchmarks/ppo_throughput.py [--steps 400000] [--out benchmarks/results/ppo.json]

Same env (halfcheetah, positional backend, episodes of 1000 steps), same
hyperparameters (envs, unroll length, minibatches, epochs, learning rate,
entropy cost, discount, GAE λ, clip ε, reward scaling, observation
normalization, 2×64 policy and value MLPs), same number of env steps. Each
update collects num_envs × unroll_length steps in both (brax: batch_size =
num_envs / num_minibatches). Throughput excludes compilation: brax's own
``training/sps`` of its last training epoch, and for us the steps of all but
the first update over their wall time. Learning: the deterministic policy's
mean episode return on brax's default reward (vx - 0.1·Σa²) over 128 episodes.

Then: N=2 experts (μ = 0 and 1) trained vmapped in one program vs the same two
runs one after the other (wall time of the updates after compilation, and in
total).

Environment: brax 0.14.2's ``ppo.train`` calls ``jax.device_put_replicated``, which jax 0.10
removed (google/brax#671), so this comparison runs in an environment of its own with jax<0.10
(``import_brax_ppo`` refuses newer jax with that message)::

    python -m venv .venv-brax
    .venv-brax/bin/pip install -e . "jax==0.9.2" "jaxlib==0.9.2" "flax==0.12.6"
    .venv-brax/bin/python benchmarks/ppo_throughput.py
"""

from __future__ import annotations

import argparse
import functools
import time
import types

import brax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from brax import envs
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper, wrap
from common import machine_info, write_result

from rs_jax.rewards import locomotion
from rs_jax.train import ppo, trainer

HYPER = {
    "num_envs": 256,
    "unroll_length": 10,
    "num_minibatches": 8,
    "num_epochs": 4,
    "learning_rate": 3e-4,
    "entropy_cost": 1e-3,
    "discount": 0.97,
    "gae_lambda": 0.95,
    "clip_epsilon": 0.3,
    "reward_scaling": 1.0,
    "hidden": (64, 64),
    "value_hidden": (64, 64),
    "episode_length": 1000,
    "eval_episodes": 128,
}


def import_brax_ppo() -> tuple[types.ModuleType, types.ModuleType]:
    """brax's PPO ``(networks, train)`` modules.

    Raises:
      ImportError: on a jax without ``device_put_replicated`` (removed in jax 0.10), which brax
        0.14.2's ``ppo.train`` calls (google/brax#671); the message names the environment to use.
    """
    if not hasattr(jax, "device_put_replicated"):
        raise ImportError(
            f"brax {brax.__version__}'s ppo.train calls jax.device_put_replicated, which jax "
            f"{jax.__version__} no longer has (google/brax#671): run the brax side in an environment "
            'with jax<0.10 (pip install -e . "jax==0.9.2" "jaxlib==0.9.2" "flax==0.12.6"; see '
            "benchmarks/ppo_throughput.py)."
        )
    from brax.training.agents.ppo import networks, train

    return networks, train


def run_brax(env, steps: int, hyper: dict = HYPER) -> dict:
    """brax's ``ppo.train`` for ``steps`` env steps with ``hyper`` (the keys of ``HYPER``)."""
    brax_networks, brax_ppo = import_brax_ppo()
    reports = []
    network_factory = functools.partial(
        brax_networks.make_ppo_networks,
        policy_hidden_layer_sizes=hyper["hidden"],
        value_hidden_layer_sizes=hyper["value_hidden"],
    )
    start = time.perf_counter()
    brax_ppo.train(
        environment=env,
        num_timesteps=steps,
        episode_length=hyper["episode_length"],
        num_envs=hyper["num_envs"],
        batch_size=hyper["num_envs"] // hyper["num_minibatches"],
        num_minibatches=hyper["num_minibatches"],
        unroll_length=hyper["unroll_length"],
        num_updates_per_batch=hyper["num_epochs"],
        learning_rate=hyper["learning_rate"],
        entropy_cost=hyper["entropy_cost"],
        discounting=hyper["discount"],
        gae_lambda=hyper["gae_lambda"],
        clipping_epsilon=hyper["clip_epsilon"],
        reward_scaling=hyper["reward_scaling"],
        normalize_observations=True,
        network_factory=network_factory,
        num_evals=3,
        num_eval_envs=hyper["eval_episodes"],
        deterministic_eval=True,
        seed=0,
        progress_fn=lambda step, metrics: reports.append((step, dict(metrics))),
    )
    total = time.perf_counter() - start
    last = reports[-1][1]
    return {
        "env_steps": int(reports[-1][0]),
        "steps_per_second": float(last["training/sps"]),
        "final_eval_return": float(last["eval/episode_reward"]),
        "total_seconds_incl_compile_and_evals": total,
    }


def make_learner(env) -> ppo.PPOLearner:
    config = ppo.PPOConfig(
        num_envs=HYPER["num_envs"],
        unroll_length=HYPER["unroll_length"],
        discount=HYPER["discount"],
        gae_lambda=HYPER["gae_lambda"],
        clip_epsilon=HYPER["clip_epsilon"],
        entropy_coef=HYPER["entropy_cost"],
        reward_scaling=HYPER["reward_scaling"],
        policy_layers=HYPER["hidden"],
        value_layers=HYPER["value_hidden"],
    )
    train_env = wrap(env, episode_length=HYPER["episode_length"])
    return ppo.PPOLearner(
        train_env, locomotion.velocity_and_control, env.observation_size, env.action_size, config
    )


def initial_state(learner, optimizer, seed):
    key = jax.random.PRNGKey(seed)
    return trainer.init_state(learner.init_params(key), optimizer, learner.init_carry(key), seed)


def timed_fit(update, state, weights, updates, vmapped=False):
    """(state, seconds of the first update incl. compile, seconds of the rest)."""
    start = time.perf_counter()
    state, _ = trainer.fit(update, state, weights, 1, vmapped=vmapped)
    jax.block_until_ready(state.params)
    first = time.perf_counter() - start
    start = time.perf_counter()
    state, _ = trainer.fit(update, state, weights, updates, vmapped=vmapped)
    jax.block_until_ready(state.params)
    return state, first, time.perf_counter() - start


def run_ours(env, steps: int) -> dict:
    learner = make_learner(env)
    optimizer = optax.adam(HYPER["learning_rate"])
    update = trainer.make_update(learner, optimizer, HYPER["num_epochs"], HYPER["num_minibatches"])
    steps_per_update = HYPER["num_envs"] * HYPER["unroll_length"]
    updates = steps // steps_per_update
    weights = jnp.asarray(locomotion.PRETRAIN_WEIGHTS)
    state, first, rest = timed_fit(update, initial_state(learner, optimizer, 0), weights, updates)
    eval_env = EpisodeWrapper(VmapWrapper(env), episode_length=HYPER["episode_length"], action_repeat=1)
    returns = ppo.evaluate(
        learner,
        state.params,
        state.carry[1],
        eval_env,
        HYPER["eval_episodes"],
        HYPER["episode_length"],
        jax.random.PRNGKey(7),
    )
    final_return = float(np.mean(np.asarray(returns) @ np.asarray(locomotion.PRETRAIN_WEIGHTS)))
    return {
        "env_steps": updates * steps_per_update,
        "steps_per_second": (updates - 1) * steps_per_update / rest,
        "final_eval_return": final_return,
        "total_seconds_incl_compile": first + rest,
        "learner": learner,
        "optimizer": optimizer,
        "update": update,
        "updates": updates,
    }


def vmapped_vs_sequential(learner, optimizer, update, weights: jax.Array, updates: int) -> dict:
    """M runs, one per row of ``weights`` (M, C) (seeds 1..M), ``updates`` updates each: trained
    vmapped as one program vs one after the other with ``update``'s own program."""
    states = [initial_state(learner, optimizer, seed) for seed in range(1, len(weights) + 1)]
    stacked = trainer.stack_states(states)
    _, v_first, v_rest = timed_fit(update, stacked, weights, updates, vmapped=True)
    sequential_first = sequential_rest = 0.0
    for state, weight in zip(states, weights):
        _, first, rest = timed_fit(update, state, weight, updates)
        sequential_first += first
        sequential_rest += rest
    return {
        "updates_per_run": updates,
        "vmapped_seconds_after_compile": v_rest,
        "sequential_seconds_after_compile": sequential_rest,
        "wall_ratio_vmapped_over_sequential_after_compile": v_rest / sequential_rest,
        "vmapped_seconds_total": v_first + v_rest,
        "sequential_seconds_total": sequential_first + sequential_rest,
        "wall_ratio_vmapped_over_sequential_total": (v_first + v_rest) / (sequential_first + sequential_rest),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=400_000, help="env steps of each PPO run")
    parser.add_argument(
        "--pair-steps", type=int, default=100_000, help="env steps of each run of the N=2 pair"
    )
    parser.add_argument("--out", default="benchmarks/results/ppo.json")
    args = parser.parse_args()
    env = envs.get_environment("halfcheetah", backend="positional")
    brax_result = run_brax(env, args.steps)
    print("brax ", brax_result)
    ours = run_ours(env, args.steps)
    print("ours ", {k: v for k, v in ours.items() if not callable(v) and k not in ("learner", "optimizer")})
    pair = vmapped_vs_sequential(
        ours["learner"],
        ours["optimizer"],
        ours["update"],
        jnp.asarray([locomotion.RISKY_WEIGHTS, locomotion.CAUTIOUS_WEIGHTS]),
        args.pair_steps // (HYPER["num_envs"] * HYPER["unroll_length"]),
    )
    print("pair ", pair)
    ours_public = {k: v for k, v in ours.items() if k not in ("learner", "optimizer", "update", "updates")}
    result = {
        "benchmark": "ppo_throughput",
        "env": "brax halfcheetah (positional backend)",
        "hyperparameters": HYPER,
        "brax_ppo": brax_result,
        "rs_jax_ppo": ours_public,
        "throughput_ratio_ours_over_brax": ours_public["steps_per_second"] / brax_result["steps_per_second"],
        "n2_vmapped_vs_sequential": pair,
        "notes": "brax's policy is a tanh-squashed Gaussian with state-dependent std; ours a Gaussian with a "
        "state-independent log-std, actions clipped to [-1, 1]. Eval returns are single-seed."
        " In n2_vmapped_vs_sequential, the sequential runs reuse the program compiled for the single run,"
        " so only the vmapped *_total includes a compilation; compare the *_after_compile numbers.",
        "machine": machine_info(),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
