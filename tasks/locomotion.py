"""Locomotion: a risky and a cautious runner on brax, their soups, and MORL beside them.

    python -m tasks.locomotion [--preset cpu|paper|smoke] [--out runs/locomotion]
                               [--set key=value ...] [--resume]

Paper Appendix G: pre-train PPO on the default dense reward (vx - 0.1·Σa²), keep
the observation normalizer frozen and discard the value function, fine-tune a
risky expert on R₁ = vx and a cautious one on R₂ = vx - Σa², and MORL runs on
(1-μ)R₁ + μR₂; all fine-tunings are one vmapped program. See configs/locomotion.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from brax import envs
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper, wrap

from configs import locomotion as locomotion_config
from rs_jax import cli, experiment
from rs_jax import config as config_lib
from rs_jax.rewards import locomotion as rewards
from rs_jax.train import ppo


def build(config: locomotion_config.LocomotionConfig) -> tuple[experiment.RLExperiment, experiment.Budget]:
    """The task's declaration: env, learners, rewards, budgets."""
    env = envs.get_environment(config.env, backend=config.backend)
    train_env = wrap(env, episode_length=config.episode_length)
    eval_env = EpisodeWrapper(VmapWrapper(env), episode_length=config.eval_episode_length, action_repeat=1)

    def learner(freeze_normalizer: bool) -> ppo.PPOLearner:
        ppo_config = dataclasses.replace(config.ppo, freeze_normalizer=freeze_normalizer)
        return ppo.PPOLearner(
            train_env, rewards.velocity_and_control, env.observation_size, env.action_size, ppo_config
        )

    pretrain_learner, finetune_learner = learner(False), learner(True)

    def finetune_start(params, carry, key):
        params_key, env_key = jax.random.split(key)
        # The paper discards the pre-trained value function.
        fresh_value = finetune_learner.init_params(params_key)["value"]
        _, stats = carry
        env_state, _ = finetune_learner.init_carry(env_key)
        return {"policy": params["policy"], "value": fresh_value}, (env_state, stats)

    def evaluate(policy_params, carry, key):
        _, stats = carry
        returns = ppo.evaluate(
            finetune_learner,
            {"policy": policy_params},
            stats,
            eval_env,
            config.eval_episodes,
            config.eval_episode_length,
            key,
        )
        return rewards.risky_cautious(returns)

    spec = experiment.RLExperiment(
        reward_names=("risky R1 = vx", "cautious R2 = vx - |a|^2"),
        expert_names=("risky", "cautious"),
        pretrain_learner=pretrain_learner,
        finetune_learner=finetune_learner,
        init_params=pretrain_learner.init_params,
        init_carry=lambda learner_, key: learner_.init_carry(key),
        finetune_start=finetune_start,
        soup_part=lambda params: params["policy"],
        evaluate=evaluate,
        pretrain_weights=rewards.PRETRAIN_WEIGHTS,
        run_weights=[rewards.morl_weights(mu) for mu in config.morl_mus],
        run_mus=[(1.0 - mu, mu) for mu in config.morl_mus],
    )
    steps_per_update = config.ppo.num_envs * config.ppo.unroll_length

    def optimizer(learning_rate: float) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate))

    budget = experiment.Budget(
        pretrain_updates=max(1, config.pretrain_steps // steps_per_update),
        finetune_updates=max(1, config.finetune_steps // steps_per_update),
        pretrain_optimizer=optimizer(config.pretrain_learning_rate),
        finetune_optimizer=optimizer(config.finetune_learning_rate),
        num_epochs=config.num_epochs,
        num_minibatches=config.num_minibatches,
        checkpoint_every=config.checkpoint_every,
        rs_points=config.rs_points,
        seed=config.seed,
    )
    return spec, budget


def run(
    run_dir: str, config: locomotion_config.LocomotionConfig, *, resume: bool = False, shard: bool = False
) -> dict:
    """The whole experiment; writes the run directory and returns the summary numbers."""
    spec, budget = build(config)
    return experiment.run_rl_experiment(
        run_dir, spec, budget, config=config_lib.to_dict(config), resume=resume, shard=shard
    )


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(
        argv,
        prog="python -m tasks.locomotion",
        description=__doc__,
        configs=locomotion_config,
        run=run,
        default_out="runs/locomotion",
    )


if __name__ == "__main__":
    jnp.zeros(())  # initialize the backend before brax prints its warnings
    main()
