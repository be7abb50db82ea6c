"""N = 2 PPO runs trained together on the machine's CPU cores vs one after the other.

    python benchmarks/ppo_cores.py [--env halfcheetah|ant] [--updates 19] [--rounds 2]
                                   [--out benchmarks/results/ppo_cores.json]

Together: one process sees each CPU core as a JAX device
(``--xla_force_host_platform_device_count``, set before jax is imported) and trains the pair
(reward weights 1 and 0.5, seeds 1 and 2, the hyper-parameters of ``ppo_throughput.py`` with the
tasks' clipped Gaussian, the env's own reward) as one program with its runs split over the mesh's
``expert`` axis, one run per core (``fit(..., vmapped=True, mesh=mesh)``, what ``--shard`` does
in a task). One after the other: a plain process (one CPU device, XLA's own threads on every
core) trains the same two runs in turn. Each side runs in a fresh process (forced devices slow a
single run down, so the sides cannot share one); the sides alternate for ``--rounds`` rounds so
that a change of the machine's load hits both alike, and each side's seconds are summed over its
updates after the first, which compiles.

A single run does not split its envs over the cores (the ``data`` axis splits the loss batch,
not the physics), so the pair gains what the other cores give; ``ppo_throughput.py`` measures the
pair on one device.
"""

from __future__ import annotations

import os
import sys

TOGETHER, ONE_AFTER_ANOTHER = "together", "one_after_another"
CORES = os.cpu_count() or 1
if f"--side={TOGETHER}" in sys.argv:
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={CORES}"
    )

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from brax import envs  # noqa: E402
from common import machine_info, merge_variant_entry  # noqa: E402
from ppo_throughput import HYPER, initial_state, make_learner  # noqa: E402

from rs_jax import distributed  # noqa: E402
from rs_jax.train import trainer  # noqa: E402

DESCRIPTION = (
    "N = 2 runs of rs_jax's PPO on the env's own reward: trained together with the runs split over "
    "one forced CPU device per core (mesh expert axis), vs one after the other in a plain process; "
    "each side in fresh processes, alternating; wall and process CPU seconds of the updates after "
    "the first."
)
RUNS = 2
SQUASH = "clip"  # the tasks' policy form
WEIGHTS = ((1.0,), (0.5,))


def time_side(side: str, env_name: str, updates: int) -> dict[str, float]:
    """Wall and process CPU seconds of updates 2..``updates`` of the pair on ``side``."""
    env = envs.get_environment(env_name, backend="positional")
    learner = make_learner(env, SQUASH)
    optimizer = optax.adam(HYPER["learning_rate"])
    update = trainer.make_update(learner, optimizer, HYPER["num_epochs"], HYPER["num_minibatches"])
    weights = jnp.asarray(WEIGHTS)
    states = [initial_state(learner, optimizer, seed) for seed in range(1, RUNS + 1)]
    if side == TOGETHER:
        if jax.device_count() < RUNS:
            raise SystemExit(
                f"error: the pair needs {RUNS} CPU cores, this machine has {jax.device_count()}."
            )
        mesh = distributed.make_mesh(expert=RUNS, data=1)
        pair = trainer.stack_states(states)

        def fit(target: int):
            return trainer.fit(update, pair, weights, target, vmapped=True, mesh=mesh)[0]

        pair = jax.block_until_ready(fit(1))
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fit(updates))
        return {"wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
    wall_total = cpu_total = 0.0
    for state, run_weights in zip(states, weights):
        state = jax.block_until_ready(trainer.fit(update, state, run_weights, 1)[0])
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(trainer.fit(update, state, run_weights, updates)[0])
        wall_total += time.perf_counter() - wall
        cpu_total += time.process_time() - cpu
    return {"wall_seconds": wall_total, "cpu_seconds": cpu_total}


def run_side(side: str, env_name: str, updates: int) -> dict[str, float]:
    """``time_side`` in a fresh process (the together side needs its devices before jax starts)."""
    command = [sys.executable, __file__, f"--side={side}", "--env", env_name, "--updates", str(updates)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="halfcheetah", choices=("halfcheetah", "ant"))
    parser.add_argument("--updates", type=int, default=19, help="updates of each run, the first one untimed")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides")
    parser.add_argument("--side", choices=(TOGETHER, ONE_AFTER_ANOTHER), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/ppo_cores.json")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(time_side(args.side, args.env, args.updates)))
        return
    seconds = {side: {"wall_seconds": 0.0, "cpu_seconds": 0.0} for side in (TOGETHER, ONE_AFTER_ANOTHER)}
    for _ in range(args.rounds):
        for side, total in seconds.items():
            for name, value in run_side(side, args.env, args.updates).items():
                total[name] += value
    timed = args.rounds * (args.updates - 1)
    steps = RUNS * timed * HYPER["num_envs"] * HYPER["unroll_length"]
    together, sequential = seconds[TOGETHER], seconds[ONE_AFTER_ANOTHER]
    pair = {
        "rounds": args.rounds,
        "updates_per_run": args.updates,
        "timed_updates_per_run": timed,
        "together_wall_seconds": together["wall_seconds"],
        "one_after_another_wall_seconds": sequential["wall_seconds"],
        "wall_ratio_together_over_one_after_another": together["wall_seconds"] / sequential["wall_seconds"],
        "together_cpu_seconds": together["cpu_seconds"],
        "one_after_another_cpu_seconds": sequential["cpu_seconds"],
        "cpu_ratio_together_over_one_after_another": together["cpu_seconds"] / sequential["cpu_seconds"],
        "together_env_steps_per_second": steps / together["wall_seconds"],
        "one_after_another_env_steps_per_second": steps / sequential["wall_seconds"],
    }
    print(pair)
    entry = {
        "env": args.env,
        "backend": "positional",
        "squash": SQUASH,
        "devices": CORES,
        "mesh": {distributed.EXPERT: RUNS, distributed.DATA: 1},
        "n2_together_vs_one_after_another": pair,
        "machine": machine_info(),
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    merge_variant_entry(args.out, DESCRIPTION, entry, key=("env",))


if __name__ == "__main__":
    main()
