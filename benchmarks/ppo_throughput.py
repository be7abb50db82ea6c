"""Our PPO trainer vs brax's ``ppo.train``, side by side on one env and budget.

    python benchmarks/ppo_throughput.py [--env halfcheetah|ant] [--steps 200000] [--seeds 3]
                                        [--squash tanh|clip] [--pair-steps 50000]
                                        [--out benchmarks/results/ppo.json]

Same env (brax positional backend, episodes of 1000 steps), same reward (the env's
own: our learner trains on ``locomotion.env_reward``), same hyperparameters (envs,
unroll length, minibatches, epochs, learning rate, entropy cost, discount, GAE λ,
clip ε, reward scaling, observation normalization, 2×64 policy and value MLPs,
tanh-squashed Gaussian actions),
same number of env steps. Each
update collects num_envs × unroll_length steps in both (brax: batch_size =
num_envs / num_minibatches). Throughput excludes compilation: brax's own
``training/sps`` of its last training epoch, and for us the steps of all but
the first update over their wall time, each averaged over the seeds. Learning: the
deterministic policy's mean episode return on the env's reward over 128 episodes,
for each of ``--seeds`` training seeds per trainer; the return ratio is of the
means over seeds.

Then: N=2 runs (reward weights 1 and 0.5) trained together in one program
(``fit(..., vmapped=True)``, which steps both runs' envs as one batch) vs the
same two runs one after the other. After one update of each has compiled its
program, the updates alternate — one update of the pair, then one of each
single run — so a change of the machine's load hits both alike; wall and
process CPU seconds are summed per side. Each (env, squash) result is one entry of
the JSON's ``variants``.

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
import os
import time
import types
from collections.abc import Callable
from typing import Any

import brax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from brax import envs
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper, wrap
from common import machine_info, merge_variant_entry

from rs_jax.rewards import locomotion
from rs_jax.train import ppo, trainer

DESCRIPTION = (
    "rs_jax's PPO trainer vs brax's ppo.train: both train on the env's own reward with the same "
    "hyper-parameters and env steps. brax's policy is a tanh-squashed Gaussian with state-dependent std; "
    "ours a tanh-squashed Gaussian with a state-independent log-std (squash='tanh'). Each trainer runs "
    "the same training seeds; returns are given per seed and as mean and standard error. "
    "Absolute times depend on the cores the run had and their load (each entry's machine); "
    "the pair's alternating updates keep its ratio fair, and its CPU seconds (process time, all threads) "
    "are the less load-dependent measure."
)

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
    "squash": "tanh",  # brax's policy squashes its Gaussian by tanh; our tasks' default clips
}


# The HYPER keys that are ``ppo.PPOConfig`` fields, with the field's name.
PPO_FIELDS = {
    "num_envs": "num_envs",
    "unroll_length": "unroll_length",
    "discount": "discount",
    "gae_lambda": "gae_lambda",
    "clip_epsilon": "clip_epsilon",
    "entropy_cost": "entropy_coef",
    "reward_scaling": "reward_scaling",
    "hidden": "policy_layers",
    "value_hidden": "value_layers",
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


def run_brax(env, steps: int, seed: int, hyper: dict = HYPER) -> dict:
    """brax's ``ppo.train`` for ``steps`` env steps with ``hyper`` (the keys of ``HYPER``) from ``seed``."""
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
        seed=seed,
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


def make_learner(env, squash: str = HYPER["squash"]) -> ppo.PPOLearner:
    """Our PPO with ``HYPER`` and ``squash`` ("tanh": brax's policy form; "clip": the tasks') on the
    env's own reward."""
    config = ppo.PPOConfig(**{field: HYPER[key] for key, field in PPO_FIELDS.items()}, squash=squash)
    train_env = wrap(env, episode_length=HYPER["episode_length"])
    return ppo.PPOLearner(train_env, locomotion.env_reward, env.observation_size, env.action_size, config)


# What ``run_ours`` returns besides its measurements: the program, for the N=2 pair.
PROGRAM_PARTS = ("learner", "optimizer", "update", "updates")


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


def run_ours(env, steps: int, seed: int, squash: str) -> dict:
    learner = make_learner(env, squash)
    optimizer = optax.adam(HYPER["learning_rate"])
    update = trainer.make_update(learner, optimizer, HYPER["num_epochs"], HYPER["num_minibatches"])
    steps_per_update = HYPER["num_envs"] * HYPER["unroll_length"]
    updates = steps // steps_per_update
    weights = jnp.ones(1)
    state, first, rest = timed_fit(update, initial_state(learner, optimizer, seed), weights, updates)
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
    final_return = float(np.mean(np.asarray(returns)[:, 0]))
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


def together_vs_one_after_another(learner, optimizer, update, weights: jax.Array, updates: int) -> dict:
    """Wall and CPU seconds of ``updates - 1`` updates of M runs, one per row of ``weights`` (M, C)
    (seeds 1..M), trained together vs one after another.

    Both sides' first update (which compiles) is excluded; the rest alternate update by update.
    """
    singles = [initial_state(learner, optimizer, seed) for seed in range(1, len(weights) + 1)]
    pair = trainer.stack_states(singles)
    seconds = {"together": [0.0, 0.0], "one_after_another": [0.0, 0.0]}

    def timed(side: str, step: Callable[..., Any], *args: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(step(*args))
        seconds[side][0] += time.perf_counter() - wall
        seconds[side][1] += time.process_time() - cpu
        return out

    for target in range(1, updates + 1):
        if target == 2:  # both programs compiled: start counting
            seconds = {side: [0.0, 0.0] for side in seconds}
        pair = timed(
            "together", lambda s, n: trainer.fit(update, s, weights, n, vmapped=True)[0], pair, target
        )
        singles = timed(
            "one_after_another",
            lambda states, n: [trainer.fit(update, s, w, n)[0] for s, w in zip(states, weights)],
            singles,
            target,
        )
    (together_wall, together_cpu), (sequential_wall, sequential_cpu) = seconds.values()
    return {
        "updates_per_run": updates,
        "timed_updates_per_run": updates - 1,
        "together_wall_seconds": together_wall,
        "one_after_another_wall_seconds": sequential_wall,
        "wall_ratio_together_over_one_after_another": together_wall / sequential_wall,
        "together_cpu_seconds": together_cpu,
        "one_after_another_cpu_seconds": sequential_cpu,
        "cpu_ratio_together_over_one_after_another": together_cpu / sequential_cpu,
    }


def summarize(runs: list[dict]) -> dict:
    """One trainer's runs over seeds: env steps, mean steps per second, the returns per seed and
    their mean and standard error."""
    returns = np.array([run["final_eval_return"] for run in runs])
    return {
        "env_steps": runs[0]["env_steps"],
        "steps_per_second": float(np.mean([run["steps_per_second"] for run in runs])),
        "final_eval_return": {
            "per_seed": returns.tolist(),
            "mean": float(returns.mean()),
            "stderr": float(returns.std(ddof=1) / np.sqrt(len(returns))) if len(returns) > 1 else None,
        },
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="halfcheetah", choices=("halfcheetah", "ant"))
    parser.add_argument("--steps", type=int, default=200_000, help="env steps of each PPO run")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of each trainer")
    parser.add_argument(
        "--squash", default=HYPER["squash"], choices=ppo.SQUASHES, help="our policy's squash (brax's: tanh)"
    )
    parser.add_argument(
        "--pair-steps", type=int, default=50_000, help="env steps of each run of the N=2 pair"
    )
    parser.add_argument("--out", default="benchmarks/results/ppo.json")
    args = parser.parse_args()
    machine = machine_info()
    env = envs.get_environment(args.env, backend="positional")
    brax_runs, our_runs = [], []
    for seed in range(args.seeds):
        brax_runs.append(run_brax(env, args.steps, seed))
        print(f"brax seed {seed}", brax_runs[-1])
        ours = run_ours(env, args.steps, seed, args.squash)
        our_runs.append({k: v for k, v in ours.items() if k not in PROGRAM_PARTS})
        print(f"ours seed {seed}", our_runs[-1])
    pair = together_vs_one_after_another(
        ours["learner"],
        ours["optimizer"],
        ours["update"],
        jnp.asarray([[1.0], [0.5]]),
        args.pair_steps // (HYPER["num_envs"] * HYPER["unroll_length"]),
    )
    print("pair ", pair)
    brax_result, our_result = summarize(brax_runs), summarize(our_runs)
    entry = {
        "env": args.env,
        "backend": "positional",
        "squash": args.squash,
        "hyperparameters": HYPER | {"squash": args.squash},
        "seeds": args.seeds,
        "brax_ppo": brax_result,
        "rs_jax_ppo": our_result,
        "throughput_ratio_ours_over_brax": our_result["steps_per_second"] / brax_result["steps_per_second"],
        "final_return_ratio_ours_over_brax": our_result["final_eval_return"]["mean"]
        / brax_result["final_eval_return"]["mean"],
        "n2_together_vs_one_after_another": pair,
        "machine": machine,
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    merge_variant_entry(args.out, DESCRIPTION, entry, key=("env", "squash"))


if __name__ == "__main__":
    main()
